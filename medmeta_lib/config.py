"""Workbench configuration: data and runs directories, device, threads and seeding.

Everything that depends on the machine or the environment is read here, once, so the rest of
the library takes explicit arguments.
"""

from __future__ import annotations

import functools
import os
import random
import subprocess
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "PROJECT_ROOT",
    "VERSION",
    "code_version",
    "data_dir",
    "runs_dir",
    "seed_everything",
    "select_device",
    "set_threads",
    "shared_data_file",
]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.1.0"  #: the library's version (``medmeta_lib.__version__``); pyproject.toml's [project] version


def data_dir() -> Path:
    """Return the data directory: ``$MEDMETA_DATA_DIR`` if set, else ``<project>/data/cache``.

    Example:
        >>> data_dir().name in {"cache"} or "MEDMETA_DATA_DIR" in os.environ
        True
    """
    env = os.environ.get("MEDMETA_DATA_DIR")
    return Path(env).expanduser() if env else PROJECT_ROOT / "data" / "cache"


def runs_dir() -> Path:
    """Return the directory that holds pipeline runs: ``$MEDMETA_RUNS_DIR`` or ``<project>/runs``.

    Example:
        >>> from unittest import mock
        >>> with mock.patch.dict(os.environ, {"MEDMETA_RUNS_DIR": "/tmp/my_runs"}):
        ...     runs_dir().as_posix()
        '/tmp/my_runs'
    """
    env = os.environ.get("MEDMETA_RUNS_DIR")
    return Path(env).expanduser() if env else PROJECT_ROOT / "runs"


def shared_data_file(name: str) -> Path | None:
    """Return ``../shared/data/medmnist/<name>`` next to the project if it exists, else None.

    The project's machines carry a copy of PneumoniaMNIST there for tests and benchmarks; a
    user's fresh clone does not, and callers must handle ``None``.

    Example:
        >>> p = shared_data_file("pneumoniamnist.npz")
        >>> p is None or p.exists()
        True
    """
    p = PROJECT_ROOT.parent / "shared" / "data" / "medmnist" / name
    return p if p.exists() else None


def select_device(device: str = "auto") -> torch.device:
    """Pick a torch device: ``"auto"`` gives CUDA when available, else CPU.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Example:
        >>> select_device("cpu").type
        'cpu'
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} requested but CUDA is not available; use 'cpu' or 'auto'")
    return torch.device(device)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads (``None``: ``$MEDMETA_THREADS`` or all cores). Returns the count.

    Example:
        >>> before = torch.get_num_threads()
        >>> set_threads(1), torch.get_num_threads()
        (1, 1)
        >>> _ = set_threads(before)  # restore
    """
    if n is None:
        env = os.environ.get("MEDMETA_THREADS", str(os.cpu_count() or 1))
        try:
            n = int(env)
        except ValueError:
            raise ValueError(f"$MEDMETA_THREADS must be a whole number of threads, got {env!r}") from None
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a ``torch.Generator`` seeded with ``seed``.

    Example:
        >>> g = seed_everything(0)
        >>> isinstance(g, torch.Generator)
        True
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seeds legacy global-state users (e.g. third-party code)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@functools.cache
def code_version() -> str:
    """The library's version and, in a git checkout, its commit (``+ local changes`` when files differ from it).

    Checkpoints, results files and run reports carry it: the same command on other code can give other numbers.
    Read once per process.

    Example:
        >>> code_version().startswith("medmeta_lib ")
        True
    """
    version = f"medmeta_lib {VERSION}"
    try:
        git = ["git", "-C", str(PROJECT_ROOT)]
        commit = subprocess.run(
            [*git, "rev-parse", "--show-toplevel", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return version
    lines = commit.stdout.splitlines()
    if commit.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != PROJECT_ROOT.resolve():
        return version  # not a checkout of this project (e.g. an installed copy inside another repository)
    return f"{version}, commit {lines[1]}" + (" + local changes" if dirty.stdout.strip() else "")
