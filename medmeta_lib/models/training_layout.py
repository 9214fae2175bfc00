"""A faster memory layout for training a convolutional network: channels-last tensors and in-place ReLUs.

On CPU, PyTorch's oneDNN convolutions and its max-pooling kernel run faster on channels-last (NHWC)
tensors, and an in-place ReLU saves allocating (and zero-filling the gradient of) one activation map per
block. For SimCLR's Conv-4-64 step (512 views at 28 px, two threads) the two together cut the time per
step from 382 to 275 ms, and a whole ``pretrain_simclr`` run by 1.5x (``bench/bench_ssl.py``, BENCHMARKS.md
section 1). Both change only where numbers live in memory, not
what is computed: the results agree with the default layout to float rounding.

:func:`training_layout` applies both for the duration of a ``with`` block and restores the module
afterwards, so a saved or returned network is in the default layout with its original modules.

A ReLU is made in-place only where that is provably safe: it is an element of an ``nn.Sequential`` right
after a convolution, linear or normalisation layer (whose output nothing else reads, and whose backward
pass does not need its output) that has no forward hooks. Every other activation is left alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise

import torch
from torch import Tensor, nn

__all__ = ["training_layout"]

# layers that return a fresh tensor and whose backward pass reads their input, not their output
_SAFE_BEFORE_INPLACE = (
    nn.modules.conv._ConvNd,
    nn.Linear,
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)


def _inplace_candidates(module: nn.Module) -> list[nn.ReLU]:
    found: list[nn.ReLU] = []
    for seq in module.modules():
        if not isinstance(seq, nn.Sequential):
            continue
        for prev, act in pairwise(seq.children()):
            if (
                type(act) is nn.ReLU
                and not act.inplace
                and isinstance(prev, _SAFE_BEFORE_INPLACE)
                and not prev._forward_hooks
                and not act._forward_pre_hooks
            ):
                found.append(act)
    return found


@contextmanager
def training_layout(
    module: nn.Module, *, channels_last: bool = True, inplace_relu: bool = True
) -> Iterator[Callable[[Tensor], Tensor]]:
    """Train ``module`` in a channels-last layout with in-place ReLUs; restore it on exit.

    Args:
        module: the network being trained (changed in place while the block runs, restored after).
        channels_last: store 4-D parameters, and the inputs passed through the yielded function, as
            channels-last.
        inplace_relu: make the ReLUs that can safely run in place do so (see the module docstring).

    Yields:
        A function that puts an input batch in the matching layout (the identity for non-4-D tensors or
        when ``channels_last`` is off).

    Raises:
        ValueError: ``module`` is not an ``nn.Module``.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.ReLU())
        >>> with training_layout(net) as prepare:
        ...     net[2].inplace, net(prepare(torch.rand(2, 1, 8, 8))).shape
        (True, torch.Size([2, 4, 6, 6]))
        >>> net[2].inplace, net[0].weight.is_contiguous()
        (False, True)
    """
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be an nn.Module, got {type(module).__name__}")
    relus = _inplace_candidates(module) if inplace_relu else []
    for act in relus:
        act.inplace = True
    if channels_last:
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # runtime-supported, not in the stubs

    def prepare(x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x

    try:
        yield prepare
    finally:
        for act in relus:
            act.inplace = False
        if channels_last:
            module.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
