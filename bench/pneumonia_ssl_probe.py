"""Real-data result: SimCLR on the unlabelled PneumoniaMNIST train images, then a few-label linear probe.

Protocol (issue 3, docs/evaluation.md): pretrain Conv-4 with SimCLR on the 4,708 train
images (labels unused), then for K = 1, 5, 10, 20 labelled train images per class fit a logistic
regression on standardised frozen features and score it on the full official test split (624
images): ACC and ROC AUC, mean ± 1.96·sd/√draws over label draws. The same draws (seeded by draw
index) are used for every feature set: SimCLR encoder, the same architecture at random init, and raw
pixels. The reference rows measured before (BENCHMARKS.md) are printed alongside.

Choices fixed on the validation split, not on test (reproduce with ``--eval-split val --C 1 0.1 0.01``):
the logistic-regression strength ``C = 0.1`` (val: 0.1 ≥ 1 ≥ 0.01 for the encoders, equal for pixels),
and features read from Conv-4 blocks 2–4 (global-average-pooled and concatenated, 192-d;
``PooledLayers``) next to the last block only (64-d). GroupNorm instead of batch statistics: the
registry's BatchNorm keeps no running statistics, so in eval mode a feature would depend on the
other images of its batch; GroupNorm features are per image.

    .venv/bin/python bench/pneumonia_ssl_probe.py                         # ~30 epochs, the reported run
    .venv/bin/python bench/pneumonia_ssl_probe.py --epochs 2 --draws 3    # smoke run

The encoder checkpoint (``--out``) is resumable: re-running continues an interrupted pretraining.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from result_file import ResultFile
from torch import nn

from medmeta_lib.config import PROJECT_ROOT, set_threads, shared_data_file
from medmeta_lib.data.sources import load_collection
from medmeta_lib.models.backbones import create_backbone
from medmeta_lib.ssl.features import CONV4_BLOCKS_2_4, PooledLayers, extract_features
from medmeta_lib.ssl.probe import label_efficiency
from medmeta_lib.ssl.simclr import pretrain_simclr
from medmeta_lib.ssl.simclr_config import SimCLRConfig

# reference points measured before (ACC / AUC; transductive features) and the MedMNIST v2 anchor
REFERENCE = {
    "raw pixels (reference, 100 draws)": {5: (0.763, 0.832), 10: (0.798, 0.868), 20: (0.826, 0.892)},
    "Conv4 random init (reference, transductive)": {5: (0.759, 0.841), 10: (0.803, 0.879), 20: (0.827, 0.906)},
    "Conv4 4-min SimCLR (reference, transductive)": {5: (0.816, 0.904), 10: (0.848, 0.925), 20: (0.868, 0.939)},
}
ANCHOR = "MedMNIST v2 anchor, ResNet-18 (28) on all 4,708 labels: ACC 0.854, AUC 0.944"


def _table(rows: list[dict], shots: list[int | None]) -> str:
    head = "| features | " + " | ".join(f"K={'all' if k is None else k}" for k in shots) + " |"
    lines = [head, "|---" * (len(shots) + 1) + "|"]
    names = list(dict.fromkeys(r["encoder"] for r in rows))
    for name in names:
        cells = []
        for k in shots:
            r = next(r for r in rows if r["encoder"] == name and r["k_per_class"] == k)
            cells.append(f"{r['acc_mean']:.3f} ± {r['acc_ci95']:.3f} / {r['auc_mean']:.3f} ± {r['auc_ci95']:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, ref in REFERENCE.items():
        cells = [f"{ref[k][0]:.3f} / {ref[k][1]:.3f}" if k in ref else "" for k in shots]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    default_data = shared_data_file("pneumoniamnist.npz")
    p.add_argument("--data", default=str(default_data) if default_data else None, help="PneumoniaMNIST .npz")
    p.add_argument("--out", default=str(PROJECT_ROOT / "runs" / "bench" / "pneumonia_simclr.safetensors"))
    p.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint at --out")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--norm", default="group")
    p.add_argument("--site-invariance", action="store_true", help="second view with a simulated scanner shift")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10, 20])
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--C", type=float, nargs="+", default=[0.1])
    p.add_argument("--eval-split", default="test", choices=["test", "val"])
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.data is None:
        raise SystemExit("no PneumoniaMNIST file: pass --data path/to/pneumoniamnist.npz")
    threads = set_threads(a.threads)
    rf = ResultFile(Path(a.out).with_suffix(f".{a.eval_split}.json"), {"args": vars(a), "results": {}})
    train = load_collection(a.data, split="train")
    test = load_collection(a.data, split=a.eval_split)
    print(f"{train!r}\n{test!r}\nthreads {threads}, load average {os.getloadavg()[0]:.1f}")

    backbone_kwargs = {"hidden": a.hidden, "norm": a.norm}
    cfg = SimCLRConfig(
        epochs=a.epochs,
        batch_size=a.batch,
        lr=a.lr,
        temperature=a.temperature,
        site_invariance=a.site_invariance,
        augment_preset="chest_xray",
        seed=a.seed,
    )
    t0 = time.perf_counter()
    res = pretrain_simclr(
        train, backbone="conv4", backbone_kwargs=backbone_kwargs, config=cfg, out=a.out, resume=not a.fresh
    )
    t_ssl = time.perf_counter() - t0
    losses = [h["loss"] for h in res.history if "loss" in h]
    print(
        f"SimCLR: {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}, {t_ssl:.0f} s in this call "
        f"(checkpoint {a.out})"
    )

    torch.manual_seed(a.seed)  # the random-init baseline: same architecture, seeded like the SSL start
    random_enc = create_backbone("conv4", in_channels=train.channels, **backbone_kwargs)
    encoders: dict[str, nn.Module] = {
        "SimCLR Conv4, blocks 2-4 (192-d)": PooledLayers(res.encoder, CONV4_BLOCKS_2_4),
        "SimCLR Conv4, last block (64-d)": res.encoder,
        "random-init Conv4, blocks 2-4": PooledLayers(random_enc, CONV4_BLOCKS_2_4),
        "random-init Conv4, last block": random_enc,
        "raw pixels (784-d)": nn.Flatten(),
    }
    # inductive features: batch norms use population statistics of the unlabelled train images
    feats = {
        n: (
            extract_features(e, train.images, reference=train.images),
            extract_features(e, test.images, reference=train.images),
        )
        for n, e in encoders.items()
    }
    shots: list[int | None] = list(a.shots)
    rf.data.update(ssl_seconds_this_call=t_ssl, steps=len(losses), final_loss=losses[-1])
    for c in a.C:
        rows = label_efficiency(feats, train, test, shots=shots, draws=a.draws, seed=a.seed, C=c)
        rf.data["results"][str(c)] = rows
        rf.save()
        print(
            f"\n{a.eval_split} split ({len(test)} images), {a.draws} label draws, logistic regression C={c}; "
            "cells: ACC ± 95% CI / AUC ± 95% CI"
        )
        print(_table(rows, shots))
    print(ANCHOR)
    rf.finish()


if __name__ == "__main__":
    main()
