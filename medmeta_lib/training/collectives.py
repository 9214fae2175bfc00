"""Collective operations of a distributed run: gradient and statistic all-reduces, broadcasts, gathers, DDP.

Each call is a no-op (or the identity) in one process, so the training loops call them unconditionally;
under ``torchrun`` a collective that fails because another rank died becomes a clear ``RuntimeError``
that says how to resume (see :mod:`medmeta_lib.training.distributed` for the session and sharding).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from medmeta_lib.training.distributed import collective, get_rank, get_world_size, is_distributed

__all__ = [
    "all_reduce_gradients",
    "all_reduce_mean",
    "broadcast_module",
    "evaluate_sharded",
    "gather_views",
    "wrap_ddp",
]


def evaluate_sharded(learner: Any, episodes: Sequence[Any]) -> tuple[float, float]:
    """Mean accuracy and 95% CI over ``episodes``, each rank adapting to every ``W``-th episode.

    The per-episode accuracies are gathered back into the original order, so the result equals
    ``evaluate_learner(learner, episodes)``'s ``(acc_mean, acc_ci95)`` in one process.

    Example:
        >>> acc, ci = evaluate_sharded(learner, val_episodes)  # doctest: +SKIP
    """
    from medmeta_lib.evaluation.episodic import evaluate_learner
    from medmeta_lib.evaluation.intervals import mean_ci

    rank, world = get_rank(), get_world_size()
    mine = [episodes[i] for i in range(rank, len(episodes), world)]
    accs = evaluate_learner(learner, mine).per_episode_acc if mine else []
    if world == 1:
        return mean_ci(accs)
    parts: list[Any] = [None] * world
    with collective("gathering validation accuracies"):
        dist.all_gather_object(parts, accs)
    return mean_ci([parts[i % world][i // world] for i in range(len(episodes))])


# ----------------------------------------------------------------------------- reductions
def all_reduce_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Replace every gradient by its mean over ranks (one flat SUM all-reduce, then ``/ W``).

    Parameters without a gradient contribute zeros and keep ``grad=None`` (they have none on any
    rank: which parameters get gradients depends on the learner, not on the data).

    Example:
        >>> all_reduce_gradients(learner.parameters())  # between backward and optimizer.step  # doctest: +SKIP
    """
    if not is_distributed():
        return
    params = [p for p in parameters if p.requires_grad]
    if not params:
        return
    dtypes = {p.dtype for p in params}
    if len(dtypes) > 1:
        raise ValueError(f"all_reduce_gradients needs parameters of one dtype, got {sorted(map(str, dtypes))}")
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    with collective("the gradient all-reduce"):
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= get_world_size()
    offset = 0
    for p in params:
        n = p.numel()
        if p.grad is not None:
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
        offset += n


def all_reduce_mean(values: Mapping[str, float]) -> dict[str, float]:
    """Mean of scalar statistics (loss, accuracy) over ranks; unchanged in one process.

    Example:
        >>> all_reduce_mean({"loss": 1.5})
        {'loss': 1.5}
    """
    if not is_distributed():
        return dict(values)
    keys = list(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    with collective("averaging the step statistics"):
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module`` (in place).

    Example:
        >>> broadcast_module(learner)  # doctest: +SKIP
    """
    if not is_distributed():
        return
    with collective("broadcasting the initial weights"), torch.no_grad():
        for t in module.state_dict().values():
            dist.broadcast(t, src)


def gather_views(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split this rank's projections ``[view 1; view 2]`` into the global ``(z1, z2)`` of all ranks.

    Args:
        z: ``(2b, D)``: the first views of this rank's ``b`` images, then their second views.

    Every rank then computes the same global loss; the backward pass sums the ranks' gradients of
    the gathered tensor, so after DDP's averaging each parameter gets exactly the gradient of the
    global loss.

    Returns:
        ``(z1, z2)``, each ``(W·b, D)`` in global image order (rank 0's images first), with gradient;
        in one process simply ``(z[:b], z[b:])``.

    Example:
        >>> z1, z2 = gather_views(torch.randn(8, 16))
        >>> z1.shape
        torch.Size([4, 16])
    """
    if z.ndim != 2 or z.shape[0] % 2:
        raise ValueError(f"gather_views expects (2b, D) projections (both views stacked), got {tuple(z.shape)}")
    b = z.shape[0] // 2
    if is_distributed():
        # torch's differentiable all-gather: its backward returns each rank the summed gradient of its
        # own rows (reduce-scatter on NCCL, all-to-all + sum on gloo, which has no reduce-scatter)
        from torch.distributed.nn.functional import all_gather

        with collective("gathering NT-Xent projections"):
            z = torch.cat(all_gather(z.contiguous()))
    g = z.unflatten(0, (get_world_size(), 2, b))  # (rank, view, image, D)
    return g[:, 0].flatten(0, 1), g[:, 1].flatten(0, 1)


def wrap_ddp(module: nn.Module) -> nn.Module:
    """``DistributedDataParallel(module)`` in a process group (rank 0's weights are broadcast), else ``module``.

    Example:
        >>> wrap_ddp(nn.Linear(2, 2))
        Linear(in_features=2, out_features=2, bias=True)
    """
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    with collective("wrapping the model in DistributedDataParallel"):
        return DistributedDataParallel(module)
