"""Does a prediction depend on the other images it is predicted with? Transductive vs inductive, measured.

The finding that started the inductive-evaluation change: PneumoniaMNIST, 2-way 10-shot, one seeded
support set, an untrained Conv4 from ``create_backbone("conv4")``, the whole official test split
predicted after ``learner.adapt(...)`` — all 624 images in one batch, in batches of 64, and one image
at a time — with per-batch batch-norm statistics (``transductive=True``, the old default) and with the
support set's statistics (the default now). Also the largest change of one image's probability between
"alone" and "in the whole split".

Run (the table in README "Inductive by default" and BENCHMARKS.md came from this command):
    .venv/bin/python bench/batch_dependence.py --out bench/out/batch_dependence.json
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from result_file import ResultFile

from medmeta_lib.config import shared_data_file
from medmeta_lib.data import load_collection
from medmeta_lib.learners import create_learner
from medmeta_lib.models import create_backbone


def probs_in_batches(predictor, x: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([predictor(x[i : i + batch]).softmax(-1) for i in range(0, len(x), batch)])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--npz", default=str(shared_data_file("pneumoniamnist.npz") or ""))
    p.add_argument("--learners", default="protonet,baseline,fomaml,anil")
    p.add_argument("--k-shot", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/out/batch_dependence.json")
    a = p.parse_args()
    if not a.npz:
        raise SystemExit("PneumoniaMNIST .npz not found: pass --npz")
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    train = load_collection(a.npz, split="train")
    test = load_collection(a.npz, split="test")
    rng = np.random.default_rng(a.seed)
    labels = train.labels.numpy()
    idx = np.concatenate([rng.choice(np.flatnonzero(labels == c), a.k_shot, replace=False) for c in (0, 1)])
    sx, sy = train.images[torch.from_numpy(idx)], torch.arange(2).repeat_interleave(a.k_shot)
    y = test.labels.numpy()
    rf = ResultFile(a.out, {"settings": vars(a), "results": {}})
    print(f"{'learner':10s} {'mode':12s} {'all 624':>8s} {'64':>8s} {'one':>8s} {'max |Δp|':>9s}")
    for name in [n for n in a.learners.split(",") if n]:
        for transductive in (True, False):
            torch.manual_seed(a.seed)
            kw = {"num_train_classes": 2} if name.startswith("baseline") else {}
            backbone = create_backbone("conv4", in_channels=train.channels)  # the .npz decides: greyscale or RGB
            learner = create_learner(name, backbone, n_way=2, transductive=transductive, **kw)
            t0 = time.time()
            predictor, _ = learner.adapt(sx, sy)
            p_all, p_64, p_1 = (probs_in_batches(predictor, test.images, b) for b in (len(test), 64, 1))
            accs = [float((q.argmax(1).numpy() == y).mean()) for q in (p_all, p_64, p_1)]
            delta = float((p_all - p_1).abs().max())
            mode = "transductive" if transductive else "inductive"
            rf.data["results"].setdefault(name, {})[mode] = {
                "acc_all": accs[0],
                "acc_batch64": accs[1],
                "acc_one_at_a_time": accs[2],
                "max_prob_change": delta,
                "seconds": time.time() - t0,
            }
            rf.save()
            print(f"{name:10s} {mode:12s} {accs[0]:8.3f} {accs[1]:8.3f} {accs[2]:8.3f} {delta:9.2e}", flush=True)
    rf.finish()


if __name__ == "__main__":
    main()
