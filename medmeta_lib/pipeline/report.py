"""The run report: ``index.html``, a page worth opening after ``medmeta run``.

It is rendered with Jinja2 from ``medmeta_lib/pipeline/templates/report.html.j2`` (shipped as package data,
autoescaped, inline CSS, no scripts and nothing fetched from the network) and says, top to bottom:

1. what ran, the command that reproduces it and the code it ran, and, for a failed run, where it stopped;
2. a summary (:func:`medmeta_lib.pipeline.report_summary.build_summary`): the data, the parameters that differ
   from the defaults, the learners' accuracy with 95% intervals, the best learner against the
   runner-up (paired difference), label efficiency, the site effect and adaptation;
3. one section per notebook: links to the executed notebook (HTML and ``.ipynb``) and its figures in
   a grid, one size each, each with a line saying what to look for (:data:`FIGURE_CAPTIONS`);
4. every metric as JSON, collapsed.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jinja2

from medmeta_lib.pipeline.report_summary import build_summary
from medmeta_lib.runio import atomic_write_text

__all__ = ["FIGURE_CAPTIONS", "NOTEBOOK_TITLES", "figure_caption", "headline_metrics", "render_report", "write_report"]

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

#: what each notebook is for, by the number its stem starts with
NOTEBOOK_TITLES: dict[str, tuple[str, str]] = {
    "01": ("Data exploration", "the images, their classes and sites, and what a few-shot task is"),
    "02": ("Contrastive pretraining", "an encoder learnt from unlabelled images (SimCLR) and what its labels buy"),
    "03": ("Meta-training", "every learner trained and compared on the same test tasks"),
    "04": ("Adaptation", "watching models adapt to a new task: curves, decisions, saliency, sites"),
}

#: figure name (``<stem>/figures/<name>.png``) -> what to look for; also the order figures are shown in
FIGURE_CAPTIONS: dict[str, str] = {
    "samples_per_class": "A few images of each class: do the classes look different, and is any image blank or odd?",
    "classes_by_site": "The same classes at each site: the acquisition shift (contrast, noise, marks) to survive.",
    "pneumoniamnist_samples": "Real chest X-rays (PneumoniaMNIST) next to the data above: is the stand-in a fair one?",
    "example_episode": "One few-shot task: the labelled support images and the query images the model must label.",
    "augmentation_views": "Augmented views of one image: SimCLR pulls them together, so each must keep the finding.",
    "label_efficiency": "Probe accuracy against labels per class: the pretrained encoder should lead, most at small K.",
    "test_accuracy": "Each learner on the same test tasks, 95% intervals (dotted: chance): overlapping bars are no "
    "clear difference.",
    "adaptation_curves": "Query accuracy after each inner step: a steep early rise means a new task is learnt quickly.",
    "data_efficiency": "Accuracy against labelled images per class: which learner needs fewest labels for a target.",
    "decision_grid": "Query images before and after adapting: which flip from wrong to right (green), or back (red).",
    "saliency": "Where the model looks before and after adapting: it should move onto the finding, not site marks.",
    "embedding_trajectory": "Support and query embeddings during adaptation: classes should separate step by step.",
    "cross_site": "Accuracy at a held-out site against the training sites: the gap is the cost of a new hospital.",
    "site_transfer": "Train at one site (row), test at each (column): off-diagonal drops are what does not carry.",
}


def figure_caption(name: str) -> str:
    """The line shown under figure ``name``: its known caption, or a generic one for a new figure.

    Example:
        >>> figure_caption("test_accuracy").startswith("Each learner")
        True
        >>> figure_caption("my_new_plot")
        'My new plot: a figure this notebook wrote (its executed notebook shows how it was made).'
    """
    if name in FIGURE_CAPTIONS:
        return FIGURE_CAPTIONS[name]
    title = name.replace("_", " ").strip().capitalize()
    return f"{title}: a figure this notebook wrote (its executed notebook shows how it was made)."


def headline_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The ``headline`` entries of a notebook's metrics, or its top-level scalars when it has none.

    Example:
        >>> headline_metrics({"headline": {"acc": 0.9}, "rows": [1, 2]})
        {'acc': 0.9}
    """
    if isinstance(metrics.get("headline"), Mapping):
        return dict(metrics["headline"])
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool))}


def _figures(run_dir: Path, stem: str) -> list[dict[str, str]]:
    order = {name: i for i, name in enumerate(FIGURE_CAPTIONS)}
    pngs = [p for p in (run_dir / stem / "figures").glob("*.png") if not p.name.startswith(".")]
    pngs.sort(key=lambda p: (order.get(p.stem, len(order)), p.stem))
    return [
        {
            "src": urllib.parse.quote(Path(os.path.relpath(p, run_dir)).as_posix()),
            "title": p.stem.replace("_", " "),
            "caption": figure_caption(p.stem),
        }
        for p in pngs
    ]


def _failed_stem(failure: str | None, stems: Sequence[str]) -> str | None:
    if not failure:
        return None
    return next((s for s in stems if failure.startswith(f"{s}:")), None)


def _notebooks(run_dir: Path, stems: Sequence[str], failure: str | None) -> list[dict[str, Any]]:
    failed = _failed_stem(failure, stems)
    out = []
    for stem in stems:
        key = stem.split("_", 1)[0]
        title, about = NOTEBOOK_TITLES.get(key, (stem.split("_", 1)[-1].replace("_", " ").capitalize(), ""))
        has_html, has_nb = (run_dir / f"{stem}.html").exists(), (run_dir / f"{stem}.ipynb").exists()
        if stem == failed:
            status = "failed"
        elif has_html or has_nb:
            status = "completed"
        else:
            status = "not run"
        out.append(
            {
                "stem": stem,
                "key": key,
                "title": title,
                "about": about,
                "status": status,
                "html": urllib.parse.quote(f"{stem}.html") if has_html else None,
                "ipynb": urllib.parse.quote(f"{stem}.ipynb") if has_nb else None,
                "figures": _figures(run_dir, stem),
            }
        )
    return out


def _parameter_groups(rows: Sequence[Mapping[str, str]] | None, titles: Mapping[str, str]) -> list[dict[str, Any]]:
    """Changed parameters by notebook; one shared by every listed notebook (``data_source``) is said once."""
    keys = list(dict.fromkeys(r["notebook"] for r in rows or []))
    where: dict[tuple[str, str, str], set[str]] = {}
    for r in rows or []:
        where.setdefault((r["name"], r["value"], r["default"]), set()).add(r["notebook"])
    shared = [t for t, ks in where.items() if len(keys) > 1 and len(ks) == len(keys)]
    label = "all notebooks" if set(keys) == set(titles) else ", ".join(keys)
    groups = [{"label": label, "items": [dict(zip(("name", "value", "default"), t)) for t in shared]}]
    for key in keys:
        items = [r for r in rows or [] if r["notebook"] == key and (r["name"], r["value"], r["default"]) not in shared]
        groups.append({"label": f"{key} {titles.get(key, '')}".strip(), "items": items})
    return [g for g in groups if g["items"]]


def _json_safe(v: Any) -> Any:
    """NaN and infinities as strings, so the raw dump is valid JSON (and says what it is)."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if isinstance(v, Mapping):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,  # class, site, learner and source names come from the user's data
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_report(
    run_dir: Path,
    stems: Sequence[str],
    metrics: Mapping[str, Any],
    *,
    failure: str | None = None,
    command: str | None = None,
    code: str | None = None,
) -> str:
    """The report's HTML for ``run_dir`` (see :func:`write_report`).

    Example:
        >>> "<!doctype html>" in render_report(Path("runs/none"), ["01_data_exploration"], {})
        True
    """
    run_dir = Path(run_dir)
    notebooks = _notebooks(run_dir, stems, failure)
    summary = build_summary(run_dir, stems, metrics)
    titles = {n["key"]: n["title"] for n in notebooks}
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            run_name=run_dir.name,
            run_dir=str(run_dir),
            written=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            failure=failure,
            command=command,
            code=code,
            failed=next((n for n in notebooks if n["status"] == "failed"), None),
            completed=[n for n in notebooks if n["status"] == "completed"],
            not_run=[n for n in notebooks if n["status"] == "not run"],
            notebooks=notebooks,
            summary=summary,
            parameter_groups=_parameter_groups(summary["parameters"], titles),
            metrics_json=json.dumps(_json_safe(metrics), indent=1, default=str),
        )
    )


def write_report(
    run_dir: Path,
    stems: Sequence[str],
    metrics: Mapping[str, Any],
    *,
    failure: str | None = None,
    command: str | None = None,
    code: str | None = None,
) -> Path:
    """Write ``run_dir/index.html`` (atomically: a reader never sees half a page) and return its path.

    Args:
        run_dir: the run directory.
        stems: registered notebook stems, in order (missing ones are listed as not run).
        metrics: merged metrics, ``{stem: metrics}``.
        failure: the failure message (``"<stem>: ..."``), shown at the top with what completed and
            where the run stopped.
        command: the command that reproduces the run (:func:`medmeta_lib.pipeline.reproduce.reproduce_command`),
            shown under the title.
        code: the code that ran (:func:`medmeta_lib.config.code_version`), shown beside it.

    Example:
        >>> write_report(Path("runs/20240101-120000"), ["01_data_exploration"], {})  # doctest: +SKIP
        PosixPath('runs/20240101-120000/index.html')
    """
    run_dir = Path(run_dir)
    html = render_report(run_dir, stems, metrics, failure=failure, command=command, code=code)
    return atomic_write_text(run_dir / "index.html", html)
