"""How the run report writes numbers: accuracies in %, AUROCs, differences in points, each with its interval.

Every helper reads a value defensively (``None``, NaN, infinities, booleans and text give ``None``), so
a report can be written for any run, even one whose metrics are partly missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["as_map", "fmt_acc", "fmt_auc", "fmt_diff", "number"]


def number(v: Any) -> float | None:
    """``v`` as a finite float, or None (None, NaN, infinities, booleans, text).

    Example:
        >>> number(0.5), number(float("nan")), number(None), number("3")
        (0.5, None, None, None)
    """
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def fmt_acc(mean: Any, ci95: Any = None) -> str | None:
    """An accuracy in percent with its 95% interval half-width, or None when there is no number.

    Example:
        >>> fmt_acc(0.6234, 0.041), fmt_acc(0.5), fmt_acc(None, 0.1)
        ('62.3% ± 4.1', '50.0%', None)
    """
    m, h = number(mean), number(ci95)
    if m is None:
        return None
    return f"{100 * m:.1f}%" if h is None else f"{100 * m:.1f}% ± {100 * h:.1f}"


def fmt_auc(mean: Any, ci95: Any = None) -> str | None:
    """An AUROC with its 95% interval half-width, or None.

    Example:
        >>> fmt_auc(0.8123, 0.031)
        '0.812 ± 0.031'
    """
    m, h = number(mean), number(ci95)
    if m is None:
        return None
    return f"{m:.3f}" if h is None else f"{m:.3f} ± {h:.3f}"


def fmt_diff(mean: Any, ci95: Any = None) -> str | None:
    """A difference of accuracies in percentage points, signed, with its interval, or None.

    Example:
        >>> fmt_diff(0.032, 0.051)
        '+3.2 ± 5.1 pts'
    """
    m, h = number(mean), number(ci95)
    if m is None:
        return None
    return f"{100 * m:+.1f} pts" if h is None else f"{100 * m:+.1f} ± {100 * h:.1f} pts"


def as_map(v: Any) -> Mapping[str, Any]:
    """``v`` when it is a mapping, else ``{}``.

    Example:
        >>> as_map({"a": 1}), as_map(None)
        ({'a': 1}, {})
    """
    return v if isinstance(v, Mapping) else {}
