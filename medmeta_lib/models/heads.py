"""Classification heads on top of backbone features: linear, and cosine (Baseline++).

Both keep their parameters under the names ``weight`` (``(n_classes, in_features)``) and, for the
linear head, ``bias``, like ``nn.Linear``, so learners can address them in ``functional_call``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CosineHead", "LinearHead"]


def _check_dims(cls: str, in_features: int, n_classes: int) -> None:
    if isinstance(in_features, bool) or not isinstance(in_features, int) or in_features < 1:
        raise ValueError(
            f"{cls}: in_features must be a positive int (the backbone's out_features), got {in_features!r}"
        )
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 1:
        raise ValueError(f"{cls}: n_classes must be a positive int, got {n_classes!r}")


class LinearHead(nn.Module):
    """Affine classifier ``logits = features @ weight.T + bias`` (``nn.Linear`` initialisation).

    Args:
        in_features: feature size.
        n_classes: number of classes.
        bias: learn a bias.

    Example:
        >>> LinearHead(64, 5)(torch.zeros(3, 64)).shape
        torch.Size([3, 5])
    """

    def __init__(self, in_features: int, n_classes: int, *, bias: bool = True) -> None:
        super().__init__()
        _check_dims("LinearHead", in_features, n_classes)
        self.in_features, self.n_classes = in_features, n_classes
        lin = nn.Linear(in_features, n_classes, bias=bias)
        self.weight = lin.weight
        self.bias: nn.Parameter | None
        self.register_parameter("bias", lin.bias)

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``(B, n_classes)``."""
        return F.linear(features, self.weight, self.bias)

    def extra_repr(self) -> str:
        """Shown by ``repr``."""
        return f"in_features={self.in_features}, n_classes={self.n_classes}, bias={self.bias is not None}"


class CosineHead(nn.Module):
    """Cosine-similarity classifier of Baseline++ (Chen et al. 2019, "A Closer Look at Few-shot Classification").

    ``logits = scale · cos(features, weight rows)``: each class is a direction, and the scale (a
    temperature) makes the softmax sharp enough to train. Chen et al.'s code (CloserLookFewShot's
    ``distLinear``) fixes the scale by the number of classes, not the backbone: 2 for at most 200
    classes, 10 above. Baseline++ here defaults to 10; 2 against 10 has not been measured here.

    Args:
        in_features: feature size.
        n_classes: number of classes.
        scale: logit scale (> 0).
        learn_scale: learn the scale as well (stored as its logarithm, so it stays positive).

    Example:
        >>> head = CosineHead(64, 5, scale=10.0)
        >>> float(head(torch.randn(4, 64)).detach().abs().max()) <= 10.0 + 1e-5
        True
    """

    def __init__(self, in_features: int, n_classes: int, *, scale: float = 10.0, learn_scale: bool = False) -> None:
        super().__init__()
        _check_dims("CosineHead", in_features, n_classes)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"CosineHead: scale must be a positive finite number (e.g. 10), got {scale!r}")
        self.in_features, self.n_classes = in_features, n_classes
        self.weight = nn.Parameter(nn.Linear(in_features, n_classes, bias=False).weight.detach().clone())
        log_scale = torch.tensor(math.log(float(scale)))
        if learn_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def scale(self) -> float:
        """Current logit scale."""
        return float(self.log_scale.detach().exp())

    def forward(self, features: Tensor) -> Tensor:
        """Logits ``(B, n_classes)`` in ``[-scale, scale]``."""
        cos = F.normalize(features, dim=-1, eps=1e-8) @ F.normalize(self.weight, dim=-1, eps=1e-8).T
        return self.log_scale.exp() * cos

    def extra_repr(self) -> str:
        """Shown by ``repr``."""
        learn = isinstance(self.log_scale, nn.Parameter)
        return (
            f"in_features={self.in_features}, n_classes={self.n_classes}, scale={self.scale:.3g}, learn_scale={learn}"
        )
