"""Small, atomic file I/O: text through a temporary file and a rename, and the notebooks' metrics JSON.

The metrics are what the pipeline merges into the run report.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "read_metrics", "write_metrics"]


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, Mapping):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item") and getattr(v, "ndim", 1) == 0:
        return _clean(v.item())
    return v


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and ``os.replace``.

    A crash or a full disk midway leaves any earlier ``path`` intact and no temporary file behind.

    Example:
        >>> import tempfile
        >>> p = atomic_write_text(Path(tempfile.mkdtemp()) / "a.txt", "hello")
        >>> p.read_text(encoding="utf-8")
        'hello'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_metrics(output_dir: str | Path, metrics: Mapping[str, Any], *, name: str = "metrics.json") -> Path:
    """Write ``metrics`` as JSON to ``output_dir/name`` atomically (temp file + rename).

    NaN/Inf become ``null``; numpy/torch scalars become numbers.

    Example:
        >>> import tempfile
        >>> p = write_metrics(tempfile.mkdtemp(), {"acc": 0.5})
        >>> read_metrics(p.parent)["acc"]
        0.5
    """
    d = Path(output_dir)
    d.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(d / name, json.dumps(_clean(metrics), indent=2, default=str))


def read_metrics(output_dir: str | Path, *, name: str = "metrics.json") -> dict[str, Any]:
    """Read ``output_dir/name``; a missing file is a FileNotFoundError that names it.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = write_metrics(d, {"acc": 0.5, "loss": float("nan")})
        ...     read_metrics(d)
        {'acc': 0.5, 'loss': None}
    """
    path = Path(output_dir) / name
    if not path.exists():
        raise FileNotFoundError(f"{path}: no metrics file; run the notebook that writes it first")
    return json.loads(path.read_text(encoding="utf-8"))
