from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from medmeta_lib.models import CosineHead, LinearHead


def test_linear_head_is_affine_and_named_like_linear() -> None:
    torch.manual_seed(0)
    head = LinearHead(5, 3)
    x = torch.randn(4, 5)
    torch.testing.assert_close(head(x), x @ head.weight.T + head.bias)
    assert dict(head.named_parameters()).keys() == {"weight", "bias"}
    # same initialisation as nn.Linear under the same seed
    torch.manual_seed(1)
    ref = nn.Linear(5, 3)
    torch.manual_seed(1)
    torch.testing.assert_close(LinearHead(5, 3).weight, ref.weight)
    no_bias = LinearHead(5, 3, bias=False)
    assert no_bias.bias is None and [n for n, _ in no_bias.named_parameters()] == ["weight"]
    torch.testing.assert_close(no_bias(x), x @ no_bias.weight.T)


def test_linear_head_functional_call() -> None:
    head = LinearHead(2, 2)
    params = {"weight": torch.eye(2), "bias": torch.tensor([1.0, -1.0])}
    out = functional_call(head, params, (torch.tensor([[2.0, 3.0]]),))
    assert out.tolist() == [[3.0, 2.0]]


def test_cosine_head_is_scaled_cosine() -> None:
    torch.manual_seed(0)
    head = CosineHead(6, 4, scale=5.0)
    x = torch.randn(3, 6)
    expected = 5.0 * F.cosine_similarity(x[:, None, :], head.weight[None, :, :], dim=-1)
    torch.testing.assert_close(head(x), expected)
    # invariant to the feature norm, bounded by the scale
    torch.testing.assert_close(head(7.0 * x), head(x))
    assert head(x).abs().max() <= 5.0 + 1e-5
    # a feature pointing along a class weight gets the maximal logit for that class
    logits = head(head.weight[2:3].detach() * 3)
    assert logits.argmax().item() == 2 and logits[0, 2].item() == pytest.approx(5.0, abs=1e-5)
    assert head.scale == pytest.approx(5.0)


def test_cosine_head_zero_features_are_finite() -> None:
    out = CosineHead(4, 2)(torch.zeros(2, 4))
    assert torch.isfinite(out).all()


def test_cosine_head_scale_learning() -> None:
    fixed = CosineHead(4, 2, scale=10.0)
    assert [n for n, _ in fixed.named_parameters()] == ["weight"]
    assert "log_scale" in fixed.state_dict()  # a buffer: saved, not trained
    learned = CosineHead(4, 2, scale=10.0, learn_scale=True)
    assert {n for n, _ in learned.named_parameters()} == {"weight", "log_scale"}
    loss = F.cross_entropy(learned(torch.randn(8, 4)), torch.randint(0, 2, (8,)))
    loss.backward()
    assert learned.log_scale.grad is not None and torch.isfinite(learned.log_scale.grad)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"in_features": 0, "n_classes": 2}, "in_features"),
        ({"in_features": 4, "n_classes": 0}, "n_classes"),
        ({"in_features": 4, "n_classes": 2, "scale": 0.0}, "scale"),
        ({"in_features": 4, "n_classes": 2, "scale": float("inf")}, "scale"),
    ],
)
def test_head_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CosineHead(**kwargs)
    if "scale" not in kwargs:
        with pytest.raises(ValueError, match=field):
            LinearHead(**kwargs)
