"""Distributed training on ``torch.distributed`` (launched by ``torchrun``), equivalent to one process.

Launch ``medmeta meta-train`` or ``medmeta pretrain`` unchanged under
``torchrun --nproc_per_node=N -m medmeta_lib.cli ...`` (see
:func:`medmeta_lib.training.launch.torchrun_command`); the CLI calls :func:`distributed_session`,
which joins the process group that torchrun's environment variables
describe (``WORLD_SIZE``, ``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and does nothing in one process.

* **Meta-training** (``training.meta_train``). Every rank draws the *whole* global meta-batch of ``T``
  episodes from the identical seeded stream and materialises only its own contiguous slice of
  ``T / W`` episodes (:func:`shard_meta_batch`); each rank back-propagates the mean over its slice
  and the gradients are summed over ranks and divided by ``W``
  (:func:`~medmeta_lib.training.collectives.all_reduce_gradients`, one flat all-reduce per step),
  which is the gradient of ``(1/T) Σ_i L_i(θ)`` over the global batch.
  The episode stream therefore advances exactly as in one process, so a checkpoint does not depend
  on the world size: resume ``W=2 → 1`` and ``1 → 2`` both continue the same run.
* **SimCLR** (``ssl.simclr.pretrain_simclr``). The encoder and projection head run under DDP; each
  rank encodes ``B / W`` images of the global batch and the projections are all-gathered with
  gradient (:func:`~medmeta_lib.training.collectives.gather_views`), so NT-Xent sees all ``2B - 2``
  negatives of the global batch.
* **Rank 0 alone** writes checkpoints, logs and progress bars; every write is followed by a barrier
  (:func:`write_on_main`), and every rank resumes from the same file (``--out`` must be on a
  filesystem shared by all nodes; :func:`check_same_on_all_ranks` refuses a mismatch).
* **Failures** are clear ``ValueError`` / ``RuntimeError``: a world size that does not divide the
  meta-batch, a missing or unreachable rendezvous, a rank dying mid-run (the process group has a
  timeout, ``MEDMETA_DIST_TIMEOUT`` seconds, default 600, so nothing waits forever; checkpoint
  writes are atomic, so the last complete checkpoint stays loadable). After such a failure the CLI leaves
  the process with :func:`exit_failed_session`, so that the exit code is the one it reports.

Example::

    torchrun --standalone --nproc_per_node=2 -m medmeta_lib.cli meta-train --learner protonet --out runs/dist
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn

import torch.distributed as dist

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "TIMEOUT_ENV",
    "barrier",
    "check_same_on_all_ranks",
    "check_world_divides",
    "collective",
    "distributed_session",
    "exit_failed_session",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "shard_bounds",
    "shard_meta_batch",
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


def exit_failed_session(code: int) -> NoReturn:
    """Leave the process with ``code`` at once, after a multi-process session failed and was left.

    When a peer rank died, gloo's threads may still hold work on tensors while Python shuts down, and the
    process can then abort (SIGABRT, "terminate called without an active exception") after the error was
    reported, instead of exiting with ``code``: 3 of 90 runs of a rank-dies test on a loaded 2-core
    machine. This flushes stdout and stderr and exits without the interpreter's teardown.

    Args:
        code: the exit status (0-255).

    Raises:
        ValueError: for a code outside 0-255.

    Example:
        >>> exit_failed_session(1)  # doctest: +SKIP
    """
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 255:
        raise ValueError(f"exit_failed_session: code must be an int in 0..255, got {code!r}")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: nothing left to flush
            pass
    os._exit(code)


@contextmanager
def collective(what: str) -> Iterator[None]:
    """Run one collective operation; a failure becomes a ``RuntimeError`` that names it and says how to resume.

    Example:
        >>> with collective("the gradient all-reduce"):
        ...     pass
    """
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
        with collective(what):
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
    with collective(f"comparing {what} across ranks"):
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
