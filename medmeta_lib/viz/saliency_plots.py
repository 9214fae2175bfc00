"""Saliency before vs after adaptation, overlaid on the images.

The maps come from :func:`medmeta_lib.studies.saliency.saliency_before_after` (gradient × input or
MONAI occlusion sensitivity); its result can be passed straight in:
``saliency_figure(**saliency_before_after(learner, episode))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from medmeta_lib.viz.data_plots import _show

__all__ = ["saliency_figure", "saliency_overlay"]

_WHAT = {
    "gradient": "gradient × input of log p(true class)",
    "occlusion": "drop in p(true class) when the region is hidden (occlusion)",
}


def _steps(n: int) -> str:
    return f"{n} step" + ("" if n == 1 else "s")


def _as_2d(maps: torch.Tensor | np.ndarray, method: str) -> np.ndarray:
    """``(B, C, H, W)`` maps → ``(B, H, W)``: channels summed (gradient) or the shared channel (occlusion)."""
    a = np.asarray(maps.detach().cpu() if isinstance(maps, torch.Tensor) else maps, dtype=np.float64)
    if a.ndim == 3:
        return a
    if a.ndim != 4:
        raise ValueError(f"maps must be (B, C, H, W) or (B, H, W), got shape {a.shape}")
    return a[:, 0] if method == "occlusion" else a.sum(1)


def saliency_overlay(ax: Any, image: torch.Tensor, saliency: np.ndarray, *, vmax: float, alpha: float = 0.75) -> Any:
    """Draw ``image`` in grey with a diverging saliency map on top (opacity grows with ``|saliency|``).

    Red marks evidence *for* the class, blue evidence against it; near-zero values stay transparent.
    Returns the image artist (for a colour bar).

    Example:
        >>> fig, ax = plt.subplots()
        >>> art = saliency_overlay(ax, torch.full((1, 8, 8), 0.5), np.linspace(-1, 1, 64).reshape(8, 8), vmax=1.0)
        >>> len(ax.images), art.get_cmap().name, float(art.get_alpha().max())  # the grey image, then the map
        (2, 'RdBu_r', 0.75)
        >>> plt.close(fig)
    """
    _show(ax, image)
    norm = Normalize(-vmax, vmax)
    opacity = np.clip(np.abs(saliency) / vmax, 0, 1) ** 0.7 * alpha
    return ax.imshow(saliency, cmap="RdBu_r", norm=norm, alpha=opacity, interpolation="bilinear")


def saliency_figure(
    images: torch.Tensor,
    before_maps: torch.Tensor | np.ndarray,
    after_maps: torch.Tensor | np.ndarray,
    *,
    labels: torch.Tensor | Sequence[int] | None = None,
    pred_before: torch.Tensor | Sequence[int] | None = None,
    conf_before: torch.Tensor | Sequence[float] | None = None,
    pred_after: torch.Tensor | Sequence[int] | None = None,
    conf_after: torch.Tensor | Sequence[float] | None = None,
    method: str = "gradient",
    steps_before: int = 0,
    steps_after: int | None = None,
    class_names: Sequence[str] | None = None,
    alpha: float = 0.75,
    n_way: int | None = None,
) -> Figure:
    """Columns are images; rows are the image, its saliency before adaptation and after.

    Before and after maps of one image share a colour scale (so they can be compared), symmetric
    around zero; a map that is exactly zero (a uniform prediction, e.g. a zero-initialised head
    before any step) is labelled "no class evidence".

    Args:
        images: ``(B, C, H, W)`` images in ``[0, 1]``.
        before_maps: maps of the un-adapted (or ``steps_before``) model, the images' shape.
        after_maps: maps of the adapted model.
        labels: true labels (titles of the top row).
        pred_before: predicted labels before adaptation.
        conf_before: their probabilities.
        pred_after: predicted labels after adaptation.
        conf_after: their probabilities.
        method: ``"gradient"`` or ``"occlusion"`` (how channels are combined; the caption).
        steps_before: adaptation steps of the "before" model (row label).
        steps_after: adaptation steps of the "after" model (row label).
        class_names: names of the episode's classes (label ``j`` → ``class_names[j]``).
        alpha: maximum opacity of the overlay.
        n_way: classes in the task (to mark a uniform prediction); default ``len(class_names)``.

    Example:
        >>> saliency_figure(**saliency_before_after(maml, episode, method="gradient"))  # doctest: +SKIP
    """
    before, after = _as_2d(before_maps, method), _as_2d(after_maps, method)
    n = images.shape[0]
    if before.shape != after.shape or before.shape != (n, *images.shape[-2:]):
        raise ValueError(
            f"maps must match the images: images {tuple(images.shape)}, before {before.shape}, after {after.shape}"
        )
    names = [str(c).split("/")[-1] for c in class_names] if class_names else None
    n_way = n_way or (len(class_names) if class_names else None)

    def name(j: Any) -> str:
        j = int(j)
        return names[j] if names and j < len(names) else f"class {j}"

    fig, axes = plt.subplots(3, n, figsize=(1.55 * n + 1.6, 5.0), squeeze=False)
    artist = None
    vmax_all = 0.0
    for i in range(n):
        vmax = float(np.percentile(np.abs(np.concatenate([before[i].ravel(), after[i].ravel()])), 99.5))
        vmax = vmax if vmax > 1e-12 else 1.0
        vmax_all = max(vmax_all, vmax)
        _show(axes[0, i], images[i])
        if labels is not None:
            axes[0, i].set_title(f"true: {name(labels[i])}", fontsize=8)
        for r, (maps, pred, conf) in enumerate(((before, pred_before, conf_before), (after, pred_after, conf_after))):
            ax = axes[r + 1, i]
            artist = saliency_overlay(ax, images[i], maps[i], vmax=vmax, alpha=alpha)
            if np.abs(maps[i]).max() < 1e-4 * vmax:  # flat next to the other map: a uniform prediction
                ax.text(0.5, 0.5, "no class\nevidence", transform=ax.transAxes, ha="center", va="center",
                        fontsize=7, color="white", bbox={"facecolor": "black", "alpha": 0.55, "pad": 2})  # fmt: skip
            if pred is not None:
                p = int(pred[i])
                uniform = conf is not None and n_way is not None and abs(float(conf[i]) - 1 / n_way) < 1e-4
                wrong = labels is not None and p != int(labels[i]) and not uniform
                txt = ("uniform" if uniform else name(p)) + ("" if conf is None else f" {float(conf[i]):.0%}")
                ax.set_title(txt, fontsize=8, color="#6e7781" if uniform else "#d62728" if wrong else "#1a7f37")
    axes[0, 0].set_ylabel("image", rotation=0, ha="right", va="center", fontsize=9)
    axes[1, 0].set_ylabel("before\n" + ("(initial)" if steps_before == 0 else f"({_steps(steps_before)})"),
                          rotation=0, ha="right", va="center", fontsize=9)  # fmt: skip
    after_lbl = "(adapted)" if steps_after is None else f"({_steps(steps_after)})"
    axes[2, 0].set_ylabel("after\n" + after_lbl, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"saliency: {_WHAT.get(method, method)} — red = for the true class, blue = against", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.93, 0.95))
    if artist is not None:
        cax = fig.add_axes((0.945, 0.12, 0.012, 0.5))
        cb = fig.colorbar(plt.cm.ScalarMappable(norm=Normalize(-1, 1), cmap="RdBu_r"), cax=cax)
        cb.set_ticks([-1, 0, 1])
        cb.set_ticklabels(["against", "0", "for"])
        cb.ax.tick_params(labelsize=7)
    return fig
