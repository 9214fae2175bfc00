"""Does site-invariant SimCLR help at a hospital the encoder never saw? (issue 3)

For each held-out site ``s`` of MedSynth: pretrain SimCLR on the unlabelled train images of the other
sites, three times with the same seed — ordinary positives (two augmentations of one image),
site-invariant positives (the same patient re-rendered at another *training* site; the renderer reads
each image's class label, so this variant is not label-free) and the label-free site-invariant variant
(a simulated scanner shift, ``site_views="scanner_shift"``) — then fit a
logistic-regression probe on k labelled train images per class from the training sites and score
it on new patients at the held-out site and at the training sites. The same label draws (seeded by
draw index) are used for every encoder, so the difference between the two encoders is paired.
A random-init encoder and raw pixels are the reference rows. Features are inductive (population
statistics of the unlabelled pool images).

Run (the figures in BENCHMARKS.md came from this command)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/ssl_site_invariance.py --out bench/out/ssl_site_invariance.json
    .venv/bin/python bench/ssl_site_invariance.py --sites 1 --epochs 1 --draws 3 --n-per-class-site 6 --shots 5  # smoke
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch
from result_file import ResultFile
from torch import nn

from medmeta_lib.data import load_collection
from medmeta_lib.evaluation.intervals import mean_ci
from medmeta_lib.models import create_backbone
from medmeta_lib.ssl.features import extract_features
from medmeta_lib.ssl.probe import linear_probe
from medmeta_lib.ssl.simclr import pretrain_simclr
from medmeta_lib.ssl.simclr_config import SimCLRConfig


def by_sites(col: Any, keep: bool, site: int) -> Any:
    mask = (col.sites == site) if keep else (col.sites != site)
    return col.subset(torch.nonzero(mask).flatten())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sites", default="0,1,2,3", help="held-out site ids")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--n-per-class-site", type=int, default=40)
    p.add_argument("--shots", type=int, nargs="+", default=[5, 20])
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="bench/out/ssl_site_invariance.json")
    a = p.parse_args()
    t0 = time.time()
    kw = {"n_per_class_site": a.n_per_class_site, "seed": a.seed}
    train, test = load_collection("synthetic", split="train", **kw), load_collection("synthetic", split="test", **kw)
    names = list(train.site_names or ())
    print(f"{train!r}\nthreads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}", flush=True)
    rf = ResultFile(a.out, {"settings": vars(a), "held_out": {}})
    for s in [int(x) for x in a.sites.split(",") if x]:
        pool, seen, unseen = by_sites(train, False, s), by_sites(test, False, s), by_sites(test, True, s)
        encoders: dict[str, nn.Module] = {"raw pixels": nn.Flatten()}
        torch.manual_seed(a.seed)
        encoders["random init"] = create_backbone("conv4", in_channels=pool.channels, hidden=a.hidden)
        variants = (
            ("SimCLR", False, "auto"),
            ("SimCLR site-invariant", True, "auto"),
            ("SimCLR site-invariant, label-free", True, "scanner_shift"),
        )
        for variant, inv, views in variants:
            cfg = SimCLRConfig(epochs=a.epochs, batch_size=a.batch, site_invariance=inv, site_views=views, seed=a.seed)
            res = pretrain_simclr(pool, backbone_kwargs={"hidden": a.hidden}, config=cfg, progress=False)
            encoders[variant] = res.encoder
        rows: dict[str, Any] = {}
        for name, enc in encoders.items():
            ftr = extract_features(enc, pool.images, reference=pool.images)
            for where, col in (("held_out_site", unseen), ("training_sites", seen)):
                feats = (ftr, extract_features(enc, col.images, reference=pool.images))
                for k in a.shots:
                    r = linear_probe(feats, pool, col, k_per_class=k, draws=a.draws, seed=a.seed)
                    rows.setdefault(name, {}).setdefault(where, {})[str(k)] = r
        # paired difference site-invariant minus plain, per label draw, at the held-out site
        diffs, free = {}, {}
        for k in a.shots:
            plain_acc = rows["SimCLR"]["held_out_site"][str(k)]["per_draw_acc"]
            for out, variant in ((diffs, "SimCLR site-invariant"), (free, "SimCLR site-invariant, label-free")):
                inv_acc = rows[variant]["held_out_site"][str(k)]["per_draw_acc"]
                m, h = mean_ci([x - y for x, y in zip(inv_acc, plain_acc)])
                out[str(k)] = {"mean": m, "ci95": h}
        rf.data["held_out"][names[s]] = {
            "probe": rows,
            "site_invariant_minus_plain_held_out": diffs,
            "label_free_site_invariant_minus_plain_held_out": free,
        }
        rf.save()
        for name in encoders:
            cells = []
            for k in a.shots:
                u, t = rows[name]["held_out_site"][str(k)], rows[name]["training_sites"][str(k)]
                cells.append(f"k={k}: held-out {u['acc_mean']:.3f}±{u['acc_ci95']:.3f} / seen {t['acc_mean']:.3f}")
            print(f"{names[s]} {name:22s} " + " | ".join(cells), flush=True)
        for label, dd in (("site-invariant", diffs), ("label-free site-invariant", free)):
            d = " ".join(f"k={k}: {v['mean']:+.3f}±{v['ci95']:.3f}" for k, v in dd.items())
            print(f"{names[s]} {label} minus plain, held-out site: {d}  [{time.time() - t0:.0f} s]", flush=True)
    rf.finish()


if __name__ == "__main__":
    main()
