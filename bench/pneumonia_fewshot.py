"""PneumoniaMNIST 2-way K-shot for every learner: the held-out-dataset result (issue 4).

Meta-learners are meta-trained on MedSynth (5-way tasks at 28 px; all modalities, or without the
synthetic chest radiographs with ``--exclude-modalities chest_xray``, which holds the target out at the
task level) and tested on PneumoniaMNIST's official test split. Predictions are inductive
(``--transductive`` for the old per-batch statistics). Two protocols:

* balanced episodes: 2-way K-shot, 15 queries per class, ``--episodes`` fixed episodes;
* full official test split: K labelled train images per class, all 624 test images scored, over
  ``--draws`` label draws (the protocol comparable to the MedMNIST v2 full-data anchor): accuracy,
  balanced accuracy and AUC with draw and draw+test-image intervals, the majority-class rate, and the
  paired difference of the best learner against every other one.

Run (the figures in BENCHMARKS.md came from these commands; the encoder is bench/pneumonia_ssl_probe.py's):
    OMP_NUM_THREADS=1 .venv/bin/python bench/pneumonia_fewshot.py --out bench/out/pneumonia_fewshot.json
    OMP_NUM_THREADS=1 .venv/bin/python bench/pneumonia_fewshot.py --encoder runs/bench/pneumonia_simclr.safetensors \
        --hidden 64 --meta-steps 0 --out bench/out/pneumonia_fewshot_ssl.json
    OMP_NUM_THREADS=1 .venv/bin/python bench/pneumonia_fewshot.py --encoder runs/bench/pneumonia_simclr.safetensors \
        --hidden 64 --learners weightgen,protonet,fomaml,baseline --weightgen-frozen --episodes 300 \
        --out bench/out/pneumonia_fewshot_ssl_meta.json  # SimCLR-initialised meta-learners (issue 15)
    .venv/bin/python bench/pneumonia_fewshot.py --learners protonet,scratch --shots 1,5 --episodes 10 --draws 2 \
        --meta-steps 5 --n-per-class-site 10 --out /tmp/pneumonia_fewshot_smoke.json  # smoke
"""

from __future__ import annotations

import argparse
import time

import torch
from result_file import ResultFile

from medmeta_lib.config import shared_data_file
from medmeta_lib.data import EpisodeSampler, load_collection
from medmeta_lib.evaluation.episodic import evaluate_learner
from medmeta_lib.evaluation.full_test_split import compare_full_test_split
from medmeta_lib.studies.experiment import learner_defaults, train_learners
from medmeta_lib.studies.experiment_split import make_split
from medmeta_lib.training.learner_io import build_learner
from medmeta_lib.training.meta_training import MetaTrainConfig


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--npz", default=str(shared_data_file("pneumoniamnist.npz") or ""))
    p.add_argument("--learners", default="protonet,anil,fomaml,maml,metasgd,baseline,baseline++,scratch")
    p.add_argument("--shots", default="1,5,10,20")
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--draws", type=int, default=100)
    p.add_argument("--meta-steps", type=int, default=300, help="outer steps on MedSynth (0: no meta-training)")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--encoder", default="", help="encoder checkpoint (e.g. SimCLR on unlabelled PneumoniaMNIST)")
    p.add_argument("--n-per-class-site", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--exclude-modalities",
        default="",
        help="MedSynth modalities left out of meta-training, e.g. chest_xray (the target held out at the task level)",
    )
    p.add_argument("--transductive", action="store_true", help="per-batch statistics (the old default), for comparison")
    p.add_argument(
        "--weightgen-frozen",
        action="store_true",
        help="also meta-train 'weightgen_frozen': WeightGen with the encoder frozen (only the generator learns)",
    )
    p.add_argument("--eval-split", default="test", choices=["test", "val"], help="val: for choosing a recipe")
    p.add_argument("--out", default="bench/out/pneumonia_fewshot.json")
    a = p.parse_args()
    if not a.npz:
        raise SystemExit("PneumoniaMNIST .npz not found: pass --npz")
    t0 = time.time()
    rf = ResultFile(a.out, {"settings": vars(a) | {"torch_threads": torch.get_num_threads()}, "results": {}})
    names = [n for n in a.learners.split(",") if n]
    shots = [int(k) for k in a.shots.split(",")]
    synth = load_collection("synthetic", split="train", n_per_class_site=a.n_per_class_site, seed=a.seed)
    synth_val = load_collection("synthetic", split="val", n_per_class_site=a.n_per_class_site, seed=a.seed)
    excluded = [m for m in a.exclude_modalities.split(",") if m]
    # no validation (val_every=0 below): the split needs no validation collection
    split = make_split(
        synth, synth_val, split="none", n_way=5, k_shot=5, q_query=15, exclude_modalities=excluded, seed=a.seed
    )
    print(split.description, flush=True)
    meta = [n for n in names if n != "scratch"]
    if a.meta_steps > 0:
        cfg = MetaTrainConfig(steps=a.meta_steps, meta_batch=4, val_every=0, seed=a.seed)
        trained = train_learners(
            meta,
            split,
            backbone_kwargs={"hidden": a.hidden},
            encoder=a.encoder or None,
            config=cfg,
            val_episodes=0,
            progress=False,
        )
        learners = {n: r.learner for n, r in trained.items()}
        if a.weightgen_frozen:
            frozen = train_learners(
                ["weightgen"],
                split,
                backbone_kwargs={"hidden": a.hidden},
                encoder=a.encoder or None,
                learner_kwargs={"weightgen": {"freeze_backbone": True}},
                config=cfg,
                val_episodes=0,
                progress=False,
            )
            learners["weightgen_frozen"] = frozen["weightgen"].learner
    else:  # no meta-training: every learner starts from the encoder (or its random initialisation)
        learners = {
            n: build_learner(
                n,
                backbone_kwargs={"hidden": a.hidden},
                n_way=5,
                encoder=a.encoder or None,
                learner_kwargs=learner_defaults(n, synth),
                seed=a.seed,
            )
            for n in meta
        }
    if "scratch" in names:
        learners["scratch"] = build_learner(
            "scratch",
            backbone_kwargs={"hidden": a.hidden},
            n_way=2,
            seed=a.seed,
            learner_kwargs=learner_defaults("scratch", synth),
        )
    print(f"meta-training done in {time.time() - t0:.0f} s", flush=True)
    train = load_collection(a.npz, split="train")
    test = load_collection(a.npz, split=a.eval_split)
    results: dict[str, dict] = rf.data["results"]
    mode = True if a.transductive else None
    for learner in learners.values():
        learner.set_n_way(2)
    for k in shots:
        cmp = compare_full_test_split(
            learners, train, test, k_shot=k, draws=a.draws, seed=a.seed + 2, transductive=mode
        )
        rf.data.setdefault("paired_vs_best", {})[str(k)] = {"best": cmp["best"], **cmp["paired_vs_best"]}
        for name, learner in learners.items():
            eps = EpisodeSampler(test, 2, k, 15, seed=a.seed + 1).fixed(a.episodes, seed=a.seed + 1)
            bal = evaluate_learner(learner, eps, transductive=mode).to_dict()
            full = cmp["results"][name]
            results.setdefault(name, {})[str(k)] = {"balanced": bal, "full_test_split": full}
            print(
                f"{name:10s} K={k:2d} episodes acc {bal['acc_mean']:.3f}±{bal['acc_ci95']:.3f} "
                f"auc {bal['auc_mean']:.3f} | full split acc {full['acc_mean']:.3f}±{full['acc_ci95_total']:.3f} "
                f"bal {full['bal_acc_mean']:.3f}±{full['bal_acc_ci95_total']:.3f} "
                f"auc {full['auc_mean']:.3f}±{full['auc_ci95_total']:.3f}  ({time.time() - t0:.0f} s)",
                flush=True,
            )
        rf.save()
        for name, d in cmp["paired_vs_best"].items():
            b = d["bal_acc"]
            print(
                f"K={k:2d} {cmp['best']} - {name}: balanced acc {b['mean']:+.3f} [{b['lo95']:+.3f}, {b['hi95']:+.3f}]"
            )
    rf.finish()


if __name__ == "__main__":
    main()
