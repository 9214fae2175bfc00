"""The run report's site effect: what a new hospital costs, how learning carries, and the remedy.

Each part reads the notebooks' metrics defensively and returns formatted rows, or ``None`` when the
notebook did not measure it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from medmeta_lib.pipeline.report_format import as_map, fmt_acc, fmt_diff, number

__all__ = ["cross_site_part", "site_remedy_part", "site_transfer_part"]

_REMEDY_PROTOCOLS = {
    "training_sites": "training hospitals (new patients)",
    "held_out": "new hospital, labels there",
    "held_out_remote_labels": "new hospital, labels from the training hospitals",
}


def _gap(r: Mapping[str, Any], a: str, b: str) -> str:
    """``r[a] - r[b]`` with an interval that treats the two accuracies as independent, or ``""``."""
    h1, h2 = number(r.get(f"{a}_ci95")), number(r.get(f"{b}_ci95"))
    if number(r.get(f"{a}_acc")) is None or number(r.get(f"{b}_acc")) is None:
        return ""
    ci = math.hypot(h1, h2) if h1 is not None and h2 is not None else None
    return fmt_diff(r[f"{a}_acc"] - r[f"{b}_acc"], ci) or ""


def cross_site_part(m03: Mapping[str, Any], learner: Any) -> dict[str, Any] | None:
    """Notebook 03's leave-one-site-out rows (three deployments, the gaps to the training sites), or None.

    Example:
        >>> r = {"held_out_acc": 0.6, "held_out_ci95": 0.03, "training_sites_acc": 0.7, "training_sites_ci95": 0.04}
        >>> part = cross_site_part({"cross_site": {"A": r}}, "protonet")
        >>> part["rows"][0]["held_out"], part["rows"][0]["gap"], part["remote"], cross_site_part({}, "protonet")
        ('60.0% ± 3.0', '-10.0 ± 5.0 pts', False, None)
    """
    rows = []
    for site, r in as_map(m03.get("cross_site")).items():
        r = as_map(r)
        held = fmt_acc(r.get("held_out_acc"), r.get("held_out_ci95"))
        seen = fmt_acc(r.get("training_sites_acc"), r.get("training_sites_ci95"))
        remote = fmt_acc(r.get("held_out_remote_labels_acc"), r.get("held_out_remote_labels_ci95"))
        if held is None and seen is None:
            continue
        rows.append(
            {
                "site": str(site),
                "held_out": held or "",
                "training": seen or "",
                "gap": _gap(r, "held_out", "training_sites"),
                "remote": remote or "",
                "remote_gap": _gap(r, "held_out_remote_labels", "training_sites"),
            }
        )
    if not rows:
        return None
    remote_any = any(r["remote"] for r in rows)
    return {"learner": str(learner) if learner else None, "rows": rows, "remote": remote_any}


def site_transfer_part(m04: Mapping[str, Any]) -> dict[str, Any] | None:
    """Notebook 04's site-transfer matrix (trained at a row's site, tested at each column), or None.

    Example:
        >>> t = {"rows": ["A", "B"], "cols": ["A", "B"], "acc": [[0.7, 0.5], [0.55, 0.65]], "learner": "protonet"}
        >>> part = site_transfer_part({"site_transfer": t})
        >>> part["cols"], part["rows"][1], site_transfer_part({})
        (['A', 'B'], {'site': 'B', 'cells': ['55.0%', '65.0%'], 'diagonal': 1}, None)
    """
    t = as_map(m04.get("site_transfer"))
    lists: list[list[Any]] = [t[k] if isinstance(t.get(k), list) else [] for k in ("rows", "cols", "acc", "ci95")]
    names_r, names_c, acc, ci = lists
    if not names_r or not names_c or not acc:
        return None
    rows: list[dict[str, Any]] = []
    for i, site in enumerate(names_r):
        a = acc[i] if i < len(acc) and isinstance(acc[i], list) else []
        h = ci[i] if i < len(ci) and isinstance(ci[i], list) else []
        cells = [fmt_acc(a[j] if j < len(a) else None, h[j] if j < len(h) else None) or "" for j in range(len(names_c))]
        rows.append({"site": str(site), "cells": cells, "diagonal": i if i < len(names_c) else -1})
    if not any(c for r in rows for c in r["cells"]):
        return None
    return {"learner": t.get("learner"), "cols": [str(c) for c in names_c], "rows": rows}


def site_remedy_part(m04: Mapping[str, Any]) -> dict[str, Any] | None:
    """Notebook 04's site-invariance remedy: per deployment, plain vs site-invariant and the paired Δ, or None.

    Example:
        >>> r = {"held_out_site": "D", "encoders": {"plain": {"held_out": {"acc": 0.5, "ci95": 0.02}},
        ...      "site_invariant": {"held_out": {"acc": 0.55, "ci95": 0.02}}},
        ...      "difference": {"held_out": {"mean": 0.05, "ci95": 0.01}}}
        >>> site_remedy_part({"site_remedy": r})["rows"][0]["difference"]
        '+5.0 ± 1.0 pts'
    """
    r = as_map(m04.get("site_remedy"))
    enc, diff = as_map(r.get("encoders")), as_map(r.get("difference"))
    plain, inv = as_map(enc.get("plain")), as_map(enc.get("site_invariant"))
    rows = []
    for key, label in _REMEDY_PROTOCOLS.items():
        a, b, d = as_map(plain.get(key)), as_map(inv.get(key)), as_map(diff.get(key))
        cells = [fmt_acc(a.get("acc"), a.get("ci95")), fmt_acc(b.get("acc"), b.get("ci95"))]
        if all(c is None for c in cells):
            continue
        delta = fmt_diff(d.get("mean"), d.get("ci95")) or ""
        lo, hi = number(d.get("mean")), number(d.get("ci95"))
        clear = lo is not None and hi is not None and abs(lo) > hi
        rows.append({"protocol": label, "plain": cells[0] or "", "invariant": cells[1] or "", "difference": delta,
                     "clear": clear})  # fmt: skip
    if not rows:
        return None
    return {"site": str(r.get("held_out_site", "")), "rows": rows}
