"""What the run report says first: the data, changed parameters, learners, label efficiency, site effect.

Each function reads the merged metrics (``{stem: metrics}``, as in ``runs/<ts>/metrics.json``)
defensively: a notebook that did not run, a missing key, ``None`` or NaN leaves its part out instead
of failing, so a report can be written for any run, one that stopped half-way or one on a user's
own two-class folder. Numbers come back formatted with the interval they have (accuracies in %,
``± half-width of the 95% CI``); :mod:`medmeta_lib.pipeline.report` puts them into the page.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from medmeta_lib.pipeline.report_format import as_map, fmt_acc, fmt_auc, fmt_diff, number
from medmeta_lib.pipeline.report_sites import cross_site_part, site_remedy_part, site_transfer_part

__all__ = [
    "build_summary",
    "changed_parameters",
    "notebook_metrics",
]

#: parameters the pipeline sets for every run (where a notebook writes): not a user's choice
_PIPELINE_PARAMETERS = frozenset({"output_dir"})
_MAX_CLASS_NAMES = 10


def notebook_metrics(metrics: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The metrics of the notebook whose stem starts with ``key + "_"`` (``{}`` when absent or malformed).

    Example:
        >>> notebook_metrics({"03_meta_training": {"headline": {}}}, "03")
        {'headline': {}}
    """
    for stem, m in metrics.items():
        if str(stem).startswith(f"{key}_") and isinstance(m, Mapping):
            return dict(m)
    return {}


def _count(v: Any) -> str | None:
    n = number(v)
    return None if n is None else str(int(n))


def _mode(transductive: Any) -> str | None:
    if isinstance(transductive, bool):
        return "transductive" if transductive else "inductive"
    return None


# ---------------------------------------------------------------- parts
def _data(metrics: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any] | None:
    m01 = notebook_metrics(metrics, "01")
    head, summary = as_map(m01.get("headline")), as_map(m01.get("summary"))
    source = head.get("source") or summary.get("source")
    if source is None:  # notebook 01 did not run: the source the other notebooks were given, if any
        given = [p["data_source"] for p in params.values() if isinstance(p, Mapping) and "data_source" in p]
        source = given[0] if given else None
    facts = []
    split = summary.get("split")
    for name in ("images", "classes", "sites", "modalities"):
        v = head.get(name, summary.get(name))
        if isinstance(v, list):
            v = len(v)
        if number(v) is not None:
            label = f"images ({split} split)" if name == "images" and split else name
            facts.append({"name": label, "value": f"{int(v):,}" if float(v).is_integer() else f"{v:.4g}"})
    counts = as_map(summary.get("class_counts"))
    sizes = {number(v) for v in counts.values()}
    each = next(iter(sizes)) if len(sizes) == 1 else None  # balanced: say the size once
    names = [str(k) if each is not None or number(v) is None else f"{k} ({int(v)})" for k, v in counts.items()]
    site_acc, chance = number(head.get("site_predictability")), number(head.get("site_chance"))
    if source is None and not facts:
        return None
    return {
        "source": None if source is None else str(source),
        "facts": facts,
        "class_names": names[:_MAX_CLASS_NAMES],
        "more_classes": max(0, len(names) - _MAX_CLASS_NAMES),
        "per_class": None if each is None else f"{int(each):,} images each",
        "site_predictability": (
            f"a linear probe tells the site from pixels {100 * site_acc:.1f}% of the time (chance {100 * chance:.1f}%)"
            if site_acc is not None and chance is not None
            else None
        ),
    }


def _learners(m03: Mapping[str, Any]) -> dict[str, Any] | None:
    results = {str(k): as_map(v) for k, v in as_map(m03.get("results")).items()}
    rows: list[dict[str, Any]] = []
    for name, r in results.items():
        acc = fmt_acc(r.get("acc_mean"), r.get("acc_ci95"))
        if acc is None:
            continue
        rows.append(
            {
                "learner": name,
                "acc": acc,
                "auc": fmt_auc(r.get("auc_mean"), r.get("auc_ci95")),
                "episodes": _count(r.get("episodes")) or "",
                "mode": _mode(as_map(r.get("settings")).get("transductive")),
                "sort": number(r.get("acc_mean")) or 0.0,
            }
        )
    if not rows:
        return None
    rows.sort(key=lambda r: -r["sort"])
    named = as_map(m03.get("headline")).get("best_learner")
    best = named if isinstance(named, str) and named else str(rows[0]["learner"])
    for r in rows:
        r["best"] = r["learner"] == best
    settings = as_map(m03.get("settings"))
    modes: set[str] = {r["mode"] for r in rows if r["mode"]}
    if not modes and (overall := _mode(settings.get("transductive"))):
        modes = {overall}
    setting = []
    if number(settings.get("n_way")) is not None and number(settings.get("k_shot")) is not None:
        setting.append(f"{int(settings['n_way'])}-way {int(settings['k_shot'])}-shot tasks")
    if isinstance(m03.get("split"), str):
        setting.append(m03["split"])
    return {
        "rows": rows,
        "has_auc": any(r["auc"] for r in rows),
        "mode": " and ".join(sorted(modes)) if modes else None,
        "mixed_modes": len(modes) > 1,
        "setting": "; ".join(setting),
        "best": best,
        "comparison": _best_vs_runner_up(m03, rows, best),
    }


def _best_vs_runner_up(m03: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], best: str) -> dict[str, Any] | None:
    d = as_map(m03.get("best_vs_runner_up"))
    diff = fmt_diff(d.get("mean"), d.get("ci95"))
    others = [r["learner"] for r in rows if r["learner"] != best]
    if diff is None or not others:
        return None
    m, h = number(d.get("mean")), number(d.get("ci95"))
    if h is None:
        verdict = "no interval was recorded, so this is not evidence that one is better"
    elif m is not None and m - h > 0:
        verdict = "the interval excludes 0: the best learner is better on these tasks"
    else:
        verdict = "the interval includes 0: these episodes do not separate the two"
    return {
        "best": best,
        "runner_up": str(d.get("runner_up") or others[0]),  # the notebook ranks as we do (stable, by accuracy)
        "diff": diff,
        "episodes": _count(d.get("episodes")),
        "verdict": verdict,
    }


def _label_efficiency(m02: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = m02.get("label_efficiency")
    rows = [r for r in raw if isinstance(r, Mapping)] if isinstance(raw, list) else []
    encoders: list[str] = []
    cells: dict[tuple[str, Any], str] = {}
    ks: list[Any] = []
    for r in rows:
        acc = fmt_acc(r.get("acc_mean"), r.get("acc_ci95"))
        enc, k = str(r.get("encoder", "?")), r.get("k_per_class")
        if acc is None:
            continue
        if enc not in encoders:
            encoders.append(enc)
        if k not in ks:
            ks.append(k)
        cells[(enc, k)] = acc
    if not cells:
        return None
    ks.sort(key=lambda k: (number(k) is None, number(k) or 0.0, str(k)))
    table = [
        {"k": "all" if k == 0 else str(k), "cells": [cells.get((e, k), "") for e in encoders]} for k in ks
    ]  # K = 0 is the notebook's "all labelled images"
    return {"encoders": encoders, "rows": table}


def _adaptation(m04: Mapping[str, Any]) -> dict[str, Any] | None:
    rows, steps = [], None
    for name, c in as_map(m04.get("adaptation_curves")).items():
        c = as_map(c)
        means, cis = c.get("query_acc_mean") or [], c.get("query_acc_ci95") or []
        if not isinstance(means, list) or not means:
            continue
        cis = cis if isinstance(cis, list) else []
        after = fmt_acc(means[-1], cis[-1] if len(cis) == len(means) else None)
        before = fmt_acc(means[0], cis[0] if cis else None)
        if after is None:
            continue
        steps = len(means) - 1 if steps is None else steps
        rows.append({"learner": str(name), "before": before or "", "after": after})
    if not rows:
        return None
    return {"steps": steps, "rows": rows, "mode": _mode(m04.get("transductive"))}


def _parse_default(text: Any) -> Any:
    try:
        return ast.literal_eval(text) if isinstance(text, str) else text
    except (ValueError, SyntaxError):
        return text


def _show(v: Any) -> str:
    return v if isinstance(v, str) and v else json.dumps(v, default=str)


def _inside(value: Any, run_dir: Path) -> bool:
    """A path into the run directory: an artifact the pipeline passed between notebooks."""
    if not isinstance(value, str) or not value:
        return False
    try:
        return Path(value).resolve().is_relative_to(run_dir.resolve())
    except (OSError, ValueError):
        return False


def _defaults(run_dir: Path, stem: str) -> dict[str, Any] | None:
    from medmeta_lib.config import PROJECT_ROOT
    from medmeta_lib.pipeline.parameters import notebook_parameters

    for nb in (run_dir / f"{stem}.ipynb", PROJECT_ROOT / "notebooks" / f"{stem}.ipynb"):
        if nb.exists():
            try:
                return {k: _parse_default(p.get("default")) for k, p in notebook_parameters(nb).items()}
            except Exception:  # a notebook we cannot read: its defaults are unknown
                continue
    return None


def changed_parameters(run_dir: Path, stems: Sequence[str]) -> list[dict[str, str]] | None:
    """Parameters of ``run_dir/params.yaml`` that differ from the notebooks' defaults, notebook by notebook.

    Defaults are read from each executed notebook's ``parameters`` cell (papermill keeps it) or the
    registered notebook (``"?"`` when neither can be read). ``output_dir`` and paths into the run
    directory (artifacts one notebook hands the next) are left out. None when the run directory has
    no readable ``params.yaml``.

    Example:
        >>> changed_parameters(Path("runs/20240101-120000"), ["01_data_exploration"])  # doctest: +SKIP
        [{'notebook': '01', 'stem': '01_data_exploration', 'name': 'n_per_class_site', 'value': '6', 'default': '40'}]
    """
    try:
        params = yaml.safe_load((run_dir / "params.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    rows = []
    for stem in [s for s in stems if isinstance(params, Mapping) and isinstance(params.get(s), Mapping)]:
        defaults = _defaults(run_dir, stem) or {}
        for name, value in params[stem].items():
            if name in _PIPELINE_PARAMETERS or _inside(value, run_dir):
                continue
            if name in defaults and defaults[name] == value:
                continue
            default = _show(defaults[name]) if name in defaults else "?"
            key = stem.split("_", 1)[0]
            rows.append({"notebook": key, "stem": stem, "name": str(name), "value": _show(value), "default": default})
    return rows


def build_summary(run_dir: Path, stems: Sequence[str], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the report's summary shows; a part is None when its metrics are absent.

    Keys: ``data``, ``parameters`` (list of rows), ``learners`` (rows, mode, best-vs-runner-up),
    ``label_efficiency``, ``cross_site``, ``site_transfer``, ``site_remedy``, ``adaptation`` and ``notes`` (parts that
    could not be summarised, with the reason; the raw metrics stay at the bottom of the report).

    Example:
        >>> s = build_summary(Path("runs/x"), [], {"03_meta_training": {"results": {"protonet": {"acc_mean": 0.6}}}})
        >>> s["learners"]["rows"][0]["acc"]
        '60.0%'
    """
    try:
        params = yaml.safe_load((run_dir / "params.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        params = {}
    params = params if isinstance(params, Mapping) else {}
    m02, m03, m04 = (notebook_metrics(metrics, k) for k in ("02", "03", "04"))
    p03 = next((p for s, p in params.items() if str(s).startswith("03_") and isinstance(p, Mapping)), {})
    parts = {
        "data": lambda: _data(metrics, params),
        "parameters": lambda: changed_parameters(run_dir, stems),
        "learners": lambda: _learners(m03),
        "label_efficiency": lambda: _label_efficiency(m02),
        "cross_site": lambda: cross_site_part(m03, p03.get("cross_site_learner", "protonet")),
        "site_transfer": lambda: site_transfer_part(m04),
        "site_remedy": lambda: site_remedy_part(m04),
        "adaptation": lambda: _adaptation(m04),
    }
    out: dict[str, Any] = {"notes": []}
    for name, make in parts.items():
        try:  # a report must never stop a run: a part that cannot be read is named, not fatal
            out[name] = make()
        except Exception as e:
            out[name] = None
            out["notes"].append(f"{name}: could not be summarised ({type(e).__name__}: {e})")
    return out
