"""One registry and one factory for feature extractors ("backbones"), timm-style.

Every backbone maps images ``(B, C, H, W)`` to features ``(B, out_features)`` and carries

* ``out_features: int``: the feature size, and
* ``spec: dict``: ``{"name": name, "kwargs": {"in_channels": ..., **kw}}`` (JSON-serialisable), so a
  checkpoint can rebuild it with ``create_backbone(spec["name"], **spec["kwargs"])``.

Normalisation never keeps running statistics: meta-learners differentiate through the backbone
with ``torch.func`` (``functional_call`` + ``grad``, second order), where an in-place update of a
running-mean buffer is an error. ``norm="batch"`` is therefore a
:class:`~medmeta_lib.models.task_norm.TaskBatchNorm2d`: ``BatchNorm2d(track_running_stats=False)`` that by
itself normalises with the statistics of whatever batch it sees ("transductive batch norm"), and under
``record_norm_stats`` / ``use_norm_stats`` records a context set's statistics and reuses them, which is
how learners and probes predict inductively (see ``task_norm``). ``"group"``, ``"instance"`` and
``"none"`` are per-sample alternatives.

Registered names: ``conv4`` (Vinyals et al. 2016 / Finn et al. 2017), ``resnet12`` (Lee et al. 2019,
Tian et al. 2020; narrow by default for CPUs), ``monai_resnet18`` (``monai.networks.nets.resnet18``
for 64 px and larger inputs).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from torch import Tensor, nn

from medmeta_lib.models.norm_layers import check_norm, make_norm, replace_norm
from medmeta_lib.models.pooling import MaxPool2x2

__all__ = ["count_parameters", "create_backbone", "list_backbones", "register_backbone", "resolve_backbone_kwargs"]

F = TypeVar("F", bound=Callable[..., nn.Module])


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable[[F], F]:
    """Decorator that registers a backbone factory ``f(in_channels=1, **kw) -> nn.Module`` under ``name``.

    The factory must return a module with an integer ``out_features`` attribute; ``create_backbone``
    adds ``spec``.

    Example:
        >>> @register_backbone("tiny_mlp")  # doctest: +SKIP
        ... def tiny_mlp(in_channels: int = 1, *, size: int = 28) -> nn.Module: ...
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_backbone: name must be a non-empty string, got {name!r}")

    def deco(factory: F) -> F:
        if name in _REGISTRY and _REGISTRY[name] is not factory:
            raise ValueError(f"backbone {name!r} is already registered; pick another name")
        _REGISTRY[name] = factory
        return factory

    return deco


def list_backbones() -> list[str]:
    """Return the registered backbone names, sorted.

    Example:
        >>> "conv4" in list_backbones()
        True
    """
    return sorted(_REGISTRY)


def _factory(name: str) -> Callable[..., nn.Module]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r}; registered backbones: {', '.join(list_backbones())}")
    return _REGISTRY[name]


def _jsonable(value: Any) -> Any:
    """Tuples → lists (what a JSON round trip gives), recursively, so specs compare equal after loading."""
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def create_backbone(name: str, in_channels: int = 1, **kw: Any) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: registered name (``list_backbones()``).
        in_channels: image channels (1 for greyscale modalities).
        **kw: the backbone's own keyword arguments (e.g. ``hidden``, ``norm``, ``widths``).

    Returns:
        A module mapping ``(B, C, H, W)`` to ``(B, out_features)``, with ``out_features`` and ``spec``.

    Raises:
        ValueError: unknown name, or an invalid keyword argument.

    Example:
        >>> import torch
        >>> net = create_backbone("conv4", hidden=32)
        >>> net(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 32])
        >>> net.spec
        {'name': 'conv4', 'kwargs': {'in_channels': 1, 'hidden': 32}}
    """
    factory = _factory(name)
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int (1 for greyscale, 3 for RGB), got {in_channels!r}")
    try:
        inspect.signature(factory).bind(in_channels, **kw)
    except TypeError as err:
        allowed = [p for p in inspect.signature(factory).parameters if p != "in_channels"]
        raise ValueError(f"backbone {name!r}: {err}; its keyword arguments are {allowed}") from None
    net = factory(in_channels, **kw)
    out = getattr(net, "out_features", None)
    if isinstance(out, bool) or not isinstance(out, int) or out < 1:
        raise ValueError(f"backbone factory {name!r} must set an integer out_features on its module, got {out!r}")
    spec = {"name": name, "kwargs": {"in_channels": in_channels, **_jsonable(kw)}}
    net.spec = spec  # type: ignore[assignment]
    return net


def resolve_backbone_kwargs(name: str, **kw: Any) -> dict[str, Any]:
    """Return ``kw`` with every default of the factory filled in (JSON form: tuples as lists).

    Two specs build the same architecture exactly when their resolved kwargs are equal, e.g.
    ``conv4`` with ``{}`` and with ``{"hidden": 64}``.

    Example:
        >>> resolve_backbone_kwargs("conv4", hidden=32)["norm"]
        'batch'
    """
    sig = inspect.signature(_factory(name))
    try:
        bound = sig.bind(**kw)
    except TypeError as err:
        raise ValueError(f"backbone {name!r}: {err}") from None
    bound.apply_defaults()
    return _jsonable(dict(bound.arguments))


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module`` (shared parameters counted once).

    Example:
        >>> count_parameters(nn.Linear(3, 2))
        8
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------- Conv-4


class Conv4(nn.Module):
    """Four blocks of [3×3 conv, norm, ReLU, 2×2 max-pool], then global average pooling or flattening.

    Only the first ``pools`` blocks max-pool; the others end in ``nn.Identity`` so that the layer names
    (``features.3``, ``features.7``, ...) are the same for every ``pools``.
    """

    def __init__(
        self, in_channels: int, hidden: int, norm: str, pool: str, image_size: int | None, pools: int = 4
    ) -> None:  # fmt: skip
        super().__init__()
        blocks: list[nn.Module] = []
        c = in_channels
        for i in range(4):
            down: nn.Module = MaxPool2x2() if i < pools else nn.Identity()
            blocks += [nn.Conv2d(c, hidden, 3, padding=1), make_norm(norm, hidden), nn.ReLU(), down]
            c = hidden
        self.features = nn.Sequential(*blocks)
        self.pool = pool
        self.image_size = image_size
        if pool == "avg":
            self.out_features = hidden
        else:
            assert image_size is not None
            side = image_size
            for _ in range(pools):
                side //= 2
            self.out_features = hidden * side * side

    def forward(self, x: Tensor) -> Tensor:
        """Features ``(B, out_features)``."""
        h = self.features(x)
        if self.pool == "avg":
            return h.mean(dim=(-2, -1))
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(
                f"conv4 with pool='flatten' was built for image_size={self.image_size}, got "
                f"{tuple(x.shape[-2:])} images; resize them or use pool='avg'"
            )
        return h.flatten(1)


@register_backbone("conv4")
def conv4(
    in_channels: int = 1,
    *,
    hidden: int = 64,
    norm: str = "batch",
    pool: str = "avg",
    image_size: int | None = None,
    pools: int = 4,
) -> nn.Module:
    """Conv-4 (Vinyals et al. 2016; Finn et al. 2017): 4 × [3×3 conv ``hidden``, norm, ReLU, 2×2 max-pool].

    Args:
        in_channels: image channels.
        hidden: channels of every conv layer.
        norm: one of ``NORMS``.
        pool: ``"avg"`` (global average pooling, ``out_features = hidden``, any image size) or
            ``"flatten"`` (``out_features = hidden · (image_size // 2**pools)²``; needs ``image_size``).
        image_size: square input side; required for (and only used with) ``pool="flatten"``.
        pools: how many blocks, from the first, end in the 2×2 max-pool (0-4). At 28 px the default 4 gives
            maps of 28 → 14 → 7 → 3 → 1 (the odd sides drop their last row and column); ``pools=2`` keeps
            the last two blocks at 7 × 7 for about 18 % more multiply-adds.

    Example:
        >>> import torch
        >>> conv4(1, hidden=16)(torch.zeros(1, 1, 28, 28)).shape
        torch.Size([1, 16])
        >>> conv4(1, hidden=16, pools=2).features(torch.zeros(1, 1, 28, 28)).shape
        torch.Size([1, 16, 7, 7])
    """
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"conv4: hidden must be a positive int (channels per layer, e.g. 64), got {hidden!r}")
    check_norm(norm)
    if pool not in ("avg", "flatten"):
        raise ValueError(f"conv4: pool must be 'avg' or 'flatten', got {pool!r}")
    if isinstance(pools, bool) or not isinstance(pools, int) or not 0 <= pools <= 4:
        raise ValueError(f"conv4: pools must be an int in 0..4 (blocks that end in a 2×2 max-pool), got {pools!r}")
    if pool == "flatten":
        least = 2**pools
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < least:
            raise ValueError(
                f"conv4: pool='flatten' needs image_size (an int ≥ {least}, the input side), got {image_size!r}"
            )
    return Conv4(in_channels, hidden, norm, pool, image_size, pools)


# ---------------------------------------------------------------- ResNet-12


class _ResBlock12(nn.Module):
    """3 × [3×3 conv, norm, LeakyReLU(0.1)] with a 1×1-conv shortcut, then 2×2 max-pool."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.norm1 = make_norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = make_norm(norm, cout)
        self.conv3 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm3 = make_norm(norm, cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), make_norm(norm, cout))
        self.act = nn.LeakyReLU(0.1)
        self.pool = MaxPool2x2()

    def forward(self, x: Tensor) -> Tensor:
        """One residual stage; halves the spatial size."""
        h = self.act(self.norm1(self.conv1(x)))
        h = self.act(self.norm2(self.conv2(h)))
        h = self.norm3(self.conv3(h))
        return self.pool(self.act(h + self.shortcut(x)))


class ResNet12(nn.Module):
    """Four ``_ResBlock12`` stages and global average pooling."""

    def __init__(self, in_channels: int, widths: Sequence[int], norm: str) -> None:
        super().__init__()
        stages, c = [], in_channels
        for w in widths:
            stages.append(_ResBlock12(c, w, norm))
            c = w
        self.stages = nn.Sequential(*stages)
        self.out_features = int(widths[-1])

    def forward(self, x: Tensor) -> Tensor:
        """Features ``(B, widths[-1])``."""
        return self.stages(x).mean(dim=(-2, -1))


@register_backbone("resnet12")
def resnet12(in_channels: int = 1, *, widths: Sequence[int] = (32, 64, 128, 256), norm: str = "batch") -> nn.Module:
    """ResNet-12 (Lee et al. 2019, MetaOptNet; Tian et al. 2020), without DropBlock.

    Args:
        in_channels: image channels.
        widths: channels of the four stages; the literature uses (64, 160, 320, 640), the default is
            narrower so it trains on a CPU.
        norm: one of ``NORMS``.

    Example:
        >>> import torch
        >>> resnet12(1, widths=(8, 8, 16, 16))(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 16])
    """
    ws = list(widths) if isinstance(widths, (list, tuple)) else None
    if ws is None or len(ws) != 4 or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in ws):
        raise ValueError(f"resnet12: widths must be 4 positive ints (e.g. (32, 64, 128, 256)), got {widths!r}")
    check_norm(norm)
    return ResNet12(in_channels, ws, norm)


# ---------------------------------------------------------------- MONAI ResNet-18


@register_backbone("monai_resnet18")
def monai_resnet18(
    in_channels: int = 1, *, norm: str = "batch", widen_factor: float = 1.0, conv1_stride: int = 1
) -> nn.Module:
    """``monai.networks.nets.resnet18`` (2-D), classifier removed, norms replaced by ``make_norm(norm)``.

    Meant for 64 px and larger inputs (7×7 stem, max-pool and three stride-2 stages: 32× downsampling
    with ``conv1_stride=2``, 16× with 1).

    Args:
        in_channels: image channels.
        norm: one of ``NORMS`` (MONAI's BatchNorm layers are replaced by ``replace_norm``).
        widen_factor: channel multiplier (1.0 gives 512 features; 0.25 a CPU-friendly 128).
        conv1_stride: stride of the 7×7 stem (MONAI's default 1; 2 is the ImageNet ResNet).

    Example:
        >>> import torch
        >>> monai_resnet18(1, widen_factor=0.25)(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 128])
    """
    check_norm(norm)
    if isinstance(widen_factor, bool) or not isinstance(widen_factor, (int, float)) or not 0 < widen_factor <= 4:
        raise ValueError(f"monai_resnet18: widen_factor must be in (0, 4] (channel multiplier), got {widen_factor!r}")
    if int(64 * widen_factor) < 1:
        raise ValueError(f"monai_resnet18: widen_factor={widen_factor} leaves no channels; use ≥ 1/64")
    if conv1_stride not in (1, 2):
        raise ValueError(f"monai_resnet18: conv1_stride must be 1 or 2, got {conv1_stride!r}")
    from monai.networks.nets import resnet18  # here: importing MONAI takes seconds

    net = resnet18(
        spatial_dims=2,
        n_input_channels=in_channels,
        feed_forward=False,
        widen_factor=float(widen_factor),
        conv1_t_stride=conv1_stride,
        act=("relu", {"inplace": False}),  # in-place activations and torch.func transforms do not mix well
    )
    replace_norm(net, norm)
    net.out_features = int(net.in_planes)  # type: ignore[assignment]  # MONAI leaves in_planes at the last stage's width
    return net
