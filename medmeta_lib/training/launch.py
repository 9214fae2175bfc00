"""Launch commands for distributed runs: ``torchrun`` on one machine, on several nodes, and under SLURM.

The command this builds runs ``medmeta meta-train`` or ``medmeta pretrain`` unchanged on
``nnodes × nproc_per_node`` processes; the training code itself is in :mod:`medmeta_lib.training.distributed`.
Notebook 03 prints it for its current parameters.

Example:
    >>> print(torchrun_command("pretrain", {"epochs": 30}, nproc_per_node=2))
    torchrun --standalone --nproc_per_node=2 -m medmeta_lib.cli pretrain --epochs 30
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from medmeta_lib.training.distributed import check_world_divides

__all__ = ["cli_arguments", "torchrun_command"]


def cli_arguments(args: Mapping[str, Any]) -> list[str]:
    """``medmeta`` command-line options from a mapping (``meta_batch=4`` → ``--meta-batch 4``).

    ``True`` becomes a bare flag, ``None`` / ``False`` are left out, lists are comma-joined.

    Example:
        >>> cli_arguments({"learner": "protonet", "meta_batch": 4, "no_progress": True, "encoder": None})
        ['--learner', 'protonet', '--meta-batch', '4', '--no-progress']
    """
    out: list[str] = []
    for key, value in args.items():
        flag = "--" + str(key).replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, (list, tuple)):
            out += [flag, ",".join(str(v) for v in value)]
        else:
            out += [flag, str(value)]
    return out


def torchrun_command(
    subcommand: str,
    args: Mapping[str, Any] | None = None,
    *,
    nproc_per_node: int = 2,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    launcher: str = "torchrun",
    rdzv_id: str = "medmeta",
    executable: str = "torchrun",
) -> str:
    """The shell command that runs ``medmeta <subcommand>`` on ``nnodes × nproc_per_node`` processes.

    Args:
        subcommand: ``"meta-train"`` or ``"pretrain"``.
        args: the subcommand's options, ``{"learner": "protonet", "meta_batch": 4, ...}``
            (underscores become dashes; ``True`` is a bare flag; ``None`` / ``False`` are left out).
        nproc_per_node: processes per machine (CPU: usually one per core group; GPU: one per GPU).
        nnodes: machines.
        rdzv_endpoint: ``"HOST:PORT"`` of the rendezvous (a node all others reach); required for
            ``nnodes > 1`` with ``launcher="torchrun"``; ignored for one node (``--standalone``).
        launcher: ``"torchrun"`` (run the command on every node) or ``"slurm"`` (a two-line sbatch
            snippet: the first node becomes the rendezvous, ``srun`` starts one torchrun per node).
        rdzv_id: job id shared by all nodes (SLURM: ``$SLURM_JOB_ID``).
        executable: the torchrun program (e.g. ``".venv/bin/torchrun"``).

    Raises:
        ValueError: an unknown subcommand or launcher, a bad count, a missing ``rdzv_endpoint``, or a
            ``meta_batch`` / ``batch_size`` that the world size ``nnodes × nproc_per_node`` does not divide.

    Example:
        >>> print(torchrun_command("meta-train", {"learner": "protonet", "meta_batch": 4}, nproc_per_node=4))
        torchrun --standalone --nproc_per_node=4 -m medmeta_lib.cli meta-train --learner protonet --meta-batch 4
    """
    if subcommand not in ("meta-train", "pretrain"):
        raise ValueError(f"subcommand must be 'meta-train' or 'pretrain', got {subcommand!r}")
    if launcher not in ("torchrun", "slurm"):
        raise ValueError(f"launcher must be 'torchrun' or 'slurm', got {launcher!r}")
    for name, v in (("nproc_per_node", nproc_per_node), ("nnodes", nnodes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    args = dict(args or {})
    world = nproc_per_node * nnodes
    for key in ("meta_batch", "batch_size"):
        value = args.get(key, args.get(key.replace("_", "-")))
        if isinstance(value, int) and not isinstance(value, bool):
            check_world_divides(value, world, setting=key)
    tail = ["-m", "medmeta_lib.cli", subcommand, *cli_arguments(args)]
    if launcher == "slurm":
        if rdzv_endpoint is None:
            rdzv_endpoint = "$MASTER_ADDR:29500"
        head = (
            'MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)\n'
            f"srun --nodes={nnodes} --ntasks-per-node=1 {executable} --nnodes={nnodes} "
            f'--nproc_per_node={nproc_per_node} --rdzv_backend=c10d --rdzv_endpoint="{rdzv_endpoint}" '
            '--rdzv_id="$SLURM_JOB_ID"'
        )
        return f"{head} {shlex.join(tail)}"
    if nnodes == 1 and rdzv_endpoint is None:
        return shlex.join([executable, "--standalone", f"--nproc_per_node={nproc_per_node}", *tail])
    host, _, port = (rdzv_endpoint or "").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(
            f"rdzv_endpoint must be 'HOST:PORT' (a node every node can reach, e.g. 'node001:29500') for "
            f"nnodes={nnodes}, got {rdzv_endpoint!r}; with SLURM use launcher='slurm'"
        )
    return shlex.join(
        [
            executable,
            f"--nnodes={nnodes}",
            f"--nproc_per_node={nproc_per_node}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={rdzv_endpoint}",
            f"--rdzv_id={rdzv_id}",
            *tail,
        ]
    )
