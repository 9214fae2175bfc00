"""Positive pairs for contrastive pretraining: two augmentations, or the same patient at another hospital.

Site-invariant pretraining asks the encoder to map one patient imaged by two scanners to the same
point. On MedSynth data that pair is exact: :meth:`MedSynth.restyle` re-acquires the patient at another
site (this reads the image's class label: the renderer draws the patient from it). Elsewhere, or with
``site_views="scanner_shift"``, a simulated scanner shift stands in for it (label-free). Every view is a
pure function of ``(seed, step)`` (and the rank under torchrun), so a resumed pretraining sees the views
an uninterrupted one would have seen.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medmeta_lib.data.augment import ViewAugment
from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.ssl.simclr_config import SimCLRConfig

__all__ = ["ContrastiveViews"]


def _step_seed(seed: int, stream: int, n: int, *shard: int) -> int:
    return int(np.random.default_rng([seed, stream, n, *shard]).integers(2**62))


def _medsynth_for(collection: ImageCollection) -> Any | None:
    """The MedSynth that made ``collection`` (for restyle), or None for other sources."""
    info = collection.meta.get("medsynth")
    if not isinstance(info, dict) or not isinstance(collection.meta.get("medsynth_key"), torch.Tensor):
        return None
    from medmeta_lib.data.synthetic import MedSynth

    return MedSynth(modalities=info["modalities"], n_sites=int(info["n_sites"]))


class ContrastiveViews:
    """The two views of a batch for contrastive pretraining, a pure function of ``(seed, step, shard)``.

    Modes (:attr:`mode`): ``"augment"`` (two random augmentations of each image), ``"restyle"``
    (site-invariant positives on MedSynth data: the second view is the same patient re-rendered at
    another of the collection's own sites, then augmented) and ``"scanner_shift"`` (site invariance on
    other data: the second view gets a simulated scanner change). A site the collection lacks (a
    hospital held out for testing) is never used.

    Args:
        collection: the images to pretrain on.
        cfg: a :class:`~medmeta_lib.ssl.simclr_config.SimCLRConfig` (``seed``, ``augment_preset``,
            ``augment_kwargs``, ``site_invariance`` are read).
        shard: ``(rank, world_size)`` under torchrun, so that ranks draw different views; ``()`` alone.

    Example:
        >>> from medmeta_lib.data import load_collection
        >>> from medmeta_lib.ssl.simclr_config import SimCLRConfig
        >>> col = load_collection("synthetic", image_size=16, n_per_class_site=1)
        >>> views = ContrastiveViews(col, SimCLRConfig(site_invariance=True))
        >>> v1, v2 = views(torch.arange(4), step=0)
        >>> views.mode, tuple(v2.shape)
        ('restyle', (4, 1, 16, 16))
    """

    def __init__(self, collection: ImageCollection, cfg: SimCLRConfig, shard: tuple[int, ...] = ()) -> None:
        size, kw = collection.image_size, cfg.augment_kwargs
        self.collection, self.seed, self.shard = collection, cfg.seed, shard  # shard: (rank, world) or ()
        self.aug = ViewAugment(preset=cfg.augment_preset, image_size=size, **kw)
        restyle = cfg.site_invariance and getattr(cfg, "site_views", "auto") == "auto"
        self.synth = _medsynth_for(collection) if restyle else None
        # restyle only to sites this collection holds: a site held out for testing must not leak its
        # acquisition style into pretraining through the positive pairs
        self.sites = torch.unique(collection.sites) if collection.sites is not None else torch.zeros(1)
        if self.synth is not None and len(self.sites) < 2:
            self.synth = None  # one site: nothing to restyle to, fall back to the scanner shift
        self.shift = None
        if cfg.site_invariance and self.synth is None:
            self.shift = ViewAugment(preset=cfg.augment_preset, image_size=size, **{**kw, "scanner_shift": True})

    @property
    def mode(self) -> str:
        """``"restyle"``, ``"scanner_shift"`` or ``"augment"`` (see the class docstring)."""
        return "restyle" if self.synth is not None else "scanner_shift" if self.shift is not None else "augment"

    def __call__(self, idx: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views ``(B, C, H, W)`` of images ``idx`` of the collection at training ``step``."""
        x = self.collection.images[idx]
        self.aug.reset(_step_seed(self.seed, 1, step, *self.shard))
        v1 = self.aug(x)
        if self.synth is not None:
            assert self.collection.sites is not None
            g = torch.Generator().manual_seed(_step_seed(self.seed, 2, step, *self.shard))
            n = len(self.sites)  # another of the collection's own sites, uniformly
            own = torch.searchsorted(self.sites, self.collection.sites[idx])
            other = self.sites[(own + torch.randint(1, n, (len(idx),), generator=g)) % n]
            return v1, self.aug(self.synth.restyle(self.collection, idx, other))
        if self.shift is not None:
            self.shift.reset(_step_seed(self.seed, 3, step, *self.shard))
            return v1, self.shift(x)
        return v1, self.aug(x)
