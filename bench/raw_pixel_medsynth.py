"""How hard is MedSynth for a linear model on raw pixels? (it must stay well below 100%).

Prints: logistic regression on raw pixels of the train split scored on the test split (all classes, and
within each modality); the same with one site held out (train on the other sites, test on it) to show
that the site shift is real; and 5-way 5-shot nearest-centroid accuracy over episodes drawn from the
test split. Run: .venv/bin/python bench/raw_pixel_medsynth.py [--size 28] [--n 40] [--taxonomy fine]
"""

from __future__ import annotations

import argparse
import time
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.data.synthetic import MedSynth


def _fit(x: np.ndarray, y: np.ndarray) -> Any:
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=200))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return clf.fit(x, y)


def _score(clf: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float((clf.predict(x) == y).mean())


def _fit_score(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> float:
    return _score(_fit(xtr, ytr), xte, yte)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=28)
    ap.add_argument("--n", type=int, default=40, help="train images per (class, site)")
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--taxonomy", default="coarse", choices=["coarse", "fine"], help="MedSynth's class taxonomy")
    args = ap.parse_args()
    t0 = time.perf_counter()
    synth = MedSynth(taxonomy=args.taxonomy)
    tr = synth.generate(image_size=args.size, split="train", seed=0, n_per_class_site=args.n)
    te = synth.generate(image_size=args.size, split="test", seed=0, n_per_class_site=max(10, args.n // 2))
    xtr, ytr, str_ = tr.images.flatten(1).numpy(), tr.labels.numpy(), tr.sites.numpy()
    xte, yte, ste = te.images.flatten(1).numpy(), te.labels.numpy(), te.sites.numpy()
    print(
        f"MedSynth {args.size} px: {len(tr)} train / {len(te)} test images, {tr.num_classes} classes, "
        f"{tr.num_sites} sites (generated in {time.perf_counter() - t0:.1f} s)"
    )
    acc = _fit_score(xtr, ytr, xte, yte)
    print(
        f"raw-pixel logistic regression, all {tr.num_classes} classes: test accuracy {acc:.3f} "
        f"(chance {1 / tr.num_classes:.3f})"
    )
    for m in tr.modalities:
        cls = tr.classes_of_modality(m)
        a, b = np.isin(ytr, cls), np.isin(yte, cls)
        print(
            f"  within {m:<11} ({len(cls)} classes): {_fit_score(xtr[a], ytr[a], xte[b], yte[b]):.3f} "
            f"(chance {1 / len(cls):.3f})"
        )
    print("site hold-out (train on the other sites' train images, test on the held-out site's test images):")
    for s, name in enumerate(tr.site_names or ()):
        clf = _fit(xtr[str_ != s], ytr[str_ != s])
        same, held = _score(clf, xte[ste != s], yte[ste != s]), _score(clf, xte[ste == s], yte[ste == s])
        print(f"  {name}: seen sites {same:.3f} -> held-out site {held:.3f}")
    site_acc = _fit_score(xtr, str_, xte, ste)
    print(f"site predictable from raw pixels: {site_acc:.3f} (chance {1 / tr.num_sites:.3f})")
    sampler = EpisodeSampler(te, n_way=5, k_shot=5, q_query=15, same_modality=True, seed=0)
    accs = []
    for _ in range(args.episodes):
        ep = sampler.sample()
        cent = torch.stack([ep.support_x[ep.support_y == c].flatten(1).mean(0) for c in range(5)])
        pred = torch.cdist(ep.query_x.flatten(1), cent).argmin(1)
        accs.append(float((pred == ep.query_y).float().mean()))
    m, h = np.mean(accs), 1.96 * np.std(accs) / np.sqrt(len(accs))
    print(
        f"5-way 5-shot raw-pixel nearest centroid (one modality per task, test split, {args.episodes} episodes): "
        f"{m:.3f} ± {h:.3f} (chance 0.200)"
    )


if __name__ == "__main__":
    main()
