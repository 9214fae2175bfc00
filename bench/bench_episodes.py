"""Episode sampling throughput: 5-way 5-shot 15-query at 28 px (target >= 10,000 episodes/s).

Run: .venv/bin/python bench/bench_episodes.py
"""

from __future__ import annotations

import os
import time

import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import EpisodeSampler


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average {os.getloadavg()[0]:.1f}")
    n_classes, per_class = 30, 640  # the size of a default MedSynth train split (30 classes x 4 sites x 160)
    col = ImageCollection(
        images=torch.rand(n_classes * per_class, 1, 28, 28),
        labels=torch.arange(n_classes * per_class) % n_classes,
        class_names=[f"c{i}" for i in range(n_classes)],
        sites=(torch.arange(n_classes * per_class) // n_classes) % 4,
    )
    for label, kw in [("any site", {}), ("one site per task", {"one_site": True})]:
        s = EpisodeSampler(col, 5, 5, 15, seed=0, **kw)
        for _ in range(200):
            s.sample()
        n, t0 = 5000, time.perf_counter()
        for _ in range(n):
            s.sample()
        dt = time.perf_counter() - t0
        print(f"episodes/s (5w5s15q, 28 px, {label}, materialised tensors): {n / dt:,.0f}")
        t0 = time.perf_counter()
        for _ in range(n):
            s.sample_indices()
        print(f"episodes/s (indices only, {label}): {n / (time.perf_counter() - t0):,.0f}")


if __name__ == "__main__":
    main()
