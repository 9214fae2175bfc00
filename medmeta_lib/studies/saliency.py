"""Saliency maps of adapted learners: gradient × input (SmoothGrad) and occlusion, before and after adaptation.

Core module (no plotting): :func:`saliency_before_after` returns the keyword arguments of
:func:`medmeta_lib.viz.saliency_plots.saliency_figure`.

* :func:`gradient_x_input` — gradient × input of each image's target log-probability (optionally SmoothGrad).
* :func:`occlusion_map` — probability drop under a sliding occluding window (MONAI ``OcclusionSensitivity``).
* :func:`saliency_before_after` — the same query images explained before and after adapting to the support.

Batch statistics: predictors are inductive by default (batch norms use the support set's statistics,
docs/evaluation.md), so an image's prediction does not depend on its batch and the batched computation
is used. A transductive predictor (``transductive=True``) normalises with the batch's own statistics;
saliency is then computed *in context*: each image's map is the sensitivity of its own prediction while
the rest of its batch is unchanged (detected automatically).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmeta_lib.data.episodes import Episode
from medmeta_lib.learners.base import Learner, Predictor, check_int

__all__ = ["SALIENCY_METHODS", "gradient_x_input", "occlusion_map", "saliency_before_after"]

SALIENCY_METHODS = ("gradient", "occlusion")


def _batch_independent(predictor: Predictor, x: Tensor) -> bool:
    """True when an image's logits do not depend on the rest of its batch (no batch statistics)."""
    if x.shape[0] < 2:
        return True
    with torch.no_grad():
        alone = predictor(x[:1])
        together = predictor(x)[:1]
    return bool(torch.allclose(alone, together, rtol=1e-4, atol=1e-5))


def _targets(predictor: Predictor, x: Tensor, target: Tensor | int | None) -> Tensor:
    if target is None:
        return predictor.predict_proba(x).argmax(-1)
    t = torch.as_tensor(target, dtype=torch.long, device=x.device)
    t = t.expand(x.shape[0]) if t.ndim == 0 else t
    if t.shape != (x.shape[0],):
        raise ValueError(f"target must be one class or one per image ({x.shape[0]}), got shape {tuple(t.shape)}")
    return t


def _rows(rows: Sequence[int] | Tensor | None, n: int) -> list[int]:
    return list(range(n)) if rows is None else [int(r) for r in rows]


def gradient_x_input(
    predictor: Predictor,
    images: Tensor,
    *,
    target: Tensor | int | None = None,
    rows: Sequence[int] | Tensor | None = None,
    samples: int = 0,
    noise: float = 0.1,
    seed: int = 0,
) -> Tensor:
    """Gradient × input of each image's log-probability of its target class (optionally SmoothGrad).

    ``map = x ⊙ ∂ log p_t(x) / ∂x``: positive where the pixel's value pushes the prediction towards
    class ``t`` (relative to the other classes), negative where it pushes away, exactly zero where
    the input is zero. With ``samples > 0`` the gradient is averaged over that many noisy copies of
    the images (SmoothGrad, Smilkov et al. 2017), which removes most pixel-level speckle.
    Hand-written (a few lines of autograd) rather than ``captum``, which the workbench does not
    depend on; MONAI's ``GradCAM`` needs a spatial feature map, and Conv4's last map at 28 px is 1×1.

    Args:
        predictor: an adapted model (``learner.adapt(...)[0]``).
        images: ``(B, C, H, W)``; with batch statistics the batch is the context of each image.
        target: class per image (``(B,)``), one class for all, or ``None`` for the predicted class.
        rows: explain only these images of the batch (the others stay as context); default all.
        samples: noisy copies for SmoothGrad (0: the plain gradient).
        noise: SmoothGrad noise standard deviation, as a fraction of the images' intensity range.
        seed: seed of the SmoothGrad noise.

    Returns:
        Maps with the images' shape, ``(len(rows), C, H, W)``, finite.

    Example:
        >>> pred, _ = learner.adapt(ep.support_x, ep.support_y)  # doctest: +SKIP
        >>> gradient_x_input(pred, ep.query_x, target=ep.query_y).shape  # doctest: +SKIP
        torch.Size([75, 1, 28, 28])
    """
    samples = check_int("samples", samples, 0)
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise must be a number >= 0 (a fraction of the intensity range), got {noise!r}")
    base = images.detach()
    t = _targets(predictor, base, target)
    sel = _rows(rows, base.shape[0])
    independent = _batch_independent(predictor, base)
    g = torch.Generator(device=base.device).manual_seed(seed)
    scale = float(noise) * float(base.max() - base.min())
    inputs = [base] if samples == 0 else [
        base + scale * torch.randn(base.shape, generator=g, device=base.device, dtype=base.dtype)
        for _ in range(samples)
    ]  # fmt: skip
    total = torch.zeros_like(base[sel])
    for xin in inputs:
        x = xin.clone().requires_grad_(True)
        with torch.enable_grad():
            logp = F.log_softmax(predictor(x), -1).gather(1, t[:, None]).squeeze(1)
            if independent:
                (grad,) = torch.autograd.grad(logp[sel].sum(), x)
                total += grad[sel]
            else:  # in context: image i's own output only (one forward, one backward per explained image)
                total += torch.stack([torch.autograd.grad(logp[i], x, retain_graph=True)[0][i] for i in sel])
    return torch.nan_to_num(total / len(inputs) * base[sel]).detach()


class _InContext(nn.Module):
    """``nn.Module`` view of a predictor for MONAI: occluded copies of image ``index`` scored in context."""

    def __init__(self, predictor: Predictor, context: Tensor, index: int, independent: bool) -> None:
        super().__init__()
        self.predictor, self.context, self.index, self.independent = predictor, context, index, independent

    def forward(self, x: Tensor) -> Tensor:
        if self.independent:
            return self.predictor(x)
        rows = []
        for r in range(x.shape[0]):
            batch = self.context.clone()
            batch[self.index] = x[r]
            rows.append(self.predictor(batch)[self.index])
        return torch.stack(rows)


def occlusion_map(
    predictor: Predictor,
    images: Tensor,
    *,
    target: Tensor | int | None = None,
    rows: Sequence[int] | Tensor | None = None,
    mask_size: int | None = None,
    overlap: float = 0.67,
    mode: str = "gaussian",
) -> Tensor:
    """Occlusion sensitivity: how much the target class probability drops when a patch is hidden.

    Uses ``monai.visualize.OcclusionSensitivity`` (a sliding occluding window) and returns
    ``p_t(x) - p_t(x with the patch around each pixel occluded)``: positive where hiding the region
    lowers the confidence (evidence for ``t``). Two MONAI details are handled here: its default
    activation picks sigmoid or softmax from the *input* channel count (sigmoid for greyscale), so
    a softmax is passed explicitly; and it scores occluded copies in batches of their own, which
    batch statistics would distort, so each copy is scored inside the original batch (one forward
    of the whole batch per window position: about 1.4 s per image for Conv4-32 on 24 images of
    28 px on one CPU thread; per-sample norms are detected and batched instead).

    Args:
        predictor: an adapted model.
        images: ``(B, C, H, W)``, also the context for batch statistics.
        target: class per image, one class, or ``None`` for the predicted class.
        rows: explain only these images of the batch (the others stay as context); default all.
        mask_size: occluding window side in pixels (default: a quarter of the image side, >= 3).
        overlap: overlap of successive windows, in ``[0, 1)``.
        mode: MONAI occlusion mode: ``"gaussian"``, ``"mean_img"`` or ``"mean_patch"``.

    Returns:
        Maps with the images' shape ``(len(rows), C, H, W)`` (one value for all channels), finite.

    Example:
        >>> occlusion_map(pred, ep.query_x, target=ep.query_y, rows=[0, 5]).shape  # doctest: +SKIP
        torch.Size([2, 1, 28, 28])
    """
    from monai.visualize import OcclusionSensitivity

    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        raise ValueError(f"overlap must be a number in [0, 1), got {overlap!r}")
    if mode not in ("gaussian", "mean_img", "mean_patch"):
        raise ValueError(f"mode must be 'gaussian', 'mean_img' or 'mean_patch', got {mode!r}")
    side = min(images.shape[-2:])
    mask = max(3, side // 4) if mask_size is None else check_int("mask_size", mask_size, 1)
    if mask > side:
        raise ValueError(f"mask_size={mask} is larger than the image side {side}; choose a smaller window")
    x = images.detach()
    t = _targets(predictor, x, target)
    independent = _batch_independent(predictor, x)
    with torch.no_grad():
        base = predictor(x).softmax(-1).gather(1, t[:, None]).squeeze(1)
    maps = []
    for i in _rows(rows, x.shape[0]):
        occ = OcclusionSensitivity(
            _InContext(predictor, x, i, independent),
            mask_size=mask,
            n_batch=64,
            verbose=False,
            mode=mode,
            overlap=float(overlap),
            activate=lambda o: o.softmax(1),
        )
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # MONAI's list-indexing deprecation notices
            sens, _ = occ(x[i : i + 1])
        maps.append(base[i] - torch.as_tensor(sens).as_subclass(Tensor)[0, int(t[i])])
    out = torch.stack(maps)[:, None].expand(-1, x.shape[1], -1, -1)
    return torch.nan_to_num(out.float()).contiguous()


def saliency_before_after(
    learner: Learner,
    episode: Episode,
    *,
    method: str = "gradient",
    steps_before: int = 0,
    steps_after: int | None = None,
    max_images: int = 6,
    **method_kw: Any,
) -> dict[str, Any]:
    """Saliency of the same query images before and after adapting to the episode's support.

    The maps explain the log-probability (gradient) or probability (occlusion) of each image's
    *true* class, each image scored inside the whole query set. Before adaptation a zero-initialised
    head (MAML, ANIL) or ProtoNet without prototypes predicts uniformly whatever the input, so its
    maps are exactly zero (no class evidence yet); ``steps_before=1`` shows the meta-learned
    features with a first head fitted.

    Args:
        learner: any learner.
        episode: the task; up to ``max_images`` query images are explained (spread over the classes).
        method: ``"gradient"`` (gradient × input) or ``"occlusion"``.
        steps_before: adaptation steps of the "before" model (0 = the initialisation).
        steps_after: steps of the "after" model (``None``: the learner's default).
        max_images: images to explain.
        **method_kw: passed to :func:`gradient_x_input` (``samples``, ``noise``: SmoothGrad) or
            :func:`occlusion_map` (``mask_size``, ``overlap``, ``mode``).

    Returns:
        Keyword arguments for :func:`medmeta_lib.viz.saliency_plots.saliency_figure`: ``images``,
        ``before_maps``, ``after_maps``, ``labels``, ``pred_before``, ``conf_before``,
        ``pred_after``, ``conf_after``, ``method``, ``steps_before``, ``steps_after``, ``n_way``.

    Example:
        >>> saliency_figure(**saliency_before_after(maml, episode, method="occlusion"))  # doctest: +SKIP
    """
    if method not in SALIENCY_METHODS:
        raise ValueError(f"method must be one of {SALIENCY_METHODS}, got {method!r}")
    max_images = check_int("max_images", max_images, 1)
    steps_before = check_int("steps_before", steps_before, 0)
    learner.set_n_way(episode.n_way)
    q, n = episode.q_query, episode.n_way
    sel = sorted([c * q + j for j in range(q) for c in range(n)][:max_images])  # round-robin over classes
    qx, qy = episode.query_x, episode.query_y
    before, _ = learner.adapt(episode.support_x, episode.support_y, steps=steps_before)
    after, tr = learner.adapt(episode.support_x, episode.support_y, steps=steps_after)
    out: dict[str, Any] = {
        "images": qx[sel],
        "labels": qy[sel],
        "method": method,
        "steps_before": steps_before,
        "steps_after": tr.steps[-1],
        "n_way": episode.n_way,
    }
    for key, pred in (("before", before), ("after", after)):
        if method == "gradient":
            out[f"{key}_maps"] = gradient_x_input(pred, qx, target=qy, rows=sel, **method_kw)
        else:
            out[f"{key}_maps"] = occlusion_map(pred, qx, target=qy, rows=sel, **method_kw)
        probs = pred.predict_proba(qx)[sel]
        out[f"pred_{key}"], out[f"conf_{key}"] = probs.argmax(-1), probs.max(-1).values
    return out
