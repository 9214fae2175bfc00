"""Distributed training on ``torch.distributed`` (launched by ``torchrun``), equivalent to one process.

Launch ``medmeta meta-train`` or ``medmeta pretrain`` unchanged under
``torchrun --nproc_per_node=N -m medmeta_lib.cli ...`` (see :func:`medmeta_lib.launch.torchrun_command`); the CLI calls
:func:`distributed_session`, which joins the process group that torchrun's environment variables
describe (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and does nothing in one process.

* **Meta-training** (``training.meta_train``). Every rank draws the *whole* global meta-batch of ``T``
  episodes from the identical seeded stream and materialises only its own contiguous slice of
  ``T / W`` episodes (:func:`shard_meta_batch`); each rank back-propagates the mean over its slice
  and the gradients are summed over ranks and divided by ``W`` (:func:`all_reduce_gradients`, one
  flat all-reduce per step), which is the gradient of ``(1/T) Σ_i L_i(θ)`` over the global batch.
  The episode stream therefore advances exactly as in one process, so a checkpoint does not depend
  on the world size: resume ``W=2 → 1`` and ``1 → 2`` both continue the same run.
* **SimCLR** (``ssl.simclr.pretrain_simclr``). The encoder and projection head run under DDP; each
  rank encodes ``B / W`` images of the global batch and the projections are all-gathered with
  gradient (:func:`gather_views`), so NT-Xent sees all ``2B - 2`` negatives of the global batch.
* **Rank 0 alone** writes checkpoints, logs and progress bars; every write is followed by a barrier
  (:func:`write_on_main`), and every rank resumes from the same file (``--out`` must be on a
  filesystem shared by all nodes; :func:`check_same_on_all_ranks` refuses a mismatch).
* **Failures** are clear ``ValueError`` / ``RuntimeError``: a world size that does not divide the
  meta-batch, a missing or unreachable rendezvous, a rank dying mid-run (the process group has a
  timeout, ``MEDMETA_DIST_TIMEOUT`` seconds, default 600, so nothing waits forever; checkpoint
  writes are atomic, so the last complete checkpoint stays loadable).

Example::

    torchrun --standalone --nproc_per_node=2 -m medmeta_lib.cli meta-train --learner protonet --out runs/dist
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "all_reduce_gradients",
    "all_reduce_mean",
    "barrier",
    "broadcast_module",
    "check_same_on_all_ranks",
    "check_world_divides",
    "distributed_session",
    "evaluate_sharded",
    "gather_views",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "shard_bounds",
    "shard_meta_batch",
    "wrap_ddp",
    "write_on_main",
]

#: environment variable with the process-group timeout in seconds
TIMEOUT_ENV = "MEDMETA_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
_RESUME_HINT = (
    "the last complete checkpoint is still loadable (writes are atomic): relaunch the same torchrun "
    "command to resume from it"
)


# ----------------------------------------------------------------------------- process group
def is_distributed() -> bool:
    """True inside an initialised process group of more than one rank.

    Example:
        >>> is_distributed()
        False
    """
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (0 outside a process group).

    Example:
        >>> get_rank()
        0
    """
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of ranks (1 outside a process group).

    Example:
        >>> get_world_size()
        1
    """
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0 (the only rank that writes files, logs and progress bars).

    Example:
        >>> is_main_process()
        True
    """
    return get_rank() == 0


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer (torchrun sets it)") from None


def _timeout(timeout_s: float | None) -> float:
    if timeout_s is None:
        raw = os.environ.get(TIMEOUT_ENV)
        try:
            timeout_s = float(raw) if raw else DEFAULT_TIMEOUT_S
        except ValueError:
            raise ValueError(f"{TIMEOUT_ENV}={raw!r} must be a number of seconds, e.g. 600") from None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < math.inf:
        raise ValueError(f"timeout_s must be a finite number of seconds > 0 (e.g. 600), got {timeout_s!r}")
    return float(timeout_s)


def init_distributed(*, backend: str = "gloo", timeout_s: float | None = None) -> tuple[int, int]:
    """Join the process group described by torchrun's environment; a no-op in a single process.

    Args:
        backend: ``"gloo"`` (CPU, any network) or ``"nccl"`` (CUDA tensors).
        timeout_s: seconds any collective (and the rendezvous) may wait before failing; ``None``:
            ``$MEDMETA_DIST_TIMEOUT`` or 600. A rank that dies makes the others fail within this time.

    Returns:
        ``(rank, world_size)``; ``(0, 1)`` when ``WORLD_SIZE`` is unset or 1.

    Raises:
        ValueError: a bad argument or malformed environment variable.
        RuntimeError: ``WORLD_SIZE > 1`` without ``RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT`` (a missing
            rendezvous), or the rendezvous was not reached within ``timeout_s``.

    Example:
        >>> init_distributed()  # without torchrun: one process
        (0, 1)
    """
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' (CPU) or 'nccl' (CUDA), got {backend!r}")
    timeout = _timeout(timeout_s)
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world = _env_int("WORLD_SIZE")
    if world is None or world == 1:
        return 0, 1
    if world < 1:
        raise ValueError(f"WORLD_SIZE={world} must be >= 1")
    rank = _env_int("RANK")
    if rank is None or not 0 <= rank < world:
        raise RuntimeError(
            f"WORLD_SIZE={world} is set but RANK={os.environ.get('RANK')!r} is not a rank in 0..{world - 1}; "
            "launch with torchrun (it sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT for every process)"
        )
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise RuntimeError(
            f"rank {rank}/{world}: no rendezvous: {' and '.join(missing)} not set. Launch with torchrun "
            "(--standalone on one machine, --rdzv_endpoint=HOST:PORT on several nodes) or export "
            "MASTER_ADDR and MASTER_PORT (the address of rank 0) on every process"
        )
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; install a build with distributed support")
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group(
            backend, init_method="env://", rank=rank, world_size=world, timeout=timedelta(seconds=timeout)
        )
    except (RuntimeError, ValueError, OSError) as e:
        raise RuntimeError(
            f"rank {rank}/{world}: could not join the rendezvous at {where} within {timeout:g} s ({e}). "
            "Check that every node runs the same command with the same rendezvous endpoint, that the port "
            f"is reachable, and raise --dist-timeout / {TIMEOUT_ENV} if nodes start slowly"
        ) from e
    return rank, world


@contextmanager
def distributed_session(*, backend: str = "gloo", timeout_s: float | None = None) -> Iterator[tuple[int, int]]:
    """:func:`init_distributed` for the duration of a ``with`` block, then leave the process group.

    Example:
        >>> with distributed_session() as (rank, world):
        ...     print(rank, world)
        0 1
    """
    created = not (dist.is_available() and dist.is_initialized())
    rank, world = init_distributed(backend=backend, timeout_s=timeout_s)
    try:
        yield rank, world
    finally:
        if created and world > 1 and dist.is_initialized():
            dist.destroy_process_group()


@contextmanager
def _collective(what: str) -> Iterator[None]:
    rank, world = get_rank(), get_world_size()
    try:
        yield
    except RuntimeError as e:
        raise RuntimeError(
            f"rank {rank}/{world}: {what} failed: another rank stopped (crashed, was killed or lost its "
            f"network) or did not answer within the process-group timeout ({TIMEOUT_ENV}); {_RESUME_HINT}. "
            f"Cause: {e}"
        ) from e


def barrier(what: str = "barrier") -> None:
    """Wait for every rank (no-op in one process); fails within the timeout if a rank died.

    Example:
        >>> barrier()
    """
    if is_distributed():
        with _collective(what):
            dist.barrier()


def write_on_main(write: Callable[..., Any], path: str | Path, *args: Any, **kwargs: Any) -> Any:
    """Run ``write(path, *args, **kwargs)`` on rank 0 only, then wait on every rank until it is done.

    Returns:
        What ``write`` returned on rank 0; ``Path(path)`` on the other ranks.

    Example:
        >>> write_on_main(lambda p: Path(p), "/tmp/x.safetensors")
        PosixPath('/tmp/x.safetensors')
    """
    out = write(path, *args, **kwargs) if is_main_process() else Path(path)
    barrier(f"waiting for rank 0 to write {path}")
    return out


def check_same_on_all_ranks(value: Any, what: str, hint: str) -> None:
    """Raise ``RuntimeError`` unless every rank holds the same (picklable) ``value``.

    Example:
        >>> check_same_on_all_ranks(3, "resume step", "use a shared filesystem")
    """
    if not is_distributed():
        return
    values: list[Any] = [None] * get_world_size()
    with _collective(f"comparing {what} across ranks"):
        dist.all_gather_object(values, value)
    if any(v != values[0] for v in values):
        raise RuntimeError(f"ranks disagree on {what}: {dict(enumerate(values))}; {hint}")


# ----------------------------------------------------------------------------- sharding
def check_world_divides(n: int, world_size: int, *, setting: str, what: str = "items") -> None:
    """Raise ``ValueError`` unless ``world_size`` divides ``n`` (every rank needs an equal share).

    Example:
        >>> check_world_divides(4, 2, setting="meta_batch")
        >>> check_world_divides(5, 2, setting="meta_batch")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: meta_batch = 5 is not divisible by the world size 2 ...; choose meta_batch = 4 or 6, ...
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if n % world_size:
        lo, hi = (n // world_size) * world_size, (n // world_size + 1) * world_size
        options = f"{lo} or {hi}" if lo > 0 else f"{hi}"
        raise ValueError(
            f"{setting} = {n} is not divisible by the world size {world_size} (nnodes × nproc_per_node): each "
            f"rank takes {setting} / {world_size} {what}; choose {setting} = {options}, or launch a number of "
            f"processes that divides {n}"
        )


def shard_bounds(n: int, rank: int, world_size: int, *, setting: str = "meta_batch") -> tuple[int, int]:
    """``[lo, hi)`` of rank ``rank``'s contiguous share of ``n`` items (``world_size`` must divide ``n``).

    Example:
        >>> shard_bounds(8, 1, 2)
        (4, 8)
    """
    check_world_divides(n, world_size, setting=setting)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
    per = n // world_size
    return rank * per, (rank + 1) * per


def shard_meta_batch(sampler: Any, meta_batch: int) -> list[Any]:
    """Draw the whole global meta-batch from ``sampler``'s seeded stream and return this rank's slice.

    Every rank advances the stream identically (``meta_batch`` draws of ``sampler.sample_indices()``),
    so the stream state, and hence a checkpoint, does not depend on the world size. Only this rank's
    episodes are materialised (``sampler.materialise``).

    Example:
        >>> batch = shard_meta_batch(sampler, 4)  # doctest: +SKIP
    """
    drawn = [sampler.sample_indices() for _ in range(meta_batch)]
    lo, hi = shard_bounds(meta_batch, get_rank(), get_world_size())
    return [sampler.materialise(*d) for d in drawn[lo:hi]]


def evaluate_sharded(learner: Any, episodes: Sequence[Any]) -> tuple[float, float]:
    """Mean accuracy and 95% CI over ``episodes``, each rank adapting to every ``W``-th episode.

    The per-episode accuracies are gathered back into the original order, so the result equals
    ``evaluate_learner(learner, episodes)``'s ``(acc_mean, acc_ci95)`` in one process.

    Example:
        >>> acc, ci = evaluate_sharded(learner, val_episodes)  # doctest: +SKIP
    """
    from medmeta_lib.evaluation import evaluate_learner, mean_ci

    rank, world = get_rank(), get_world_size()
    mine = [episodes[i] for i in range(rank, len(episodes), world)]
    accs = evaluate_learner(learner, mine).per_episode_acc if mine else []
    if world == 1:
        return mean_ci(accs)
    parts: list[Any] = [None] * world
    with _collective("gathering validation accuracies"):
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
    with _collective("the gradient all-reduce"):
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
    with _collective("averaging the step statistics"):
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
    with _collective("broadcasting the initial weights"), torch.no_grad():
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

        with _collective("gathering NT-Xent projections"):
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

    with _collective("wrapping the model in DistributedDataParallel"):
        return DistributedDataParallel(module)
