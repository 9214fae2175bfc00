"""Inductive batch normalisation: statistics from a context set, frozen for prediction.

A ``BatchNorm2d`` without running statistics normalises every batch with *that batch's* mean and
variance, so an image's features depend on the images it is predicted with ("transductive batch
norm"). :class:`TaskBatchNorm2d` (what ``make_norm("batch")`` builds) behaves the same by default,
and adds two scoped modes, set with context managers:

* :func:`record_norm_stats` — each layer normalises with its batch statistics as usual and stores
  them (with their autograd graph) in a :class:`NormStats`;
* :func:`use_norm_stats` — each layer normalises with the stored statistics instead of its batch's.

Recording on a task's support set and then using the statistics for the queries is MetaBN, the
inductive baseline of TaskNorm (Bronskill et al. 2020, "TaskNorm: Rethinking Batch Normalization for
Meta-Learning"): the prediction for a query is a function of the support set and of that query alone.
Recording on unlabelled training images gives population statistics for a frozen encoder (what a
conventionally trained BatchNorm uses in eval mode). The statistics stay differentiable, so
meta-training can back-propagate a query loss through the support statistics (first and second
order; the mode is plain Python state, so it works inside ``torch.func.functional_call``).

Example:
    >>> import torch
    >>> bn = TaskBatchNorm2d(2)
    >>> support, query = torch.rand(5, 2, 4, 4), torch.rand(3, 2, 4, 4)
    >>> with record_norm_stats() as stats:
    ...     _ = bn(support)
    >>> with use_norm_stats(stats):
    ...     alone, together = bn(query[:1]), bn(query)[:1]
    >>> torch.allclose(alone, together)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

__all__ = [
    "NormStats",
    "TaskBatchNorm2d",
    "context_forward",
    "frozen_forward",
    "has_batch_stats",
    "record_norm_stats",
    "use_norm_stats",
]


@dataclass
class NormStats:
    """Per-layer ``(mean, var)`` of the batch-norm layers run under :func:`record_norm_stats`.

    Keyed by the layer object (layers are the same objects under ``functional_call``), so one
    ``NormStats`` serves one network; a layer run twice while recording keeps its last statistics.
    """

    stats: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.stats)

    def detach(self) -> NormStats:
        """A copy whose statistics are cut from the autograd graph (for frozen predictors).

        Example:
            >>> NormStats().detach().stats
            {}
        """
        return NormStats({k: (m.detach(), v.detach()) for k, (m, v) in self.stats.items()})


_MODE: ContextVar[tuple[str, NormStats] | None] = ContextVar("medmeta_norm_mode", default=None)


@contextmanager
def record_norm_stats() -> Iterator[NormStats]:
    """Run batch-norm layers on their batch statistics and record them (see the module docstring).

    Example:
        >>> with record_norm_stats() as stats:
        ...     _ = TaskBatchNorm2d(3)(torch.rand(4, 3, 2, 2))
        >>> len(stats)
        1
    """
    stats = NormStats()
    token = _MODE.set(("record", stats))
    try:
        yield stats
    finally:
        _MODE.reset(token)


@contextmanager
def use_norm_stats(stats: NormStats) -> Iterator[None]:
    """Normalise with the recorded ``stats`` instead of each batch's own (see the module docstring).

    A :class:`TaskBatchNorm2d` without recorded statistics raises ``ValueError``: record them on a
    context set first (the same network, the same layers).

    Example:
        >>> bn = TaskBatchNorm2d(1)
        >>> with record_norm_stats() as s:
        ...     _ = bn(torch.rand(8, 1, 3, 3))
        >>> with use_norm_stats(s):
        ...     bn(torch.rand(1, 1, 3, 3)).shape
        torch.Size([1, 1, 3, 3])
    """
    if not isinstance(stats, NormStats):
        raise ValueError(f"use_norm_stats needs the NormStats of record_norm_stats(), got {type(stats).__name__}")
    token = _MODE.set(("use", stats))
    try:
        yield
    finally:
        _MODE.reset(token)


class TaskBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d(track_running_stats=False)`` that can record and reuse its statistics.

    Outside the context managers it is exactly PyTorch's layer (batch statistics in train and eval
    mode). Its parameters and state-dict keys are those of ``nn.BatchNorm2d``, so checkpoints are
    interchangeable.

    Args:
        num_features: channels.
        eps: added to the variance.

    Example:
        >>> TaskBatchNorm2d(4).track_running_stats
        False
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__(num_features, eps=eps, track_running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        """Normalise ``x`` ``(B, C, H, W)`` according to the current mode."""
        mode = _MODE.get()
        if mode is None or self.track_running_stats:
            return super().forward(x)
        kind, stats = mode
        if kind == "record":
            if x.shape[0] * x.shape[2] * x.shape[3] < 2:
                raise ValueError("TaskBatchNorm2d: recording statistics needs more than one value per channel")
            # two passes (mean, then the mean squared deviation) rather than torch.var_mean, which is
            # about 10x slower on CPU for (B, C, H, W) activations reduced over (0, 2, 3); same biased variance
            mean = x.mean(dim=(0, 2, 3))
            var = (x - mean[None, :, None, None]).square().mean(dim=(0, 2, 3))
            stats.stats[id(self)] = (mean, var)
            return super().forward(x)
        if id(self) not in stats.stats:
            raise ValueError(
                "TaskBatchNorm2d: no recorded statistics for this layer; run the same network on a context "
                "set under record_norm_stats() before use_norm_stats()"
            )
        mean, var = stats.stats[id(self)]
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def has_batch_stats(module: nn.Module) -> bool:
    """True when ``module`` contains a batch-norm layer that normalises with batch statistics.

    Only such networks make a prediction depend on the other images of its batch.

    Example:
        >>> has_batch_stats(nn.Sequential(nn.Conv2d(1, 2, 3), nn.GroupNorm(1, 2)))
        False
    """
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats for m in module.modules())


def context_forward(fn: Callable[[Tensor], Tensor], context: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``(fn(context), fn(targets))`` with the targets normalised by the context's statistics.

    Differentiable through the statistics (meta-training: context = support, targets = queries).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), TaskBatchNorm2d(2), nn.Flatten())
        >>> s, q = context_forward(net, torch.rand(4, 1, 5, 5), torch.rand(6, 1, 5, 5))
        >>> q.shape
        torch.Size([6, 18])
    """
    with record_norm_stats() as stats:
        out_context = fn(context)
    with use_norm_stats(stats):
        out_targets = fn(targets)
    return out_context, out_targets


def frozen_forward(fn: Callable[[Tensor], Tensor], context: Tensor) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """A function that runs ``fn`` with the (detached) statistics of ``context``, and ``fn(context)``.

    The returned function is batch-independent: an image gets the same output alone or in any batch.
    Gradients with respect to its *input* still flow (saliency maps).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), TaskBatchNorm2d(2), nn.Flatten())
        >>> f, _ = frozen_forward(net, torch.rand(4, 1, 5, 5))
        >>> x = torch.rand(7, 1, 5, 5)
        >>> torch.allclose(f(x[:1]), f(x)[:1], atol=1e-6)
        True
    """
    with torch.no_grad(), record_norm_stats() as stats:
        out_context = fn(context)
    frozen = stats.detach()

    def run(x: Tensor) -> Tensor:
        with use_norm_stats(frozen):
            return fn(x)

    return run, out_context
