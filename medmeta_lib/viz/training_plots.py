"""Training and results views: loss curves, meta-train/val curves, results with CIs, cross-site maps.

Also the site-invariance remedy (plain against site-invariant pretraining at a new hospital).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "cross_site_figure",
    "label_efficiency_figure",
    "label_efficiency_matplotlib",
    "loss_curve_figure",
    "meta_curves_figure",
    "results_bar_figure",
    "results_bar_matplotlib",
    "results_table_figure",
    "site_remedy_figure",
    "smooth",
]


def smooth(values: Sequence[float], window: int = 10) -> np.ndarray:
    """Trailing moving average (the first points average what exists so far).

    Example:
        >>> smooth([0, 2, 4], window=2).tolist()
        [0.0, 1.0, 3.0]
    """
    v = np.asarray(values, dtype=float)
    if window <= 1 or v.size == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    out = np.empty_like(v)
    for i in range(v.size):
        lo = max(0, i + 1 - window)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


def loss_curve_figure(
    history: Sequence[Mapping[str, Any]],
    *,
    x: str = "step",
    y: str = "loss",
    monitors: Sequence[str] = ("knn_acc", "probe_acc"),
    title: str = "training loss",
    window: int = 10,
) -> go.Figure:
    """Loss per step (raw and smoothed) with monitor accuracies on a second axis when present.

    Example:
        >>> history = [{"step": i, "loss": 1.0 / (i + 1)} for i in range(5)] + [{"step": 4, "knn_acc": 0.6}]
        >>> [trace.name for trace in loss_curve_figure(history).data]
        ['loss', 'loss (smoothed)', 'knn_acc']
    """
    xs = [h[x] for h in history if y in h]
    ys = [h[y] for h in history if y in h]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_scatter(x=xs, y=ys, mode="lines", name=y, line={"width": 1, "color": "rgba(31,119,180,0.35)"})
    fig.add_scatter(x=xs, y=smooth(ys, window), mode="lines", name=f"{y} (smoothed)", line={"color": "#1f77b4"})
    for m in monitors:
        pts = [(h[x], h[m]) for h in history if h.get(m) is not None]
        if pts:
            fig.add_scatter(
                x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=m, secondary_y=True
            )
    fig.update_layout(title=title, height=380, xaxis_title=x)
    fig.update_yaxes(title_text=y, secondary_y=False)
    fig.update_yaxes(title_text="accuracy", secondary_y=True, range=[0, 1])
    return fig


def meta_curves_figure(histories: Mapping[str, Sequence[Mapping[str, Any]]], *, window: int = 20) -> go.Figure:
    """Meta-training loss (smoothed) and validation accuracy with its 95% CI band, one colour per learner.

    Example:
        >>> hist = [{"step": 0, "loss": 1.0}, {"step": 10, "loss": 0.5}, {"step": 10, "val_acc": 0.6, "val_ci95": 0.1}]
        >>> fig = meta_curves_figure({"maml": hist})
        >>> [(trace.name, trace.xaxis) for trace in fig.data]  # loss; CI band and accuracy on the right
        [('maml', 'x'), (None, 'x2'), ('maml', 'x2')]
    """
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("meta-train query loss (smoothed)", "meta-val accuracy ± 95% CI")
    )
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for i, (name, hist) in enumerate(histories.items()):
        col = palette[i % len(palette)]
        tr = [h for h in hist if "loss" in h]
        if tr:
            fig.add_scatter(
                x=[h["step"] for h in tr],
                y=smooth([h["loss"] for h in tr], window),
                name=name,
                legendgroup=name,
                line={"color": col},
                row=1,
                col=1,
            )
        va = [h for h in hist if h.get("val_acc") is not None]
        if va:
            s = [h["step"] for h in va]
            m = np.array([h["val_acc"] for h in va])
            ci = np.nan_to_num(np.array([h.get("val_ci95") or 0.0 for h in va]))
            fig.add_scatter(
                x=s + s[::-1],
                y=list(m + ci) + list((m - ci)[::-1]),
                fill="toself",
                line={"width": 0},
                fillcolor=col,
                opacity=0.15,
                showlegend=False,
                legendgroup=name,
                hoverinfo="skip",
                row=1,
                col=2,
            )
            fig.add_scatter(
                x=s,
                y=m,
                mode="lines+markers",
                name=name,
                legendgroup=name,
                showlegend=not tr,
                line={"color": col},
                row=1,
                col=2,
            )
    fig.update_layout(height=400)
    fig.update_xaxes(title_text="meta-step")
    return fig


def _get(r: Any, key: str) -> Any:
    return r.get(key) if isinstance(r, Mapping) else getattr(r, key, None)


def results_bar_figure(
    results: Mapping[str, Any], *, metric: str = "acc", title: str | None = None, chance: float | None = None
) -> go.Figure:
    """Bars of ``<metric>_mean`` with ``<metric>_ci95`` error bars, one bar per learner (same episodes).

    ``chance`` (e.g. ``1 / n_way``) draws what guessing scores as a dotted line, so "near chance" can be seen.

    Example:
        >>> res = {"protonet": {"acc_mean": 0.7, "acc_ci95": 0.02, "episodes": 100},
        ...        "maml": {"acc_mean": 0.6, "acc_ci95": 0.03, "episodes": 100}}
        >>> bars = results_bar_figure(res).data[0]
        >>> list(bars.x), bars.text
        (['protonet', 'maml'], ('0.700', '0.600'))
    """
    names = list(results)
    means = [_get(results[n], f"{metric}_mean") for n in names]
    cis = [_get(results[n], f"{metric}_ci95") or 0.0 for n in names]
    fig = go.Figure(
        go.Bar(
            x=names,
            y=means,
            error_y={"type": "data", "array": cis, "visible": True},
            text=[f"{m:.3f}" if m is not None else "" for m in means],
            textposition="outside",
        )
    )
    if chance is not None:
        line = {"color": "grey", "dash": "dot", "width": 1}
        fig.add_hline(y=chance, line=line, annotation_text=f"chance {chance:.2f}", annotation_position="top right")
    fig.update_layout(title=title or f"{metric} (mean ± 95% CI)", yaxis_range=[0, 1.05], height=400)
    return fig


def results_table_figure(results: Mapping[str, Any], *, title: str = "") -> go.Figure:
    """A table: learner, accuracy ± CI, AUROC ± CI (2-way), episodes.

    Example:
        >>> res = {"protonet": {"acc_mean": 0.7, "acc_ci95": 0.02, "episodes": 100},
        ...        "maml": {"acc_mean": 0.6, "acc_ci95": 0.03, "episodes": 100}}
        >>> results_table_figure(res).data[0].cells.values[1]  # no ``auc_mean``: AUROC shows "—"
        ['0.700 ± 0.020', '0.600 ± 0.030']
    """

    def fmt(r: Any, k: str) -> str:
        m, h = _get(r, f"{k}_mean"), _get(r, f"{k}_ci95")
        if m is None:
            return "—"
        return f"{m:.3f}" if h is None else f"{m:.3f} ± {h:.3f}"  # a result without an interval shows the mean

    rows = [
        [n for n in results],
        [fmt(r, "acc") for r in results.values()],
        [fmt(r, "auc") for r in results.values()],
        [str(_get(r, "episodes")) for r in results.values()],
    ]
    fig = go.Figure(
        go.Table(
            header={"values": ["learner", "accuracy (95% CI)", "AUROC (95% CI)", "episodes"]}, cells={"values": rows}
        )
    )
    header_h, row_h, top, bottom = 30, 26, 60, 10
    fig.data[0].update(header={"height": header_h}, cells={"height": row_h})
    # tall enough for every row: with plotly's default margins a fixed height clipped the last learners
    fig.update_layout(
        title=title,
        height=top + bottom + header_h + row_h * len(results) + 10,
        margin={"t": top, "b": bottom, "l": 10, "r": 10},
    )
    return fig


def cross_site_figure(
    matrix: Sequence[Sequence[float | None]],
    *,
    rows: Sequence[str],
    cols: Sequence[str],
    title: str = "accuracy: train sites × test site",
    xlabel: str = "test site",
    ylabel: str = "trained on",
) -> go.Figure:
    """Heatmap of accuracies (e.g. training site × test site), values annotated.

    Example:
        >>> fig = cross_site_figure([[0.9, 0.6], [0.5, None]], rows=["A", "B"], cols=["A", "B"])
        >>> fig.data[0].text  # a missing cell stays blank
        (['0.90', '0.60'], ['0.50', ''])
    """
    z = np.array([[np.nan if v is None else v for v in r] for r in matrix], dtype=float)
    text = [["" if np.isnan(v) else f"{v:.2f}" for v in r] for r in z]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(cols),
            y=list(rows),
            text=text,
            texttemplate="%{text}",
            colorscale="Viridis",
            zmin=float(np.nanmin(z)) if np.isfinite(z).any() else 0,
            zmax=1.0,
        )
    )
    fig.update_layout(title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=120 + 45 * len(rows))
    return fig


def label_efficiency_figure(rows: Sequence[Mapping[str, Any]], *, metric: str = "acc") -> go.Figure:
    """Linear-probe ``metric`` vs labels per class, one line per encoder, with 95% CI error bars.

    ``rows`` come from ``medmeta_lib.ssl.probe.label_efficiency`` (``k_per_class`` None = all labels).

    Example:
        >>> rows = [{"encoder": "ssl", "k_per_class": 5, "acc_mean": 0.7, "acc_ci95": 0.05},
        ...         {"encoder": "ssl", "k_per_class": None, "acc_mean": 0.9, "acc_ci95": 0.01}]
        >>> [(trace.name, trace.x) for trace in label_efficiency_figure(rows).data]
        [('ssl', ('5', 'all'))]
    """
    fig = go.Figure()
    ks = sorted({r["k_per_class"] for r in rows if r["k_per_class"] is not None})
    labels = [str(k) for k in ks] + (["all"] if any(r["k_per_class"] is None for r in rows) else [])
    for name in dict.fromkeys(r["encoder"] for r in rows):
        x, y, e = _efficiency_points(rows, name, metric)
        fig.add_scatter(x=x, y=y, error_y={"type": "data", "array": e}, mode="lines+markers", name=name)
    fig.update_layout(
        title=f"linear probe {metric} vs labelled images per class (mean ± 95% CI over label draws)",
        xaxis={"title": "labelled images per class", "type": "category", "categoryarray": labels},
        yaxis_title=metric,
        height=400,
    )
    return fig


def _efficiency_points(rows: Sequence[Mapping[str, Any]], encoder: str, metric: str) -> tuple[list, list, list]:
    """One encoder's curve, in order of labels per class with "all" (``k_per_class`` None) last."""
    sel = sorted(
        (r for r in rows if r["encoder"] == encoder), key=lambda r: (r["k_per_class"] is None, r["k_per_class"] or 0)
    )
    x = [("all" if r["k_per_class"] is None else str(r["k_per_class"])) for r in sel]
    return x, [r.get(f"{metric}_mean") for r in sel], [r.get(f"{metric}_ci95") or 0.0 for r in sel]


def label_efficiency_matplotlib(rows: Sequence[Mapping[str, Any]], *, metric: str = "acc") -> Any:
    """The label-efficiency curve as a static matplotlib figure (for the run report's PNGs).

    Example:
        >>> import matplotlib.pyplot as plt
        >>> rows = [{"encoder": "ssl", "k_per_class": 5, "acc_mean": 0.7, "acc_ci95": 0.05},
        ...         {"encoder": "ssl", "k_per_class": None, "acc_mean": 0.9, "acc_ci95": 0.01}]
        >>> fig = label_efficiency_matplotlib(rows)
        >>> [t.get_text() for t in fig.axes[0].get_xticklabels()], fig.axes[0].get_legend_handles_labels()[1]
        (['5', 'all'], ['ssl'])
        >>> plt.close(fig)
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    for name in dict.fromkeys(r["encoder"] for r in rows):
        x, y, e = _efficiency_points(rows, name, metric)
        ax.errorbar(
            x,
            y,
            yerr=e,
            marker="o",
            capsize=3,
            label=name,
        )
    ax.set_xlabel("labelled images per class")
    ax.set_ylabel(f"probe {metric}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def results_bar_matplotlib(
    results: Mapping[str, Any], *, metric: str = "acc", title: str = "", chance: float | None = None
) -> Any:
    """Results bars with 95% CI error bars as a static matplotlib figure (for the run report's PNGs).

    ``chance`` (e.g. ``1 / n_way``) draws what guessing scores as a dotted line.

    Example:
        >>> import matplotlib.pyplot as plt
        >>> res = {"protonet": {"acc_mean": 0.7, "acc_ci95": 0.02, "episodes": 100},
        ...        "maml": {"acc_mean": 0.6, "acc_ci95": 0.03, "episodes": 100}}
        >>> fig = results_bar_matplotlib(res, title="accuracy")
        >>> len(fig.axes[0].patches), fig.axes[0].get_title()
        (2, 'accuracy')
        >>> plt.close(fig)
    """
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(names) + 1), 3))
    ax.bar(
        names,
        [_get(results[n], f"{metric}_mean") for n in names],
        yerr=[_get(results[n], f"{metric}_ci95") or 0.0 for n in names],
        capsize=3,
        color="#4c72b0",
    )
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="dotted", linewidth=1, label=f"chance {chance:.2f}")
        ax.legend(fontsize=7, loc="upper right", frameon=False)
    ax.set_ylabel(metric)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return fig


_REMEDY_PROTOCOLS = {
    "training_sites": "training hospitals<br>(new patients)",
    "held_out": "new hospital,<br>labels there",
    "held_out_remote_labels": "new hospital, labels from<br>the training hospitals",
}


def site_remedy_figure(result: Mapping[str, Any], *, title: str | None = None) -> go.Figure:
    """Plain against site-invariant pretraining under each deployment protocol (mean ± 95% CI).

    ``result`` is :func:`~medmeta_lib.studies.sites.site_invariance_remedy`'s output; each group is
    annotated with the paired difference (site-invariant − plain) over the same episodes.

    Example:
        >>> r = {"held_out_site": "D", "learner": "protonet", "difference": {},
        ...      "encoders": {"plain": {"held_out": {"acc": 0.5, "ci95": 0.02}}}}
        >>> len(site_remedy_figure(r).data)
        1
    """
    fig = go.Figure()
    protocols = [p for p in _REMEDY_PROTOCOLS if any(p in e for e in result["encoders"].values())]
    x = [_REMEDY_PROTOCOLS[p] for p in protocols]
    for variant, per in result["encoders"].items():
        fig.add_bar(
            x=x,
            y=[per[p]["acc"] for p in protocols],
            error_y={"type": "data", "array": [per[p]["ci95"] for p in protocols]},
            name=variant.replace("_", "-") + " pretraining",
        )
    for p, label in zip(protocols, x, strict=True):
        d = result.get("difference", {}).get(p)
        if d:
            fig.add_annotation(
                x=label, y=1.0, yref="paper", showarrow=False, text=f"Δ {d['mean']:+.3f} ± {d['ci95']:.3f}"
            )
    site = result.get("held_out_site", "?")
    fig.update_layout(
        barmode="group",
        title=title or f"{result.get('learner', '')}: plain vs site-invariant pretraining, new hospital {site}",
        yaxis={"title": "accuracy (mean ± 95% CI)", "range": [0, 1.05]},
        height=420,
    )
    return fig
