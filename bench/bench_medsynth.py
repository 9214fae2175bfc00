"""MedSynth generation throughput (target: >= 5,000 images/s at 64 px on the project's 2-core machine).

Generates the full default set (5 modalities, 30 classes, 4 sites) at 28 and 64 px and prints images/s
(best of a few repeats, wall clock, with the library's default torch thread count), plus restyle speed.
Run: .venv/bin/python bench/bench_medsynth.py [--n 40] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from medmeta_lib.data.synthetic import MedSynth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=40, help="images per (class, site): 30 x 4 x n images per call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    synth = MedSynth()
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), load average {load:.1f}; {synth}")
    for size in (28, 64):
        synth.generate(image_size=size, n_per_class_site=1)  # build the cached texture and noise banks
        best, n_img = float("inf"), 0
        for r in range(args.repeats):
            t0 = time.perf_counter()
            col = synth.generate(image_size=size, split="train", seed=r, n_per_class_site=args.n)
            best, n_img = min(best, time.perf_counter() - t0), len(col)
        print(f"generate {size} px: {n_img} images in {best:.2f} s -> {n_img / best:,.0f} images/s")
        idx = torch.arange(len(col))
        t0 = time.perf_counter()
        synth.restyle(col, idx, (col.sites + 1) % col.num_sites)
        dt = time.perf_counter() - t0
        print(f"restyle  {size} px: {len(idx)} images in {dt:.2f} s -> {len(idx) / dt:,.0f} images/s")


if __name__ == "__main__":
    main()
