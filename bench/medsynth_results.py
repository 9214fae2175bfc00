"""MedSynth held-out results: every learner at 5-way 1-shot and 5-shot, time-to-accuracy, leave-one-site-out.

Protocol (issue 4, docs/evaluation.md):

* held-out modalities (``make_split(split="modality")``): meta-train on three MedSynth modalities,
  validate on a fourth, test on the fifth (new classes from an unseen imaging domain);
* every learner meta-trains for ``--steps`` outer steps (meta-batch 4, Adam 1e-3, 5 inner steps for
  the MAML family and ANIL) from the same seed; every ``--val-every`` steps it is scored on fixed
  validation episodes, and the best-scoring state is the one tested;
* test: the same ``--episodes`` fixed, seeded test episodes for every learner, mean ± 1.96·sd/√n;
* **time-to-accuracy**: the CPU time of training (``time.process_time``, validation excluded; run with
  one torch thread so that CPU time is compute time, not time spent waiting on a shared machine) until
  the validation accuracy first reaches 95% of that learner's own final validation accuracy. The validation modality is
  held out from training and is not the test modality, so the test episodes stay untouched;
* leave-one-site-out (``--site-learners``): meta-train at three hospitals, test new patients at the
  fourth and at the training hospitals (``site_studies.leave_one_site_out``).

Training runs in chunks of ``--val-every`` steps through ``meta_train``'s exact resume (weights,
optimiser, episode stream), so the time spent validating is measured apart from the training time.

Run (the figures in BENCHMARKS.md came from this command)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/medsynth_results.py --out bench/out/medsynth_results.json
    .venv/bin/python bench/medsynth_results.py --shots 5 --learners protonet --steps 40 --episodes 20 \
        --val-episodes 10 --site-learners protonet --site-steps 10 --site-episodes 10 --n-per-class-site 20  # smoke
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from paired_results import paired_vs_best
from result_file import ResultFile

from medmeta_lib.data import load_collection
from medmeta_lib.evaluation.episodic import evaluate_learner
from medmeta_lib.studies.experiment import evaluate_split, learner_defaults
from medmeta_lib.studies.experiment_split import make_split
from medmeta_lib.studies.sites import leave_one_site_out
from medmeta_lib.training.learner_io import build_learner
from medmeta_lib.training.meta_training import MetaTrainConfig, meta_train

ALL = "protonet,anil,fomaml,maml,metasgd,weightgen,baseline,baseline++,scratch"
INNER = ("maml", "fomaml", "metasgd", "anil")


def train_with_curve(name: str, split: Any, col: Any, a: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Meta-train one learner in validated chunks; return the learner (best state) and its curve.

    ``random_init`` is ProtoNet on the untrained encoder: nearest prototype in a random-init embedding, the
    floor that meta-training has to raise.
    """
    base = "protonet" if name == "random_init" else name
    kw = {**learner_defaults(base, col), **({"inner_steps": 5} if base in INNER else {})}
    learner = build_learner(
        base,
        backbone_kwargs={"hidden": a.hidden},
        n_way=5,
        in_channels=col.channels,
        encoder=a.encoder or None,
        learner_kwargs=kw,
        seed=a.seed,
    )
    val_set = split.val.fixed(a.val_episodes, seed=a.seed + 101)
    curve: list[dict[str, float]] = []
    train_s = 0.0
    best: tuple[float, dict[str, torch.Tensor]] | None = None
    if learner.meta_trainable and name != "random_init":
        stops = [*range(a.val_every, a.steps, a.val_every), a.steps]  # validated at the end too
        for upto in stops:
            cfg = MetaTrainConfig(steps=upto, meta_batch=4, val_every=0, checkpoint_every=upto, seed=a.seed)
            c0 = time.process_time()
            meta_train(learner, split.train, config=cfg, out=workdir / name, resume=True, progress=False)
            train_s += time.process_time() - c0
            t0 = time.perf_counter()
            ev = evaluate_learner(learner, val_set)
            curve.append({"step": upto, "train_s": train_s, "val_acc": ev.acc_mean, "val_s": time.perf_counter() - t0})
            if best is None or ev.acc_mean > best[0]:
                best = (ev.acc_mean, {k: v.detach().clone() for k, v in learner.state_dict().items()})
        assert best is not None
        learner.load_state_dict(best[1])
    else:
        ev = evaluate_learner(learner, val_set)
        curve.append({"step": 0, "train_s": 0.0, "val_acc": ev.acc_mean, "val_s": 0.0})
    final = curve[-1]["val_acc"]
    reach = next(c for c in curve if c["val_acc"] >= 0.95 * final)
    return {
        "learner": learner,
        "curve": curve,
        "train_seconds": train_s,
        "final_val_acc": final,
        "best_val_acc": max(c["val_acc"] for c in curve),
        "time_to_95pct_s": reach["train_s"],
        "steps_to_95pct": reach["step"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--learners", default=ALL)
    p.add_argument("--shots", default="1,5")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--val-episodes", type=int, default=150)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--n-per-class-site", type=int, default=60)
    p.add_argument("--encoder", default="", help="start every learner from this encoder checkpoint")
    p.add_argument("--site-learners", default="protonet,baseline", help="leave-one-site-out ('' to skip)")
    p.add_argument("--site-steps", type=int, default=500)
    p.add_argument("--site-episodes", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--taxonomy", default="coarse", choices=["coarse", "fine"], help="MedSynth's class taxonomy")
    p.add_argument(
        "--protocol", default="modality", help="split protocol: modality (held-out modality), classes (new classes)"
    )
    p.add_argument("--out", default="bench/out/medsynth_results.json")
    a = p.parse_args()
    if a.steps < 1 or a.val_every < 1:
        p.error(f"--steps and --val-every must be >= 1, got {a.steps} and {a.val_every}")
    t0 = time.time()
    names = [n for n in a.learners.split(",") if n]
    kw = {"n_per_class_site": a.n_per_class_site, "taxonomy": a.taxonomy}
    cols = {s: load_collection("synthetic", split=s, seed=a.seed, **kw) for s in ("train", "val", "test")}
    rf = ResultFile(a.out, {"settings": vars(a) | {"torch_threads": torch.get_num_threads()}, "results": {}})
    out = rf.data
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for k in [int(s) for s in a.shots.split(",") if s]:
            split = make_split(
                cols["train"],
                cols["test"],
                val=cols["val"],
                split=a.protocol,
                n_way=5,
                k_shot=k,
                q_query=15,
                seed=a.seed,
            )
            out.setdefault("split", split.description)
            trained = {n: train_with_curve(n, split, cols["train"], a, Path(tmp) / f"k{k}") for n in names}
            evals = evaluate_split(
                {n: t["learner"] for n, t in trained.items()}, split, episodes=a.episodes, seed=a.seed + 12345
            )
            rows = {}
            for n in names:
                t, e = trained[n], evals[n]
                test = e.to_dict(per_episode=True)  # per-episode: paired differences, also across runs
                rows[n] = {**{k2: v for k2, v in t.items() if k2 != "learner"}, "test": test}
                print(
                    f"5-way {k}-shot {n:10s} test {e.acc_mean:.3f} ± {e.acc_ci95:.3f}"
                    f" | val final {t['final_val_acc']:.3f} | train {t['train_seconds'] / 60:.1f} min,"
                    f" 95% of final after {t['time_to_95pct_s'] / 60:.2f} min ({t['steps_to_95pct']} steps)"
                    f"  [{time.time() - t0:.0f} s]",
                    flush=True,
                )
            best, paired = paired_vs_best(evals)
            for n, d in paired.items():
                print(f"5-way {k}-shot {best} - {n}: {d['mean']:+.3f} ± {d['ci95']:.3f} (paired)", flush=True)
            out["results"][f"5w{k}s"] = rows
            out.setdefault("paired_vs_best", {})[f"5w{k}s"] = {"best": best, **paired}
            rf.save()
    if a.site_learners:
        cfg = MetaTrainConfig(steps=a.site_steps, meta_batch=4, val_every=0, seed=a.seed)
        for n in [s for s in a.site_learners.split(",") if s]:
            loso = leave_one_site_out(
                n,
                cols["train"],
                cols["test"],
                n_way=5,
                k_shot=5,
                q_query=15,
                config=cfg,
                episodes=a.site_episodes,
                seed=a.seed,
                backbone_kwargs={"hidden": a.hidden},
                encoder=a.encoder or None,
            )
            out.setdefault("leave_one_site_out", {})[n] = loso
            rf.save()
            for site, v in loso.items():
                print(
                    f"LOSO {n:9s} {site}: training sites {v['training_sites_acc']:.3f} ± "
                    f"{v['training_sites_ci95']:.3f}, held-out (labels there) {v['held_out_acc']:.3f} ± "
                    f"{v['held_out_ci95']:.3f}, held-out (labels from training sites) "
                    f"{v['held_out_remote_labels_acc']:.3f} ± {v['held_out_remote_labels_ci95']:.3f}",
                    flush=True,
                )
    rf.finish()


if __name__ == "__main__":
    main()
