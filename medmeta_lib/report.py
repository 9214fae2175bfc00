"""The run report: ``index.html`` linking every executed notebook, headline metrics and figures."""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["headline_metrics", "write_report"]


def headline_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The ``headline`` entries of a notebook's metrics, or its top-level scalars when it has none.

    Example:
        >>> headline_metrics({"headline": {"acc": 0.9}, "rows": [1, 2]})
        {'acc': 0.9}
    """
    if isinstance(metrics.get("headline"), Mapping):
        return dict(metrics["headline"])
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def write_report(
    run_dir: Path, stems: Sequence[str], metrics: Mapping[str, Any], *, failure: str | None = None
) -> Path:
    """Write ``run_dir/index.html`` and return its path.

    Args:
        run_dir: the run directory.
        stems: registered notebook stems, in order (missing ones are listed as not run).
        metrics: merged metrics, ``{stem: metrics}``.
        failure: the failure message, shown at the top when the run stopped on an error.
    """
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>MedMeta run</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
        "img{max-width:520px;margin:4px;border:1px solid #ddd}.fail{background:#fee;padding:1em;border:1px solid #c00}"
        "</style></head><body>",
        f"<h1>MedMeta Workbench run</h1><p>{html.escape(str(run_dir))}</p>",
    ]
    if failure:
        parts.append(f"<div class='fail'><b>Run stopped:</b> {html.escape(failure)}</div>")
    for stem in stems:
        nb_html = run_dir / f"{stem}.html"
        parts.append(f"<h2>{html.escape(stem)}</h2>")
        if not nb_html.exists():
            parts.append("<p><i>not run</i></p>")
            continue
        parts.append(f"<p><a href='{html.escape(nb_html.name)}'>executed notebook (HTML)</a> · ")
        parts.append(f"<a href='{html.escape(stem)}.ipynb'>.ipynb</a></p>")
        head = headline_metrics(metrics.get(stem, {}))
        if head:
            rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in head.items())
            parts.append(f"<table>{rows}</table>")
        figs = sorted((run_dir / stem / "figures").glob("*.png"))
        for f in figs:
            rel = os.path.relpath(f, run_dir)
            parts.append(f"<img src='{html.escape(rel)}' alt='{html.escape(f.stem)}' title='{html.escape(f.stem)}'>")
    parts.append("<h2>All metrics</h2><pre>" + html.escape(json.dumps(metrics, indent=1, default=str)) + "</pre>")
    parts.append("</body></html>")
    out = run_dir / "index.html"
    tmp = out.with_name(".index.html.tmp")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    os.replace(tmp, out)
    return out
