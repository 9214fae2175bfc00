from __future__ import annotations

import math

import pytest
import torch
from monai.losses import ContrastiveLoss

from medmeta_lib.ssl.ntxent import nt_xent_loss


# MONAI turns the temperature into a float32 tensor, so float64 equality to 1e-10 needs temperatures
# that float32 represents exactly (0.5, 0.25, 0.125); 0.2 is compared in float32 below.
@pytest.mark.parametrize("temperature", [0.5, 0.25, 0.125])
@pytest.mark.parametrize("batch", [2, 7, 32])
def test_equals_monai_contrastive_loss(temperature: float, batch: int) -> None:
    g = torch.Generator().manual_seed(batch)
    z1 = torch.randn(batch, 16, generator=g, dtype=torch.float64)
    z2 = z1 + 0.5 * torch.randn(batch, 16, generator=g, dtype=torch.float64)
    ours = nt_xent_loss(z1, z2, temperature=temperature)
    # MONAI: forward(input=view 1, target=view 2); batch size is taken from the input (the
    # constructor's batch_size is deprecated), cosine similarity normalises internally.
    theirs = ContrastiveLoss(temperature=temperature)(z1, z2)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_equals_monai_float32_default_temperature() -> None:
    z1, z2 = torch.randn(64, 128), torch.randn(64, 128)
    torch.testing.assert_close(nt_xent_loss(z1, z2, temperature=0.2), ContrastiveLoss(temperature=0.2)(z1, z2))


def test_scale_invariant_like_monai() -> None:
    z1, z2 = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(nt_xent_loss(3 * z1, 0.1 * z2), nt_xent_loss(z1, z2))
    torch.testing.assert_close(
        nt_xent_loss(3 * z1, 0.1 * z2, temperature=0.25), ContrastiveLoss(temperature=0.25)(z1, z2)
    )


def test_hand_computed_values() -> None:
    e = torch.eye(2, dtype=torch.float64)
    # identical views: each anchor's positive has similarity 1, the other two candidates 0
    # loss = -log(e^{1/T} / (e^{1/T} + 2)) = log(1 + 2 e^{-1/T})
    for t in (0.5, 0.2):
        torch.testing.assert_close(nt_xent_loss(e, e, temperature=t).item(), math.log(1 + 2 * math.exp(-1 / t)))
    # swapped views: positive similarity 0, one negative with similarity 1, one with 0
    # loss = -log(1 / (1 + 1 + e^{1/T})) = log(2 + e^{1/T})
    swapped = e.flip(0)
    torch.testing.assert_close(nt_xent_loss(e, swapped, temperature=0.5).item(), math.log(2 + math.exp(2)))


def test_gradient_flows_and_low_temperature_is_finite() -> None:
    z1 = torch.randn(6, 4, requires_grad=True)
    z2 = torch.randn(6, 4)
    nt_xent_loss(z1, z2).backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all() and z1.grad.abs().sum() > 0
    # MONAI's exp(sim / T) overflows float32 at T = 0.005; the log-sum-exp form does not
    a = torch.randn(6, 5)
    assert torch.isfinite(nt_xent_loss(a, a, temperature=0.005))
    assert torch.isnan(ContrastiveLoss(temperature=0.005)(a, a))


def test_aligned_views_lower_loss() -> None:
    z = torch.randn(16, 8)
    assert nt_xent_loss(z, z + 0.01 * torch.randn(16, 8)) < nt_xent_loss(z, torch.randn(16, 8))


@pytest.mark.parametrize(
    ("z1", "z2", "kw", "match"),
    [
        (torch.randn(4, 3), torch.randn(5, 3), {}, "same B and D"),
        (torch.randn(4, 3, 2), torch.randn(4, 3, 2), {}, r"\(B, D\)"),
        (torch.randn(1, 3), torch.randn(1, 3), {}, "at least 2"),
        (torch.randn(4, 3), torch.randn(4, 3), {"temperature": 0.0}, "temperature"),
    ],
)
def test_errors(z1: torch.Tensor, z2: torch.Tensor, kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        nt_xent_loss(z1, z2, **kw)
