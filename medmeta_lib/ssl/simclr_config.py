"""The hyper-parameters of SimCLR pretraining, validated when they are set.

:class:`SimCLRConfig` is shared by the training loop (:mod:`medmeta_lib.ssl.simclr`) and the positive-pair
builder (:mod:`medmeta_lib.ssl.views`), which is why it has a module of its own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from medmeta_lib.data.augment import PRESETS, ViewAugment

__all__ = ["SimCLRConfig"]


def _int(name: str, value: Any, lo: int, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"SimCLRConfig.{name} must be an int >= {lo} ({hint}), got {value!r}")


def _pos(name: str, value: Any, hint: str, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"SimCLRConfig.{name} must be a finite number {bound} ({hint}), got {value!r}")


@dataclass
class SimCLRConfig:
    """Hyper-parameters of :func:`pretrain_simclr` (all validated on construction).

    Attributes:
        epochs: passes over the collection; the cosine schedule spans ``epochs`` epochs.
        batch_size: images per step (``2 × batch_size`` views); capped at the collection size;
            the last incomplete batch of an epoch is dropped.
        lr: AdamW peak learning rate.
        weight_decay: AdamW decoupled weight decay.
        temperature: NT-Xent temperature.
        proj_dim: output size of the projection head.
        proj_hidden: hidden size of the projection head.
        site_invariance: positives that differ in acquisition (MedSynth restyle or scanner shift).
        site_views: how those positives are made: ``"auto"`` (MedSynth: re-render the patient at another
            site, which needs each image's class label, so the pretraining is then *not* label-free;
            other data: scanner shift), or ``"scanner_shift"`` (the simulated scanner change on any
            data: label-free).
        augment_preset: ``ViewAugment`` preset (e.g. ``"chest_xray"``, ``"generic"``).
        augment_kwargs: extra ``ViewAugment`` arguments (e.g. ``{"scale": (0.6, 1.0)}``).
        monitor_every: run the kNN / linear-probe monitor every this many epochs (and at the end).
        seed: seeds the initial weights, the image order and the views.
        checkpoint_every: write the checkpoint every this many epochs (and at the end).
        max_steps: stop after this many steps in total (``None``: run all epochs). The schedule
            still spans ``epochs``, so a capped run resumed later matches an uncapped one.
        warmup_steps: linear learning-rate warm-up steps before the cosine decay (0 = none).

    Example:
        >>> SimCLRConfig(epochs=2, batch_size=64).temperature
        0.2
    """

    epochs: int = 30
    batch_size: int = 256
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    proj_dim: int = 128
    proj_hidden: int = 256
    site_invariance: bool = False
    site_views: str = "auto"
    augment_preset: str = "chest_xray"
    augment_kwargs: dict[str, Any] = field(default_factory=dict)
    monitor_every: int = 5
    seed: int = 0
    checkpoint_every: int = 1
    max_steps: int | None = None
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        _int("epochs", self.epochs, 1, "passes over the data")
        _int("batch_size", self.batch_size, 2, "NT-Xent needs negatives; 128-512 is typical")
        _pos("lr", self.lr, "AdamW learning rate, e.g. 2e-3")
        _pos("weight_decay", self.weight_decay, "AdamW weight decay, e.g. 1e-4", allow_zero=True)
        _pos("temperature", self.temperature, "NT-Xent temperature, typically 0.1-0.5")
        _int("proj_dim", self.proj_dim, 1, "projection output size, e.g. 128")
        _int("proj_hidden", self.proj_hidden, 1, "projection hidden size, e.g. 256")
        if not isinstance(self.site_invariance, bool):
            raise ValueError(f"SimCLRConfig.site_invariance must be True or False, got {self.site_invariance!r}")
        if self.site_views not in ("auto", "scanner_shift"):
            raise ValueError(
                f"SimCLRConfig.site_views must be 'auto' or 'scanner_shift' (label-free), got {self.site_views!r}"
            )
        if self.augment_preset not in PRESETS:
            raise ValueError(
                f"SimCLRConfig.augment_preset must be one of {sorted(PRESETS)}, got {self.augment_preset!r}"
            )
        if not isinstance(self.augment_kwargs, dict) or {"preset", "image_size", "seed"} & set(self.augment_kwargs):
            raise ValueError(
                "SimCLRConfig.augment_kwargs must be a dict of ViewAugment arguments other than preset, "
                f"image_size and seed (those come from the config), got {self.augment_kwargs!r}"
            )
        ViewAugment(preset=self.augment_preset, image_size=8, **self.augment_kwargs)  # validates the arguments
        _int("monitor_every", self.monitor_every, 1, "epochs between monitor evaluations")
        _int("seed", self.seed, 0, "random seed")
        _int("checkpoint_every", self.checkpoint_every, 1, "epochs between checkpoints")
        if self.max_steps is not None:
            _int("max_steps", self.max_steps, 1, "a step cap for smoke runs, or None")
        _int("warmup_steps", self.warmup_steps, 0, "linear warm-up steps, 0 for none")

    def to_json(self) -> dict[str, Any]:
        """The config as a JSON-friendly dict (tuples become lists)."""
        d = asdict(self)
        d["augment_kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.augment_kwargs.items()}
        return d
