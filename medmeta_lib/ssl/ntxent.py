"""NT-Xent: the normalised temperature-scaled cross-entropy loss of SimCLR (Chen et al. 2020).

For a batch of ``B`` images seen through two views, the ``2B`` projections are L2-normalised and
every projection must pick out its partner among the other ``2B - 1`` (one positive, ``2B - 2``
negatives) through a softmax over cosine similarities divided by a temperature ``T``:

``ℓ_i = -log exp(s(i, p(i)) / T) / Σ_{j ≠ i} exp(s(i, j) / T)``, loss = mean of ``ℓ_i`` over ``2B``.

This is exactly what ``monai.losses.ContrastiveLoss`` computes (its ``forward(input, target)`` takes
the two views; the denominator includes the positive but not the anchor itself; the mean is over
``2B``; ``tests/ssl/test_ntxent.py`` checks the equality). It is written here instead of wrapping
MONAI because MONAI's version exponentiates similarities directly (``exp(s / T)``), which overflows
float32 for ``T`` below about 0.011 and loses precision at low temperature; this one goes through
``cross_entropy``'s log-sum-exp and stays finite.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["nt_xent_loss"]


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float = 0.2) -> torch.Tensor:
    """SimCLR NT-Xent loss of two batches of projections (row ``i`` of ``z1`` and ``z2`` are positives).

    Args:
        z1: ``(B, D)`` projections of the first views (need not be normalised).
        z2: ``(B, D)`` projections of the second views.
        temperature: softmax temperature ``T > 0``; SimCLR uses 0.1–0.5, smaller is sharper.

    Returns:
        The scalar mean loss over the ``2B`` anchors (differentiable).

    Raises:
        ValueError: for mismatched or non-2-D inputs, a batch smaller than 2, or ``temperature <= 0``.

    Example:
        >>> z = torch.randn(8, 16)
        >>> loss = nt_xent_loss(z, z + 0.01 * torch.randn(8, 16), temperature=0.2)
        >>> bool(loss < nt_xent_loss(z, torch.randn(8, 16), temperature=0.2))
        True
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (typically 0.1-0.5), got {temperature}")
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both have shape (B, D) with the same B and D, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    b = z1.shape[0]
    if b < 2:
        raise ValueError(f"NT-Xent needs a batch of at least 2 images (negatives), got batch size {b}")
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1, eps=1e-8)
    logits = (z @ z.T) / temperature
    eye = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye, float("-inf"))  # an anchor is never its own negative
    targets = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(logits, targets)
