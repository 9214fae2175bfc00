"""Look at augmentation views: each row an image, the original first, then ``n_views`` random views."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from torch import Tensor

from medmeta_lib.data.augment import ViewAugment
from medmeta_lib.viz.data_plots import _show

__all__ = ["views_figure"]


def views_figure(images: Tensor, augment: ViewAugment, *, n_views: int = 6, cell: float = 1.3) -> Figure:
    """Grid of augmented views: row ``i`` shows ``images[i]``, then ``n_views`` views of it.

    The views come from ``augment`` (its random state advances, as in training).

    Args:
        images: ``(B, C, H, W)`` in [0, 1]; keep B small (one row each).
        augment: the augmenter to look at.
        n_views: views per image.
        cell: size of one panel, inches.

    Example:
        >>> import torch
        >>> fig = views_figure(torch.rand(2, 1, 28, 28), ViewAugment(image_size=28), n_views=3)
        >>> len(fig.axes)
        8
    """
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] < 1:
        raise ValueError("images must be a non-empty tensor (B, C, H, W) in [0, 1]")
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 1:
        raise ValueError(f"n_views must be a positive int, got {n_views!r}")
    views = [augment(images) for _ in range(n_views)]
    rows = images.shape[0]
    fig, axes = plt.subplots(rows, n_views + 1, figsize=(cell * (n_views + 1), cell * rows + 0.4), squeeze=False)
    for i in range(rows):
        _show(axes[i, 0], images[i], "nearest")
        for j, v in enumerate(views):
            _show(axes[i, j + 1], v[i], "nearest")
    axes[0, 0].set_title("original", fontsize=8)
    for j in range(n_views):
        axes[0, j + 1].set_title(f"view {j + 1}", fontsize=8)
    fig.suptitle(f"{augment.preset} views" + (" + scanner shift" if augment.scanner_shift else ""), fontsize=9)
    fig.tight_layout()
    return fig
