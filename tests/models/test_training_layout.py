from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medmeta_lib.models.backbones import create_backbone
from medmeta_lib.models.training_layout import training_layout
from medmeta_lib.ssl.ntxent import nt_xent_loss
from medmeta_lib.ssl.simclr import projection_head


def _relus(net: nn.Module) -> list[nn.ReLU]:
    return [m for m in net.modules() if type(m) is nn.ReLU]


def _loss_and_grads(net: nn.Module, x: torch.Tensor, *, layout: bool) -> tuple[float, dict[str, torch.Tensor]]:
    with training_layout(net, channels_last=layout, inplace_relu=layout) as prepare:
        loss = nt_xent_loss(*net(prepare(x)).chunk(2), temperature=0.2)
        loss.backward()
    return loss.item(), {n: p.grad.contiguous() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(
    ("backbone", "norm", "channels"), [("conv4", "group", 1), ("conv4", "batch", 3), ("resnet12", "group", 1)]
)
def test_training_in_the_layout_computes_what_the_default_layout_computes(
    backbone: str, norm: str, channels: int
) -> None:
    torch.manual_seed(0)
    size = {"hidden": 8} if backbone == "conv4" else {"widths": (4, 4, 8, 8)}
    enc = create_backbone(backbone, in_channels=channels, norm=norm, **size)
    net = nn.Sequential(enc, projection_head(int(enc.out_features), 16, 8))  # type: ignore[arg-type]
    twin = copy.deepcopy(net)
    x = torch.rand(16, channels, 28, 28)
    (fast, g_fast), (plain, g_plain) = _loss_and_grads(net, x, layout=True), _loss_and_grads(twin, x, layout=False)
    assert fast == pytest.approx(plain, rel=1e-6)
    assert g_fast.keys() == g_plain.keys() and len(g_fast) == len(list(net.parameters()))
    # the same gradients, to float32 rounding: every difference within 1e-4 of the largest gradient (up to
    # 3.4e-5 seen over five seeds per case). An absolute bound on that scale, not a relative one: biases before
    # a norm have a zero gradient in exact arithmetic, so their own scale is rounding noise
    scale = max(float(g.abs().max()) for g in g_plain.values())
    for name, g in g_fast.items():
        torch.testing.assert_close(g, g_plain[name], rtol=0.0, atol=1e-4 * scale, msg=name)
    for name, p in net.named_parameters():
        assert p.is_contiguous(), f"{name} left channels-last after the block"
    assert not any(r.inplace for r in _relus(net)), "ReLUs restored to out-of-place"


def test_conv4_and_projection_relus_run_in_place_inside_the_block() -> None:
    enc = create_backbone("conv4", in_channels=1, hidden=8, norm="group")
    net = nn.Sequential(enc, projection_head(int(enc.out_features), 16, 8))  # type: ignore[arg-type]
    with training_layout(net) as prepare:
        assert [r.inplace for r in _relus(net)] == [True] * 5  # four blocks and the projection MLP
        assert net[0].features[0].weight.is_contiguous(memory_format=torch.channels_last)
        assert prepare(torch.rand(2, 3, 4, 4)).is_contiguous(memory_format=torch.channels_last)
        assert prepare(torch.rand(2, 3)).shape == (2, 3)  # not an image batch: unchanged


def test_relus_whose_input_someone_else_may_read_stay_out_of_place() -> None:
    hooked = nn.Conv2d(1, 2, 3)
    hooked.register_forward_hook(lambda *_: None)  # a hook may keep the conv's output: it must stay intact
    net = nn.Sequential(
        nn.ReLU(),  # first in its Sequential: its input is the caller's tensor
        nn.Conv2d(1, 1, 3),
        nn.Identity(),
        nn.ReLU(),  # after Identity: the conv's output reaches it unchanged, but Identity is not on the list
        hooked,
        nn.ReLU(),  # after a hooked layer
        nn.Conv2d(2, 2, 1),
        nn.LeakyReLU(),  # other activations are never touched
        nn.Conv2d(2, 2, 1),
        nn.ReLU(),  # the one safe ReLU
    )
    with training_layout(net):
        assert [m.inplace for m in net if isinstance(m, (nn.ReLU, nn.LeakyReLU))] == [False, False, False, False, True]
    assert not any(m.inplace for m in net if isinstance(m, (nn.ReLU, nn.LeakyReLU)))


def test_the_module_is_restored_when_the_block_raises() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with pytest.raises(RuntimeError, match="boom"), training_layout(net):
        raise RuntimeError("boom")
    assert net[0].weight.is_contiguous() and not net[1].inplace


def test_rejects_what_is_not_a_module() -> None:
    with pytest.raises(ValueError, match=r"nn\.Module"), training_layout("conv4"):  # type: ignore[arg-type]
        pass
