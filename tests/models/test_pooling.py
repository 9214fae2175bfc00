"""2×2 max-pooling (``medmeta_lib.models.pooling``): the fast path equals PyTorch's kernel exactly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medmeta_lib.models.pooling import MaxPool2x2, max_pool_2x2


@pytest.mark.parametrize("side", [2, 7, 14, 28, 29])
def test_fast_path_equals_the_kernel_for_even_and_odd_sides(side: int) -> None:
    x = torch.randn(3, 4, side, side + 1)
    assert torch.equal(max_pool_2x2(x), F.max_pool2d(x, 2))
    with torch.no_grad():
        assert torch.equal(MaxPool2x2()(x), F.max_pool2d(x, 2))


def test_gradients_go_through_the_kernel_when_needed() -> None:
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    (g,) = torch.autograd.grad(MaxPool2x2()(x).sum(), x)
    (ref,) = torch.autograd.grad(F.max_pool2d(x, 2).sum(), x)
    assert torch.equal(g, ref)


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="H, W >= 2"):
        max_pool_2x2(torch.rand(1, 1, 1, 4))
