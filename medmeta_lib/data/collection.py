"""``ImageCollection``: a labelled, site-annotated set of images, validated on construction.

Every data source (MedSynth, MedMNIST ``.npz``, image folders, CSV manifests) produces one of
these, and everything downstream (episodes, pretraining, evaluation) consumes it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["ImageCollection"]


def _as_tensor(value: Any, field_name: str, source: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise ValueError(
        f"{source}: field '{field_name}' must be a torch.Tensor or numpy array, got {type(value).__name__}"
    )


@dataclass(eq=False)
class ImageCollection:
    """Images with integer class labels and acquisition sites (hospitals / devices).

    Args:
        images: ``(N, C, H, W)`` float32 tensor (or array) with values in ``[0, 1]``.
        labels: ``(N,)`` integer class ids in ``0 .. len(class_names) - 1``.
        class_names: one name per class.
        sites: ``(N,)`` integer site ids in ``0 .. len(site_names) - 1``; ``None`` = one site.
        site_names: one name per site; ``None`` = ``("site0",)``.
        source: where the images came from (a source string or a file path); named in errors.
        class_modalities: optional modality per class (MedSynth), e.g. ``"chest_xray"``.
        split: ``"train"``, ``"val"``, ``"test"`` or another tag.
        allow_empty_classes: accept classes with no images (used for subsets).
        meta: extras; a tensor entry whose first dimension is N is per-image (``subset`` indexes it).

    Raises:
        ValueError: with the offending field and what to do, for a wrong shape, dtype, value
            range, NaN/Inf pixel, out-of-range label or site, or a class without images.

    Example:
        >>> c = ImageCollection(images=torch.rand(4, 1, 8, 8), labels=torch.tensor([0, 0, 1, 1]),
        ...                     class_names=("normal", "pneumonia"))
        >>> len(c), c.num_classes, c.image_size
        (4, 2, 8)
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: tuple[str, ...]
    sites: torch.Tensor | None = None
    site_names: tuple[str, ...] | None = None
    source: str = "memory"
    class_modalities: tuple[str, ...] | None = None
    split: str = "train"
    allow_empty_classes: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        src = self.source
        self.images = _as_tensor(self.images, "images", src)
        self.labels = _as_tensor(self.labels, "labels", src)
        self.class_names = tuple(str(c) for c in self.class_names)
        if self.images.ndim != 4:
            raise ValueError(
                f"{src}: field 'images' must have shape (N, C, H, W), got {tuple(self.images.shape)}; "
                "add a channel axis for greyscale images (images[:, None])"
            )
        if self.images.dtype != torch.float32:
            raise ValueError(
                f"{src}: field 'images' must be float32 in [0, 1], got {self.images.dtype}; "
                "convert uint8 images with images.float() / 255"
            )
        n = self.images.shape[0]
        if n == 0:
            raise ValueError(f"{src}: field 'images' is empty; the source holds no images")
        if self.images.shape[1] not in (1, 3):
            raise ValueError(
                f"{src}: field 'images' must have 1 or 3 channels, got {self.images.shape[1]}; "
                "drop alpha channels or convert to greyscale"
            )
        lo_t, hi_t = torch.aminmax(self.images)  # one pass; NaN propagates, so both checks cost one read
        lo, hi = float(lo_t), float(hi_t)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            bad = int((~torch.isfinite(self.images)).flatten(1).any(1).sum())
            raise ValueError(f"{src}: field 'images' holds NaN/Inf pixels in {bad} image(s); clean or drop them")
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"{src}: field 'images' must lie in [0, 1], found [{lo:.3g}, {hi:.3g}]; rescale (e.g. divide by 255)"
            )
        if self.labels.ndim == 2 and self.labels.shape[1] == 1:
            self.labels = self.labels[:, 0]
        if self.labels.ndim != 1 or self.labels.shape[0] != n:
            raise ValueError(
                f"{src}: field 'labels' must have shape ({n},) to match 'images', got {tuple(self.labels.shape)}; "
                "give exactly one integer class id per image"
            )
        if self.labels.dtype.is_floating_point or self.labels.dtype == torch.bool:
            raise ValueError(
                f"{src}: field 'labels' must hold integers, got {self.labels.dtype}; convert them with labels.long()"
            )
        self.labels = self.labels.long()
        k = len(self.class_names)
        if k == 0:
            raise ValueError(f"{src}: field 'class_names' is empty; give one name per class")
        if int(self.labels.min()) < 0 or int(self.labels.max()) >= k:
            raise ValueError(
                f"{src}: field 'labels' must lie in 0..{k - 1} (one per entry of 'class_names'), "
                f"found {int(self.labels.min())}..{int(self.labels.max())}; fix the labels or add the missing class "
                "names"
            )
        counts = torch.bincount(self.labels, minlength=k)
        if not self.allow_empty_classes and (counts == 0).any():
            empty = [self.class_names[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
            raise ValueError(f"{src}: class(es) {empty} have no images; remove them from 'class_names' or add images")
        if self.sites is None:
            self.sites = torch.zeros(n, dtype=torch.long)
        self.sites = _as_tensor(self.sites, "sites", src)
        if self.sites.ndim != 1 or self.sites.shape[0] != n:
            raise ValueError(
                f"{src}: field 'sites' must have shape ({n},), got {tuple(self.sites.shape)}; "
                "give one integer site id per image (or None for a single site)"
            )
        if self.sites.dtype.is_floating_point:
            raise ValueError(f"{src}: field 'sites' must hold integers, got {self.sites.dtype}")
        self.sites = self.sites.long()
        if self.site_names is None:
            self.site_names = tuple(f"site{i}" for i in range(int(self.sites.max()) + 1))
        self.site_names = tuple(str(s) for s in self.site_names)
        if int(self.sites.min()) < 0 or int(self.sites.max()) >= len(self.site_names):
            raise ValueError(
                f"{src}: field 'sites' must lie in 0..{len(self.site_names) - 1} (one per 'site_names'), "
                f"found {int(self.sites.min())}..{int(self.sites.max())}; fix the site ids or add the missing site "
                "names"
            )
        if self.class_modalities is not None:
            self.class_modalities = tuple(str(m) for m in self.class_modalities)
            if len(self.class_modalities) != k:
                raise ValueError(
                    f"{src}: field 'class_modalities' needs one entry per class ({k}), got {len(self.class_modalities)}"
                )

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        """Number of classes (entries of ``class_names``)."""
        return len(self.class_names)

    @property
    def num_sites(self) -> int:
        """Number of sites (entries of ``site_names``)."""
        assert self.site_names is not None
        return len(self.site_names)

    @property
    def channels(self) -> int:
        """Channels per image (1 = greyscale, 3 = RGB)."""
        return int(self.images.shape[1])

    @property
    def image_size(self) -> int:
        """Image height (collections hold square images)."""
        return int(self.images.shape[2])

    @property
    def modalities(self) -> tuple[str, ...]:
        """Distinct modalities in class order (``("unknown",)`` when not annotated)."""
        if self.class_modalities is None:
            return ("unknown",)
        return tuple(dict.fromkeys(self.class_modalities))

    def class_counts(self) -> torch.Tensor:
        """Images per class, shape ``(num_classes,)``."""
        return torch.bincount(self.labels, minlength=self.num_classes)

    def site_class_counts(self) -> torch.Tensor:
        """Images per (site, class), shape ``(num_sites, num_classes)``."""
        assert self.sites is not None
        flat = self.sites * self.num_classes + self.labels
        return torch.bincount(flat, minlength=self.num_sites * self.num_classes).view(self.num_sites, -1)

    def classes_of_modality(self, modality: str) -> list[int]:
        """Class ids whose modality is ``modality``."""
        if self.class_modalities is None:
            raise ValueError(f"{self.source}: this collection has no 'class_modalities'")
        if modality not in self.class_modalities:
            raise ValueError(f"unknown modality {modality!r}; available: {self.modalities}")
        return [i for i, m in enumerate(self.class_modalities) if m == modality]

    def fingerprint(self) -> str:
        """SHA-256 over images, labels and sites (first 16 hex digits): identifies the data."""
        assert self.sites is not None
        h = hashlib.sha256()
        h.update(str(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        h.update(self.labels.numpy().tobytes())
        h.update(self.sites.numpy().tobytes())
        return h.hexdigest()[:16]

    def subset(
        self, indices: Sequence[int] | torch.Tensor | np.ndarray, *, split: str | None = None
    ) -> ImageCollection:
        """Return the images at ``indices`` (class and site names are kept; classes may be empty).

        Example:
            >>> c = ImageCollection(images=torch.rand(4, 1, 8, 8), labels=torch.tensor([0, 0, 1, 1]),
            ...                     class_names=("a", "b"))
            >>> len(c.subset([0, 1]))
            2
        """
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        if idx.numel() == 0:
            raise ValueError(f"{self.source}: subset() got no indices")
        assert self.sites is not None
        return ImageCollection(
            images=self.images[idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            sites=self.sites[idx],
            site_names=self.site_names,
            source=self.source,
            class_modalities=self.class_modalities,
            split=self.split if split is None else split,
            allow_empty_classes=True,
            meta={
                k: (v[idx] if isinstance(v, torch.Tensor) and v.shape[:1] == (len(self),) else v)
                for k, v in self.meta.items()
            },
        )

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly summary: sizes, per-class and per-site counts."""
        assert self.sites is not None and self.site_names is not None
        return {
            "source": self.source,
            "split": self.split,
            "images": len(self),
            "image_size": self.image_size,
            "channels": self.channels,
            "classes": self.num_classes,
            "sites": self.num_sites,
            "modalities": list(self.modalities),
            "class_counts": dict(zip(self.class_names, self.class_counts().tolist(), strict=True)),
            "site_counts": dict(
                zip(self.site_names, torch.bincount(self.sites, minlength=self.num_sites).tolist(), strict=True)
            ),
        }

    def __repr__(self) -> str:
        return (
            f"ImageCollection(source={self.source!r}, split={self.split!r}, images={len(self)}, "
            f"size={self.channels}x{self.image_size}x{self.image_size}, classes={self.num_classes}, "
            f"sites={self.num_sites})"
        )
