"""Small image files with known pixels, for the loader tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

__all__ = ["expected_pixels", "png", "ramp"]


def ramp(h: int = 12, w: int = 12, *, flip: bool = False) -> np.ndarray:
    """A diagonal grey ramp (``flip``: mirrored left to right), uint8, so orientation errors show."""
    a = np.add.outer(np.arange(h), np.arange(w)).astype(np.float64)
    a = (a / a.max() * 255).astype(np.uint8)
    return a[:, ::-1].copy() if flip else a


def png(path: Path, arr: np.ndarray) -> Path:
    """Save ``arr`` as a PNG at ``path`` (folders made); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def expected_pixels(arr: np.ndarray) -> torch.Tensor:
    """What a loader should return for ``arr``: its pixels min-max scaled to [0, 1]."""
    x = torch.from_numpy(arr.astype(np.float32))
    return (x - x.min()) / (x.max() - x.min())
