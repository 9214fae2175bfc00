"""What the second network wrote: a weight-generating learner's class weights against the class prototypes.

Core computation (no plotting) for notebook 04 and the ``AdaptationExplorer``: one forward pass of the
backbone and of the generator on (a part of) a task's support set. :func:`generated_head` keeps the
first ``k`` support images of each class, so sweeping ``k`` shows how the generated weights move as
support images are added or removed.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from medmeta_lib.learners.protonet import prototypes

__all__ = ["generated_head", "writes_weights"]


def writes_weights(learner: Any) -> bool:
    """True for learners whose second network writes the task head (they have ``generate``).

    Example:
        >>> writes_weights(object())
        False
    """
    return callable(getattr(learner, "generate", None))


def generated_head(learner: Any, support_x: Tensor, support_y: Tensor, *, k: int | None = None) -> dict[str, Any]:
    """The head a weight-generating learner writes for the first ``k`` support images per class.

    One forward pass of the backbone (normalised with the kept support images' statistics, as the
    learner predicts) and one of the generator.

    Args:
        learner: a learner with ``generate`` (e.g. ``create_learner("weightgen", ...)``).
        support_x: ``(N·K, C, H, W)`` support images.
        support_y: ``(N·K,)`` labels ``0..N-1``.
        k: images per class to keep (``None``: all); at least 1.

    Returns:
        ``{"k", "weights" (N, D), "bias" (N,), "prototypes" (N, D), "cosine" (N, N)}``; ``cosine[i, j]`` is the
        cosine similarity of class ``i``'s generated weight with class ``j``'s prototype (the mean support
        embedding).

    Example:
        >>> head = generated_head(weightgen, ep.support_x, ep.support_y, k=1)  # doctest: +SKIP
        >>> head["cosine"].diagonal()  # doctest: +SKIP
    """
    if not writes_weights(learner):
        raise ValueError(
            f"{getattr(learner, 'name', type(learner).__name__)} does not generate weights (no generate())"
        )
    n_way = int(support_y.max()) + 1
    per_class = [torch.nonzero(support_y == c).flatten() for c in range(n_way)]
    k_max = min(len(ix) for ix in per_class)
    if k is None:
        k = k_max
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= k_max:
        raise ValueError(f"k must be an int in 1..{k_max} (support images per class), got {k!r}")
    keep = torch.cat([ix[:k] for ix in per_class])
    sx, sy = support_x[keep], support_y[keep]
    if learner.n_way != n_way:
        learner.set_n_way(n_way)
    body = {n: p.detach() for n, p in learner.backbone.named_parameters()}
    backbone = learner.backbone
    _, emb = learner.frozen_embedder(lambda x: functional_call(backbone, body, (x,)), sx)
    with torch.no_grad():
        w, b = learner.generate(emb, sy)
        protos = prototypes(emb, sy, n_way)
        cos = F.normalize(w, dim=-1) @ F.normalize(protos, dim=-1).T
    return {"k": k, "weights": w.detach(), "bias": b.detach(), "prototypes": protos, "cosine": cos}
