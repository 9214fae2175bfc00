"""Few-shot recipes on PneumoniaMNIST, side by side: encoders × heads, chosen on the validation split (issue 14).

Three steps, so that the encoders can be pretrained once (on a GPU where one is lent) and scored anywhere:

    # 1. SimCLR encoders on the unlabelled train images (VARIANTS below; each writes ENC_DIR/<name>.safetensors;
    #    BENCHMARKS.md section 10 ran this step with --device cuda on one H200)
    .venv/bin/python bench/fewshot_recipes.py pretrain --encoders runs/bench/encoders --variants c4w64_e300
    # 2. every encoder × head on the validation split (selection), then on test, paired against the chosen one
    .venv/bin/python bench/fewshot_recipes.py evaluate --encoders runs/bench/encoders --split val \
        --ensembles c4w64_e100+c4w64_e100_s1+c4w64_e100_s2 --out runs/bench/recipes.val.json
    .venv/bin/python bench/fewshot_recipes.py evaluate --encoders runs/bench/encoders --split test \
        --reference c4w64_e300/cl2_probe --out runs/bench/recipes.test.json
    # 3. the tables
    .venv/bin/python bench/fewshot_recipes.py table --val-json runs/bench/recipes.val.json \
        --out runs/bench/recipes.test.json --rows c4w64_e300/cl2_probe c4w64_e300/probe

A recipe is an encoder (or an ensemble of encoders), a feature transform and a head:

- ``probe``: features standardised with the unlabelled pool's mean and sd, logistic regression C = 0.1
  (the first ``medmeta fewshot`` head);
- ``cl2_probe``: SimpleShot's centring + L2 normalisation, then logistic regression C = 10 (its head now);
- ``cl2_ncm``: centring + L2, cosine nearest centroid (SimpleShot);
- an ``@C`` suffix (``--probe-c C ...``): a probe head with another strength, e.g. ``probe+tta@0.03``;
- a ``^B`` suffix (``--power B ...``): the head on features raised to the power B first (Tukey), e.g. ``probe+tta^0.5``;
- a ``+tta`` suffix: every feature (support and query) averaged over its image and 8 augmented views, the
  same 8 seeded transforms for every image (``tta_features``; before section 13's addendum the views were
  drawn per position in a batch, and the test images had other transforms than the train images);
- ``cl2_ft<steps>@<lr>`` (``--finetune ENCODER:STEPS:LR``): the centred + L2 probe, then encoder and head
  fine-tuned on augmented views of each support set (LP-FT; ``medmeta_lib.ssl.finetune``);
- ``<learner><steps>`` (``--meta ENCODER:protonet:300``): pretrain → meta-train, the learner meta-trained on
  MedSynth (5-way 5-shot tasks, all modalities) starting from the encoder, then adapted to each support set;
  ``--meta ENCODER:protonet:300:metric=cosine`` passes learner arguments (``protonet300_cosine``:
  Meta-Baseline's scaled-cosine prototypes); a ``seed=N`` argument sets the meta-training seed (MedSynth, its
  episodes and the learner's start; the name gains ``_mN``), the label draws keep ``--seed``; ``tasks=cactus``
  meta-trains on clusters of the train pool's unlabelled images instead of MedSynth (``cactus_tasks.py``; the name
  gains ``_cactus``), ``tasks=medsynth_fine`` on MedSynth's fine taxonomy (96 classes);
- ``<learner><steps>+tta`` (``--meta-tta``) and ``+skm`` (``--meta-skm``): the ProtoNets on embeddings averaged
  over the fixed views, or with their prototypes refined by one soft k-means step over the unlabelled train images;
  ``ENC/st<M>`` (``--self-train ENC:M``): the command's recipe self-trained with M pseudo-labels per class
  (``bench/recipe_predictors.py``);
- ``--mixes [LABEL=]A+B+C``: the mean class probabilities of recipes, learners or earlier mixes scored in the
  same run (e.g. ProtoNets meta-trained with three seeds from one encoder, then that mean and a probe; a member
  may contain ``+`` itself, e.g. ``ENC/probe+tta``); its seconds are the sum of its members'.

The encoders and their ``pretrain`` step are in ``bench/fewshot_encoders.py``. Every result row also holds each
class's recall (``recall_per_class``: the two halves of balanced accuracy).

Meta-trained learners are saved under ``ENC_DIR/meta/`` with their encoder file's SHA-256, and loaded from there by
later runs while the encoder is unchanged (the test run scores the very learners the validation run selected on,
without meta-training them again).

The selection rule is fixed before any test figure is read: the recipe with the highest validation
balanced accuracy averaged over K = 1, 5, 10, 20 (ties: mean AUC). Balanced accuracy and AUC, not
accuracy, because the validation split's class balance (74 % pneumonia) differs from test's (62.5 %).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fewshot_encoders import LAYERS, VARIANTS, pretrain
from recipe_meta import meta_learners
from recipe_predictors import prototype_predictor, self_trained_recipe, soft_kmeans_predictor
from result_file import ResultFile
from torch import nn

from medmeta_lib.config import PROJECT_ROOT, set_threads, shared_data_file
from medmeta_lib.data.sources import load_collection
from medmeta_lib.evaluation.full_test_split import learner_predictor, score_full_test_split
from medmeta_lib.evaluation.intervals import paired_difference
from medmeta_lib.models.backbones import create_backbone
from medmeta_lib.ssl.features import PooledLayers
from medmeta_lib.ssl.finetune import finetune_predictor
from medmeta_lib.ssl.heads import ensemble_predictor, head_predictor, tta_features
from medmeta_lib.training.checkpoint import load_backbone

HEADS = ("probe", "cl2_probe", "cl2_ncm", "probe+tta", "cl2_probe+tta", "cl2_ncm+tta")


def _features(a: argparse.Namespace, name: str, train: Any, test: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Plain and TTA features of the pool and the scored split for one encoder file (or raw pixels)."""
    if name == "raw_pixels":
        pooled: nn.Module = nn.Flatten()
    else:
        if name == "random_c4w64":  # the floor: the same architecture, untrained, seeded like the SSL start
            torch.manual_seed(a.seed)
            enc = create_backbone("conv4", in_channels=train.channels, hidden=64, norm="group")
        else:
            enc = load_backbone(Path(a.encoders) / f"{name}.safetensors")
        pooled = PooledLayers(enc, LAYERS[enc.spec["name"]])  # type: ignore[index]
    out = {}
    for key, views in (("", 0), ("+tta", a.tta_views)):
        if key and not views:  # no views: the "+tta" features are the plain ones
            out[key] = out[""]
            continue
        ftr = tta_features(pooled, train.images, views=views, preset="chest_xray", seed=a.seed)
        fte = tta_features(pooled, test.images, views=views, preset="chest_xray", seed=a.seed)  # the same transforms
        out[key] = (ftr.numpy(), fte.numpy())
    return out


def _head(head: str, feats: dict[str, tuple[np.ndarray, np.ndarray]], labels: np.ndarray) -> Any:
    head, _, c = head.partition("@")  # probe+tta@0.03: the head with C = 0.03
    head, _, power = head.partition("^")  # probe+tta^0.5: Tukey's power transform of the (post-ReLU) features first
    base, _, tta = head.partition("+")
    ftr, fte = feats["+tta" if tta else ""]
    if power:
        ftr, fte = (np.power(np.maximum(f, 0.0), float(power)) for f in (ftr, fte))
    return head_predictor(base, ftr, fte, labels, C=float(c) if c else None)


def _memo(predict: Any) -> Any:
    """``predict`` with its output kept per support set, so that a mix reuses its members' predictions."""
    memo: dict[bytes, np.ndarray] = {}

    def cached(idx: np.ndarray) -> np.ndarray:
        key = idx.tobytes()
        if key not in memo:
            memo[key] = np.asarray(predict(idx))
        return memo[key]

    return cached


def _mix_members(spec: str, known: dict[str, Any]) -> list[str]:
    """The members of a ``--mixes`` spec ``A+B+C``, each the longest run of ``+``-joined parts that names a method
    defined before it (so ``ENC/probe+tta`` is one member)."""
    parts, out, i = spec.split("+"), [], 0
    while i < len(parts):
        j = max((j for j in range(i + 1, len(parts) + 1) if "+".join(parts[i:j]) in known), default=None)
        if j is None:
            raise SystemExit(f"--mixes {spec}: {parts[i]!r} is not a recipe, learner or mix defined before this mix")
        out.append("+".join(parts[i:j]))
        i = j
    return out


def _mean_over_k(ks: dict[str, dict[str, Any]], metric: str = "bal_acc") -> float:
    """A recipe's mean of ``metric`` over its K values (the selection rule uses balanced accuracy)."""
    return float(np.mean([v[f"{metric}_mean"] for v in ks.values()]))


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    keep = ("acc", "bal_acc", "auc")
    out = {k: v for k, v in r.items() if k.split("_")[0] in keep or k.startswith("bal_acc")}
    out = {k: v for k, v in out.items() if not isinstance(v, (list, np.ndarray))}
    out.update(seconds=r["seconds"], majority_rate=r["majority_rate"])
    return out


def evaluate(a: argparse.Namespace) -> None:
    train = load_collection(a.data, split="train")
    test = load_collection(a.data, split=a.split)
    labels = train.labels.numpy()
    names = a.names or sorted(p.stem for p in Path(a.encoders).glob("*.safetensors") if ".ckpt" not in p.name)
    names = [*names, *a.baselines]
    rf = ResultFile(Path(a.out), {"split": a.split, "draws": a.draws, "encoders": names, "results": {}})
    print(f"{train!r}\n{test!r}\nload average {os.getloadavg()[0]:.1f}; encoders {names}", flush=True)
    feats = {}
    for name in names:
        t0 = time.process_time()
        feats[name] = _features(a, name, train, test)
        rf.data.setdefault("feature_cpu_s", {})[name] = round(time.process_time() - t0, 1)
    heads = [*HEADS, *(f"{h}@{c:g}" for c in a.probe_c for h in HEADS if "probe" in h and "ncm" not in h)]
    heads += [f"{h}^{b:g}" for b in a.power for h in HEADS]
    recipes: dict[str, Any] = {f"{n}/{h}": (lambda n=n, h=h: _head(h, feats[n], labels)) for n in names for h in heads}
    for spec in a.finetune:  # LP-FT on every support set: ENCODER:STEPS:LR
        enc_name, steps, lr = spec.split(":")
        enc = load_backbone(Path(a.encoders) / f"{enc_name}.safetensors")
        layers = LAYERS[enc.spec["name"]]  # type: ignore[index]
        recipes[f"{enc_name}/cl2_ft{steps}@{lr}"] = lambda e=enc, ly=layers, s=int(steps), r=float(lr): (
            finetune_predictor(e, ly, train.images, test.images, train.labels, steps=s, lr=r, preset="chest_xray")
        )
    learners = meta_learners(a, train)  # pretrain → meta-train: learners meta-trained on MedSynth from an encoder
    # each ProtoNet on stored embeddings: averaged over the image and the same fixed views as "+tta" (--meta-tta),
    # or plain with its prototypes refined once over the unlabelled pool by soft k-means (--meta-skm)
    variants = [("+tta", a.tta_views, prototype_predictor)] if a.meta_tta else []
    variants += [("+skm", 0, soft_kmeans_predictor)] if a.meta_skm else []
    for suffix, views, make in variants:
        for name, lrn in list(learners.items()):
            ftr, fte = (
                tta_features(lrn.backbone.eval(), x, views=views, preset="chest_xray", seed=a.seed).numpy()
                for x in (train.images, test.images)
            )
            recipes[f"{name}{suffix}"] = lambda ftr=ftr, fte=fte, make=make: make(ftr, fte, labels)
    for enc_name, per_class in (spec.split(":") for spec in a.self_train):  # ENCODER:M, the command's recipe
        recipes[f"{enc_name}/st{per_class}"] = self_trained_recipe(
            enc_name, int(per_class), learners, feats[enc_name]["+tta"], train, test
        )
    if a.only:
        recipes = {n: m for n, m in recipes.items() if n in a.only or "/cl2_ft" in n}
    for ens in a.ensembles:
        members = ens.split("+")
        for h in a.ensemble_heads:
            recipes[f"{ens}/{h}"] = lambda m=members, h=h: ensemble_predictor([_head(h, feats[x], labels) for x in m])
    ty = test.labels.numpy()  # the scored split's labels, for the paired differences
    for k in a.shots:
        kept: dict[str, Any] = {}
        cached: dict[str, Any] = {}  # each method's predictions per support set, reused by the --mixes
        methods = {**recipes, **learners}
        for mix in a.mixes:  # LABEL=A+B+C or A+B+C: the mean probabilities of methods scored in this run
            label, _, spec = mix.rpartition("=")
            methods[label or spec] = _mix_members(spec, methods)
        for rname, make in methods.items():
            if isinstance(make, list):  # a mix of methods (or of earlier mixes) scored in this run
                cached[rname] = predict = ensemble_predictor([cached[m] for m in make])
            else:  # a meta-trained learner or a head, on the same draws (seed)
                predict = learner_predictor(make, train, test, k_shot=k) if hasattr(make, "adapt") else make()
                cached[rname] = predict = _memo(predict)
            transductive = bool(getattr(make, "transductive", False))
            r = score_full_test_split(
                rname,
                predict,
                train,
                test,
                k_shot=k,
                draws=a.draws,
                seed=a.seed,
                keep_predictions=True,
                transductive=transductive,
            )
            if isinstance(make, list):  # a mix costs its members' time (their predictions were reused)
                members = dict.fromkeys(make)  # a member repeated for weight is computed once
                r["seconds"] = round(r["seconds"] + sum(rf.data["results"][m][str(k)]["seconds"] for m in members), 2)
            kept[rname] = {"correct": r["correct"], "score": r["score"]}
            summary = _summary(r)  # + each class's recall (the parts of balanced accuracy), mean over draws
            summary["recall_per_class"] = [round(st["mean"], 4) for st in r["recall_per_class"].values()]
            rf.data["results"].setdefault(rname, {})[str(k)] = summary
            rf.save()
            print(
                f"K={k:2d} {rname:32s} acc {r['acc_mean']:.3f} bal {r['bal_acc_mean']:.3f} auc {r['auc_mean']:.3f}",
                flush=True,
            )
        if a.reference in kept:  # reference − every other recipe, paired over the same draws and images
            rf.data.setdefault("paired_vs_reference", {})[str(k)] = {
                n: paired_difference(kept[a.reference], c, ty, seed=a.seed) for n, c in kept.items() if n != a.reference
            }
            rf.save()
        for pair in a.pairs:  # A:B, e.g. a variant against its control from the same seed
            x, y = pair.split(":")
            rf.data.setdefault("paired", {}).setdefault(str(k), {})[pair] = paired_difference(
                kept[x], kept[y], ty, seed=a.seed
            )
            rf.save()
    res = rf.data["results"]
    score = {n: (_mean_over_k(ks), _mean_over_k(ks, "auc")) for n, ks in res.items()}
    rf.data["ranking"] = sorted(score, key=lambda n: score[n], reverse=True)
    print("ranking (mean balanced accuracy over K, then AUC):", rf.data["ranking"][:5])
    rf.finish()


def _cell(r: dict[str, Any]) -> str:
    return f"{r['acc_mean']:.3f} / {r['bal_acc_mean']:.3f} / {r['auc_mean']:.3f}"


def table(a: argparse.Namespace) -> None:
    """Markdown tables from the evaluate step's JSON: the validation ranking, then the named recipes on test."""
    val = json.loads(Path(a.val_json).read_text())["results"]
    test = json.loads(Path(a.out).read_text())
    ranking = sorted(val, key=lambda n: _mean_over_k(val[n]), reverse=True)
    print("| recipe (validation split) | mean bal. ACC over K | K = 1 | K = 10 |\n|---|---|---|---|")
    for n in ranking[: a.top]:
        print(f"| {n} | {_mean_over_k(val[n]):.3f} | {_cell(val[n]['1'])} | {_cell(val[n]['10'])} |")
    shots = sorted(test["results"][a.rows[0]], key=int)
    print("\n| recipe (test split) | " + " | ".join(f"K = {k}" for k in shots) + " |")
    print("|---" * (len(shots) + 1) + "|")
    for n in a.rows:
        print(f"| {n} | " + " | ".join(_cell(test["results"][n][k]) for k in shots) + " |")
    ref = a.rows[0]
    print(f"\n{ref} on test, mean [95% interval over draws and test images] (± over draws):")
    for k in shots:
        r = test["results"][ref][k]
        parts = [
            f"{m} {r[m + '_mean']:.3f} [{r[m + '_lo95']:.3f}, {r[m + '_hi95']:.3f}] (±{r[m + '_ci95']:.3f})"
            for m in ("acc", "bal_acc", "auc")
        ]
        print(f"K = {k}: " + ", ".join(parts) + f"; majority-class rate {r['majority_rate']:.3f}")
    for k, pairs in test.get("paired_vs_reference", {}).items():
        for n in a.rows[1:]:
            d = pairs[n]
            print(
                f"K = {k}: {ref} − {n}: "
                + ", ".join(f"{m} {d[m]['mean']:+.3f} [{d[m]['lo95']:+.3f}, {d[m]['hi95']:+.3f}]" for m in d)
            )


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    default_data = shared_data_file("pneumoniamnist.npz")
    p.add_argument("step", choices=["pretrain", "evaluate", "table"])
    p.add_argument("--data", default=str(default_data) if default_data else None, help="PneumoniaMNIST .npz")
    p.add_argument("--encoders", default=str(PROJECT_ROOT / "runs" / "bench" / "encoders"))
    p.add_argument("--work", default="/tmp", help="pretrain: where the resumable SimCLR checkpoints go")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-steps", type=int, default=None, help="pretrain: stop early (smoke runs)")
    p.add_argument("--names", nargs="*", default=None, help="evaluate: encoder names (default: every file)")
    p.add_argument("--ensembles", nargs="*", default=[], help="evaluate: e.g. c4w64_e100+c4w64_e100_s1")
    p.add_argument("--ensemble-heads", nargs="*", default=["probe"])
    p.add_argument(
        "--mixes", nargs="*", default=[], help="evaluate: [LABEL=]A+B+C, the mean probabilities of recipes/learners"
    )
    p.add_argument("--baselines", nargs="*", default=["raw_pixels", "random_c4w64"], help="evaluate: floors")
    p.add_argument("--reference", default="", help="evaluate: recipe paired against every other (e.g. the chosen one)")
    p.add_argument("--pairs", nargs="*", default=[], help="evaluate: more paired differences A:B (A − B)")
    p.add_argument("--finetune", nargs="*", default=[], help="evaluate: LP-FT recipes ENCODER:STEPS:LR")
    p.add_argument(
        "--meta", nargs="*", default=[], help="evaluate: ENCODER:LEARNER:STEPS[:key=value,...] meta-trained on MedSynth"
    )
    p.add_argument(
        "--meta-tta",
        action="store_true",
        help="evaluate: also score each --meta ProtoNet on embeddings averaged over --tta-views fixed views (NAME+tta)",
    )
    p.add_argument(
        "--self-train",
        nargs="*",
        default=[],
        help="evaluate: ENCODER:M, the command's recipe + M pseudo-labels per class",
    )
    p.add_argument(
        "--meta-skm",
        action="store_true",
        help="evaluate: also score each --meta ProtoNet with its prototypes refined by one soft k-means step over the "
        "unlabelled train images (NAME+skm; Ren et al. 2018)",
    )
    p.add_argument("--probe-c", type=float, nargs="*", default=[], help="evaluate: probe heads also with these C")
    p.add_argument("--power", type=float, nargs="*", default=[], help="evaluate: heads also on features ** this")
    p.add_argument("--only", nargs="*", default=[], help="evaluate: score only these recipes (and the LP-FT ones)")
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10, 20])
    p.add_argument("--draws", type=int, default=100)
    p.add_argument("--tta-views", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=str(PROJECT_ROOT / "runs" / "bench" / "recipes.json"))
    p.add_argument("--val-json", default="", help="table: the validation run's JSON (--out is the test run's)")
    p.add_argument("--rows", nargs="*", default=[], help="table: test rows, the chosen recipe first")
    p.add_argument("--top", type=int, default=8, help="table: validation rows")
    a = p.parse_args()
    if a.data is None:
        raise SystemExit("no PneumoniaMNIST file: pass --data path/to/pneumoniamnist.npz")
    set_threads(a.threads)
    {"pretrain": pretrain, "evaluate": evaluate, "table": table}[a.step](a)


if __name__ == "__main__":
    main()
