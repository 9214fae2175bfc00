"""Adaptation views: curves per inner step, data efficiency, decision changes, one trace, cross-site maps.

The numbers come from :mod:`medmeta_lib.studies.adaptation` (or straight from an
:class:`~medmeta_lib.learners.trace.AdaptationTrace`); every function here only draws.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from medmeta_lib.learners.trace import AdaptationTrace
from medmeta_lib.viz.data_plots import _show
from medmeta_lib.viz.training_plots import cross_site_figure

__all__ = [
    "LEARNER_COLOURS",
    "adaptation_curves_figure",
    "cross_site_map_figure",
    "data_efficiency_figure",
    "decision_grid_figure",
    "pick_query_rows",
    "select_steps",
    "trace_figure",
]

LEARNER_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
WRONG = "#d62728"
RIGHT = "#1a7f37"
UNDECIDED = "#6e7781"


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _band(fig: go.Figure, x: Sequence[float], mean: Any, ci: Any, colour: str, group: str, **pos: Any) -> None:
    m, h = np.asarray(mean, dtype=float), np.nan_to_num(np.asarray(ci, dtype=float))
    if not h.any():
        return
    xs = list(x)
    fig.add_scatter(
        x=xs + xs[::-1],
        y=list(m + h) + list((m - h)[::-1]),
        fill="toself",
        fillcolor=_rgba(colour, 0.18),
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        legendgroup=group,
        **pos,
    )


def adaptation_curves_figure(curves: Mapping[str, Mapping[str, Any]], *, title: str | None = None) -> go.Figure:
    """Query accuracy and loss after each inner step, mean ± 95% CI band per learner.

    A learner whose adaptation has fewer steps than the others (ProtoNet: computing the prototypes
    is its only step) is drawn solid while it has data and dashed where it is carried flat.

    Args:
        curves: :func:`medmeta_lib.studies.adaptation.adaptation_curves` output.
        title: figure title (default says how many episodes).

    Example:
        >>> adaptation_curves_figure(adaptation_curves(learners, test_set, steps=10))  # doctest: +SKIP
    """
    if not curves:
        raise ValueError("curves is empty: pass adaptation_curves(...)'s result")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("query accuracy (mean ± 95% CI)", "query loss (mean ± 95% CI)"))
    n_way = 0
    for i, (name, c) in enumerate(curves.items()):
        colour = LEARNER_COLOURS[i % len(LEARNER_COLOURS)]
        steps = list(c["steps"])
        native = int(c.get("native_steps", steps[-1]))
        n_way = n_way or int(c.get("n_way") or 0)
        for col, key in ((1, "query_acc"), (2, "query_loss")):
            m, h = c[f"{key}_mean"], c[f"{key}_ci95"]
            _band(fig, steps, m, h, colour, name, row=1, col=col)
            cut = native + 1
            hover = f"{name}<br>step %{{x}}: %{{y:.3f}}<extra></extra>"
            fig.add_scatter(
                x=steps[:cut],
                y=m[:cut],
                mode="lines+markers",
                name=name,
                legendgroup=name,
                showlegend=col == 1,
                line={"color": colour, "width": 2.5},
                marker={"size": 6},
                hovertemplate=hover,
                row=1,
                col=col,
            )
            if cut < len(steps):
                fig.add_scatter(
                    x=steps[native:],
                    y=m[native:],
                    mode="lines",
                    legendgroup=name,
                    showlegend=False,
                    line={"color": colour, "width": 1.5, "dash": "dash"},
                    hovertemplate=f"{name} (no further steps)<extra></extra>",
                    row=1,
                    col=col,
                )
    if n_way:
        fig.add_hline(
            y=1 / n_way, line={"color": "grey", "dash": "dot", "width": 1}, row=1, col=1,
            annotation_text="chance", annotation_position="bottom right",
        )  # fmt: skip
    episodes = next(iter(curves.values())).get("episodes")
    fig.update_layout(
        title=title or f"does the model learn the new task quickly? ({episodes} episodes, same for every learner)",
        height=420,
        legend={"orientation": "h", "y": -0.2},
        margin={"t": 80},
    )
    fig.update_xaxes(title_text="inner step (0 = before adaptation)", dtick=max(1, len(steps) // 10))
    fig.update_yaxes(range=[0, 1.02], title_text="accuracy", row=1, col=1)
    fig.update_yaxes(title_text="cross-entropy", rangemode="tozero", row=1, col=2)
    return fig


def data_efficiency_figure(
    rows: Sequence[Mapping[str, Any]], *, metric: str = "acc", title: str | None = None
) -> go.Figure:
    """Accuracy (or AUROC with ``metric="auc"``) against shots per class ``K``, one line per learner, 95% CIs.

    Example:
        >>> data_efficiency_figure(data_efficiency(learners, test_col, shots=(1, 5, 10)))  # doctest: +SKIP
    """
    if metric not in ("acc", "auc"):
        raise ValueError(f"metric must be 'acc' or 'auc', got {metric!r}")
    rows = [r for r in rows if r.get(f"{metric}_mean") is not None]
    if not rows:
        raise ValueError(f"no rows with '{metric}_mean': pass data_efficiency(...)'s result")
    fig = go.Figure()
    names = list(dict.fromkeys(r["learner"] for r in rows))
    shots = sorted({int(r["k_shot"]) for r in rows})
    for i, name in enumerate(names):
        colour = LEARNER_COLOURS[i % len(LEARNER_COLOURS)]
        rs = sorted((r for r in rows if r["learner"] == name), key=lambda r: r["k_shot"])
        k = [r["k_shot"] for r in rs]
        m = [r[f"{metric}_mean"] for r in rs]
        h = [r.get(f"{metric}_ci95") or 0.0 for r in rs]
        _band(fig, k, m, h, colour, name)
        fig.add_scatter(
            x=k,
            y=m,
            mode="lines+markers",
            name=name,
            legendgroup=name,
            line={"color": colour, "width": 2.5},
            marker={"size": 8},
            customdata=np.nan_to_num(np.asarray(h, dtype=float)),
            hovertemplate=f"{name}<br>K=%{{x}}: %{{y:.3f}} ± %{{customdata:.3f}}<extra></extra>",
        )
    label = "accuracy" if metric == "acc" else "AUROC"
    fig.update_layout(
        title=title or f"{label} vs labelled images per class (mean ± 95% CI)",
        height=420,
        xaxis={"title": "K (labelled images per class)", "type": "log", "tickvals": shots, "ticktext": shots},
        yaxis={"title": label, "range": [0, 1.02]},
    )
    return fig


def trace_figure(trace: AdaptationTrace, *, step: int | None = None, title: str | None = None) -> go.Figure:
    """One adaptation: support and query accuracy and loss per step, the current ``step`` marked.

    Example:
        >>> _, tr = learner.adapt(ep.support_x, ep.support_y, query_x=ep.query_x, query_y=ep.query_y)  # doctest: +SKIP
        >>> trace_figure(tr, step=3)  # doctest: +SKIP
    """
    if not trace.steps:
        raise ValueError("the trace is empty")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy", "loss"))
    series = [("support", trace.support_acc, trace.support_loss, "#7f7f7f", "dot")]
    if any(v is not None for v in trace.query_acc):
        series.append(("query", trace.query_acc, trace.query_loss, "#1f77b4", "solid"))  # type: ignore[arg-type]
    for name, acc, loss, colour, dash in series:
        for col, ys in ((1, acc), (2, loss)):
            fig.add_scatter(
                x=trace.steps,
                y=ys,
                mode="lines+markers",
                name=name,
                legendgroup=name,
                showlegend=col == 1,
                line={"color": colour, "dash": dash},
                row=1,
                col=col,
            )
    if step is not None:
        for col in (1, 2):
            fig.add_vline(x=step, line={"color": "#d62728", "width": 2}, opacity=0.6, row=1, col=col)
    fig.update_layout(
        title=title or f"{trace.learner or 'learner'}: one task" + ("" if step is None else f" — step {step}"),
        height=300,
        margin={"t": 60, "b": 40},
        legend={"orientation": "h", "y": -0.25},
    )
    fig.update_xaxes(title_text="inner step")
    fig.update_yaxes(range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    return fig


def select_steps(n_steps: int, steps: Sequence[int] | None = None, *, max_columns: int = 11) -> list[int]:
    """Trace steps to show as columns: ``steps`` if given, else all (evenly thinned to ``max_columns``).

    Example:
        >>> select_steps(5)
        [0, 1, 2, 3, 4]
        >>> select_steps(101, max_columns=5)
        [0, 25, 50, 75, 100]
    """
    if steps is not None:
        out = sorted({int(s) for s in steps})
        bad = [s for s in out if not 0 <= s < n_steps]
        if bad or not out:
            raise ValueError(f"steps {bad or list(steps)} are not in the trace (it has steps 0..{n_steps - 1})")
        return out
    if n_steps <= max_columns:
        return list(range(n_steps))
    return sorted({round(float(v)) for v in np.linspace(0, n_steps - 1, max_columns)})


def pick_query_rows(query_y: torch.Tensor, max_images: int) -> list[int]:
    """Indices of up to ``max_images`` query images, taken round-robin over the classes.

    Example:
        >>> pick_query_rows(torch.tensor([0, 0, 1, 1]), 3)
        [0, 1, 2]
    """
    y = np.asarray(query_y)
    per = [list(np.nonzero(y == c)[0]) for c in np.unique(y)]
    order = [int(p[j]) for j in range(max(len(p) for p in per)) for p in per if j < len(p)]
    return sorted(order[:max_images])


def decision_grid_figure(
    trace: AdaptationTrace,
    query_x: torch.Tensor,
    query_y: torch.Tensor,
    *,
    steps: Sequence[int] | None = None,
    max_images: int = 8,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Query images (rows) × adaptation steps (columns): predicted class and confidence, mistakes in red.

    Column 0 is the prediction before adaptation. A prediction that changed since the previous
    column is written in bold; a uniform prediction (all classes equally likely, as with a
    zero-initialised head before its first step) is written "uniform" in grey.

    Args:
        trace: adapted with ``query_x``/``query_y`` (it holds the query probabilities per step).
        query_x: the query images given to ``adapt``.
        query_y: their labels.
        steps: steps to show (default: every step, thinned to 11 columns for long traces).
        max_images: rows (images taken round-robin over the classes).
        class_names: names of the episode's classes (label ``j`` → ``class_names[j]``).

    Example:
        >>> decision_grid_figure(trace, ep.query_x, ep.query_y, class_names=["normal", "pneumonia"])  # doctest: +SKIP
    """
    if not trace.query_probs:
        raise ValueError("the trace has no query probabilities: adapt with query_x and query_y")
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise ValueError(f"max_images must be an integer >= 1, got {max_images!r}")
    cols = select_steps(len(trace.query_probs), steps)
    rows = pick_query_rows(query_y, max_images)
    names = [str(n).split("/")[-1] for n in class_names] if class_names else None

    def label(j: int) -> str:
        return names[j] if names and j < len(names) else f"class {j}"

    probs = torch.stack([trace.query_probs[s] for s in cols])[:, rows]  # (columns, rows, n_way)
    fig, axes = plt.subplots(
        len(rows), len(cols), figsize=(max(4.2, 1.25 * len(cols) + 1.2), 1.35 * len(rows) + 0.8), squeeze=False
    )
    for r, q in enumerate(rows):
        truth = int(query_y[q])
        prev: tuple[int, bool] | None = None
        for c, s in enumerate(cols):
            ax = axes[r, c]
            _show(ax, query_x[q])
            p = probs[c, r]
            k = int(p.argmax())
            uniform = float(p.max() - p.min()) < 1e-4  # e.g. a zero-initialised head: no prediction yet
            wrong = k != truth and not uniform
            colour = UNDECIDED if uniform else WRONG if wrong else RIGHT
            ax.set_title(
                f"uniform {float(p[k]):.0%}" if uniform else f"{label(k)} {float(p[k]):.0%}",
                fontsize=7,
                color=colour,
                fontweight="bold" if prev is not None and prev != (-1 if uniform else k, uniform) else "normal",
                pad=2,
            )
            for sp in ax.spines.values():
                sp.set_edgecolor(colour)
                sp.set_linewidth(2.5 if wrong else 1.0)
            prev = (-1 if uniform else k, uniform)
            if r == 0:
                head = "before" if s == 0 else f"step {s}"
                ax.annotate(head, (0.5, 1.32), xycoords="axes fraction", ha="center", fontsize=8, fontweight="bold")
        axes[r, 0].set_ylabel(label(truth), rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(
        f"{trace.learner or 'learner'}: predictions while adapting\n(true class on the left, mistakes in red)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def _matrix_layout(fig: go.Figure, n_rows: int) -> go.Figure:
    """First row at the top (a matrix, not a plot), square-ish cells."""
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=170 + 70 * n_rows)
    return fig


def cross_site_map_figure(result: Mapping[str, Any], *, title: str | None = None) -> go.Figure:
    """Heatmap of accuracy across hospitals/devices, from either cross-site experiment.

    Accepts :func:`medmeta_lib.studies.sites.site_transfer_matrix`'s output (train site × test site),
    :func:`~medmeta_lib.studies.sites.leave_one_site_out`'s output (held-out vs training sites ×
    site), or ``{learner: leave_one_site_out(...)}`` (learner × held-out site).

    Example:
        >>> cross_site_map_figure(site_transfer_matrix("protonet", train, test))  # doctest: +SKIP
    """
    if "acc" in result and "rows" in result:
        who = f"{result['learner']}: " if result.get("learner") else ""
        fig = cross_site_figure(
            result["acc"],
            rows=result["rows"],
            cols=result["cols"],
            title=title or f"{who}accuracy — meta-trained at one site (row), tested at each site (column)",
        )
        if result.get("ci95") is not None:  # "0.81 ± 0.03" in each cell
            text = [
                ["" if a is None else f"{a:.2f} ± {h:.2f}" for a, h in zip(ra, rh)]
                for ra, rh in zip(result["acc"], result["ci95"])
            ]
            fig.update_traces(text=text)
        return _matrix_layout(fig, len(result["rows"]))
    if not result:
        raise ValueError("result is empty: pass site_transfer_matrix(...) or leave_one_site_out(...) output")
    first = next(iter(result.values()))
    if isinstance(first, Mapping) and "held_out_acc" in first:
        sites = list(result)
        matrix = [[result[s]["training_sites_acc"] for s in sites], [result[s]["held_out_acc"] for s in sites]]
        rows = ["training sites", "held-out site, labels there"]
        if all("held_out_remote_labels_acc" in result[s] for s in sites):
            matrix.append([result[s]["held_out_remote_labels_acc"] for s in sites])
            rows.append("held-out site, labels from training sites")
        fig = cross_site_figure(
            matrix,
            rows=rows,
            cols=sites,
            title=title or "leave one site out: accuracy at the unseen site vs at the training sites",
            xlabel="site left out of meta-training",
            ylabel="tested at",
        )
        return _matrix_layout(fig, len(rows))
    if isinstance(first, Mapping) and all(isinstance(v, Mapping) and "held_out_acc" in v for v in first.values()):
        learners = list(result)
        sites = list(first)
        matrix = [[result[n].get(s, {}).get("held_out_acc") for s in sites] for n in learners]
        fig = cross_site_figure(
            matrix,
            rows=learners,
            cols=sites,
            title=title or "accuracy at a hospital never seen in meta-training",
            xlabel="held-out site",
            ylabel="learner",
        )
        return _matrix_layout(fig, len(learners))
    raise ValueError(
        "cross_site_map_figure: expected site_transfer_matrix(...) output ({'rows', 'cols', 'acc'}), "
        "leave_one_site_out(...) output, or {learner: leave_one_site_out(...)}"
    )
