"""How long does adapting to one new task take? WeightGen (one forward pass of the writer) against MAML.

Both learners adapt to the same episodes, interleaved in one process (so the machine's load hits both
alike): Conv4-64, 28 px, ``--n-way``-way ``--k-shot``-shot support sets, MAML with its default 10
test-time inner steps, WeightGen generating its head in one forward pass (and, for reference, with 5
refinement steps). Reported: median milliseconds per ``adapt`` and the ratio to MAML.

Run (the figure in BENCHMARKS.md came from this command):
    .venv/bin/python bench/adaptation_speed.py --out bench/out/adaptation_speed.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from result_file import ResultFile

from medmeta_lib.data import EpisodeSampler, load_collection
from medmeta_lib.learners import create_learner
from medmeta_lib.models import create_backbone


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, default=5)
    p.add_argument("--episodes", type=int, default=30)
    p.add_argument("--out", default="bench/out/adaptation_speed.json")
    a = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}", flush=True)
    col = load_collection("synthetic", n_per_class_site=10)
    eps = EpisodeSampler(col, a.n_way, a.k_shot, 1, same_modality=True, seed=0).fixed(a.episodes + 2, seed=0)
    torch.manual_seed(0)
    learners = {
        "maml (10 inner steps)": create_learner("maml", create_backbone("conv4"), n_way=a.n_way),
        "weightgen (generated)": create_learner("weightgen", create_backbone("conv4"), n_way=a.n_way),
        "weightgen (generated + 5 refinement steps)": create_learner(
            "weightgen", create_backbone("conv4"), n_way=a.n_way, refine_steps=5
        ),
    }
    times: dict[str, list[float]] = {n: [] for n in learners}
    for i, ep in enumerate(eps):
        for name, learner in learners.items():
            t0 = time.perf_counter()
            learner.adapt(ep.support_x, ep.support_y)
            if i >= 2:  # two warm-up episodes
                times[name].append(1000 * (time.perf_counter() - t0))
    maml = statistics.median(times["maml (10 inner steps)"])
    rf = ResultFile(a.out, {"settings": vars(a), "results": {}})
    for name, t in times.items():
        med = statistics.median(t)
        rf.data["results"][name] = {"median_ms": med, "speedup_vs_maml": maml / med}
        print(f"{name:45s} {med:8.1f} ms per adapt   x{maml / med:5.1f} faster than MAML", flush=True)
    rf.finish()


if __name__ == "__main__":
    main()
