"""The SimCLR encoders that ``fewshot_recipes.py`` scores: the variants and the ``pretrain`` step.

Each variant is a backbone, its arguments, the SimCLR epochs and seed, other ``SimCLRConfig`` fields (by default
batch 256, τ = 0.2, AdamW 2e-3, chest-X-ray views) and, optionally, MedSynth images pooled with the target's unlabelled
train images (``"pool_medsynth"``: images per class and site); ``pretrain`` writes ``ENC_DIR/<name>.safetensors``
and the time it took to ``ENC_DIR/pretrain.json``. Run it through ``fewshot_recipes.py pretrain``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from result_file import ResultFile

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.sources import load_collection
from medmeta_lib.ssl.features import CONV4_BLOCKS_2_4
from medmeta_lib.ssl.simclr import pretrain_simclr
from medmeta_lib.ssl.simclr_config import SimCLRConfig
from medmeta_lib.studies.medsynth_metatrain import medsynth_train_split
from medmeta_lib.training.checkpoint import save_backbone

__all__ = ["LAYERS", "VARIANTS", "pooled_with_medsynth", "pretrain"]

_C4W64: dict[str, Any] = {"backbone": "conv4", "kwargs": {"hidden": 64, "norm": "group"}}
_SCANNER_SHIFT = {"site_invariance": True, "site_views": "scanner_shift"}
#: SimCLR variants: backbone, its arguments, epochs, seed, other SimCLRConfig fields
#: (batch 256, τ = 0.2, AdamW 2e-3, chest-X-ray views)
VARIANTS: dict[str, dict[str, Any]] = {
    "c4w64_e30": {**_C4W64, "epochs": 30, "seed": 0},
    "c4w64_e100": {**_C4W64, "epochs": 100, "seed": 0},
    "c4w64_e300": {**_C4W64, "epochs": 300, "seed": 0},
    "c4w128_e100": {"backbone": "conv4", "kwargs": {"hidden": 128, "norm": "group"}, "epochs": 100, "seed": 0},
    "r12_e100": {"backbone": "resnet12", "kwargs": {"norm": "group"}, "epochs": 100, "seed": 0},
    "c4w64_e100_s1": {**_C4W64, "epochs": 100, "seed": 1},
    "c4w64_e100_s2": {**_C4W64, "epochs": 100, "seed": 2},
    "r12_e300": {"backbone": "resnet12", "kwargs": {"norm": "group"}, "epochs": 300, "seed": 0},
    "c4w128_e300": {"backbone": "conv4", "kwargs": {"hidden": 128, "norm": "group"}, "epochs": 300, "seed": 0},
    "c4w64_e30_s1": {**_C4W64, "epochs": 30, "seed": 1},
    "c4w64_e30_s2": {**_C4W64, "epochs": 30, "seed": 2},
    # label-free scanner-shift positives (section 6): one view of each pair is the image after a simulated
    # scanner change (bias field, contrast curve, blur, offset), aimed at the acquisition shift between splits
    "c4w64_e30_ss": {**_C4W64, "epochs": 30, "seed": 0, "simclr": _SCANNER_SHIFT},
    "c4w64_e30_ss_s1": {**_C4W64, "epochs": 30, "seed": 1, "simclr": _SCANNER_SHIFT},
    "c4w64_e30_ss_s2": {**_C4W64, "epochs": 30, "seed": 2, "simclr": _SCANNER_SHIFT},
    # twice as long: the training layout (models/training_layout.py) makes 60 epochs cost what 40 did
    "c4w64_e60_ss": {**_C4W64, "epochs": 60, "seed": 0, "simclr": _SCANNER_SHIFT},
    "c4w64_e60_ss_s1": {**_C4W64, "epochs": 60, "seed": 1, "simclr": _SCANNER_SHIFT},
    "c4w64_e60_ss_s2": {**_C4W64, "epochs": 60, "seed": 2, "simclr": _SCANNER_SHIFT},
    # twice as long again (section 23)
    **{
        f"c4w64_e120_ss{suffix}": {**_C4W64, "epochs": 120, "seed": seed, "simclr": _SCANNER_SHIFT}
        for seed, suffix in ((0, ""), (1, "_s1"), (2, "_s2"))
    },
    # the NT-Xent temperature, 0.1 and 0.5 against the 0.2 above (section 17)
    **{
        f"c4w64_e60_ss_t{tag}{suffix}": {
            **_C4W64,
            "epochs": 60,
            "seed": seed,
            "simclr": {**_SCANNER_SHIFT, "temperature": tau},
        }
        for tag, tau in (("01", 0.1), ("05", 0.5))
        for seed, suffix in ((0, ""), (1, "_s1"), (2, "_s2"))
    },
    # max-pools after blocks 1-2 only: blocks 3-4 stay at 7 x 7 instead of 3 x 3 and 1 x 1 (section 18)
    **{
        f"c4w64p2_e60_ss{suffix}": {
            "backbone": "conv4",
            "kwargs": {"hidden": 64, "norm": "group", "pools": 2},
            "epochs": 60,
            "seed": seed,
            "simclr": _SCANNER_SHIFT,
        }
        for seed, suffix in ((0, ""), (1, "_s1"), (2, "_s2"))
    },
    # SimCLR on the target's train images pooled with MedSynth's train split (the one the ProtoNets meta-train on:
    # all modalities, 40 per class and site, 4,800 images); 30 epochs of the pool cost what 60 of the target do
    # (section 20)
    **{
        f"c4w64_e30_ms{suffix}": {
            **_C4W64,
            "epochs": 30,
            "seed": seed,
            "simclr": _SCANNER_SHIFT,
            "pool_medsynth": 40,
        }
        for seed, suffix in ((0, ""), (1, "_s1"), (2, "_s2"))
    },
}
#: the layers a head reads, per backbone: the pooled outputs of the last three stages
LAYERS = {"conv4": CONV4_BLOCKS_2_4, "resnet12": ("stages.1", "stages.2", "stages.3")}


def pooled_with_medsynth(train: ImageCollection, *, n_per_class_site: int, seed: int) -> ImageCollection:
    """The target's images and MedSynth's train split in one collection, for label-free pretraining.

    MedSynth is the set ``metatrain_on_medsynth`` meta-trains on, at the target's size and channels
    (``medsynth_train_split``); its classes and sites follow the target's (the ids are offset), so every image keeps
    its own label and site although SimCLR reads neither.
    """
    synth = medsynth_train_split(
        image_size=train.image_size, channels=train.channels, n_per_class_site=n_per_class_site, seed=seed
    )
    assert train.sites is not None and synth.sites is not None and train.site_names and synth.site_names
    return ImageCollection(
        images=torch.cat([train.images, synth.images]),
        labels=torch.cat([train.labels, synth.labels + train.num_classes]),
        class_names=train.class_names + tuple(f"medsynth:{c}" for c in synth.class_names),
        sites=torch.cat([train.sites, synth.sites + train.num_sites]),
        site_names=train.site_names + tuple(f"medsynth:{s}" for s in synth.site_names),
        source=f"{train.source} + MedSynth train ({n_per_class_site} per class and site, seed {seed})",
        split="train",
    )


def pretrain(a: argparse.Namespace) -> None:
    enc_dir = Path(a.encoders)
    enc_dir.mkdir(parents=True, exist_ok=True)
    train = load_collection(a.data, split="train")
    log = ResultFile(enc_dir / "pretrain.json", {"device": a.device, "threads": torch.get_num_threads()})
    if log.path.exists():
        log.data.update(json.loads(log.path.read_text()))
    for name in a.variants:
        v = VARIANTS[name]
        target = enc_dir / f"{name}.safetensors"
        if target.exists():
            print(f"{name}: {target} exists, skipped")
            continue
        fields = {"batch_size": 256, "lr": 2e-3, "temperature": 0.2, **v.get("simclr", {})}
        cfg = SimCLRConfig(epochs=v["epochs"], seed=v["seed"], max_steps=a.max_steps, **fields)
        t0, cpu0 = time.perf_counter(), time.process_time()
        data = train
        if "pool_medsynth" in v:
            data = pooled_with_medsynth(train, n_per_class_site=v["pool_medsynth"], seed=v["seed"])
            print(f"{name}: {data!r}", flush=True)
        res = pretrain_simclr(
            data,
            backbone=v["backbone"],
            backbone_kwargs=v["kwargs"],
            config=cfg,
            out=Path(a.work) / f"{name}.ckpt.safetensors",
            device=a.device,
            progress=False,
        )
        wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        losses = [h["loss"] for h in res.history if "loss" in h]
        save_backbone(target, res.encoder.cpu(), metadata={"variant": name, "epochs": v["epochs"]})
        log.data[name] = {**v, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "final_loss": losses[-1]}
        log.save()
        print(f"{name}: {len(losses)} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}, {wall:.0f} s", flush=True)
    log.finish()
