"""Embedding trajectory: support, query and class prototypes in 2-D while a learner adapts.

One projection (PCA by default) is fitted once on the embeddings of *all* steps
(:func:`medmeta_lib.studies.adaptation.embedding_trajectory`) and reused for every step, so what
moves between frames is the model, not the projection. The plotly figure has a step slider and a
play button; each class has one colour, its prototype (the mean support embedding) is a star with
a trail of where it has been, and query points the model gets wrong are ringed in red.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from torch import Tensor

from medmeta_lib.learners.trace import AdaptationTrace
from medmeta_lib.studies.adaptation import embedding_trajectory

__all__ = ["CLASS_COLOURS", "embedding_trajectory_figure", "trajectory_figure"]

# tab10 without its red, which marks mistakes
CLASS_COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#393b79",
)  # fmt: skip
WRONG = "#d62728"


def _names(class_names: Sequence[str] | None, n_way: int) -> list[str]:
    if class_names is None:
        return [f"class {j}" for j in range(n_way)]
    if len(class_names) < n_way:
        raise ValueError(f"class_names has {len(class_names)} names but the task has {n_way} classes")
    return [str(n).split("/")[-1] for n in class_names[:n_way]]


def _frame_data(traj: Mapping[str, Any], i: int, names: list[str]) -> list[go.Scatter]:
    """The traces of step index ``i`` (same order and count for every step, as plotly frames need)."""
    data: list[go.Scatter] = []
    sy, qy = traj["support_y"], traj["query_y"]
    sup, qry, protos = traj["support"][i], traj["query"], traj["prototypes"]
    pred, conf = traj["query_pred"], traj["query_conf"]
    for c, name in enumerate(names):
        colour = CLASS_COLOURS[c % len(CLASS_COLOURS)]
        m = sy == c
        data.append(
            go.Scatter(
                x=sup[m, 0], y=sup[m, 1], mode="markers", name=name, legendgroup=name,
                marker={"color": colour, "size": 10, "line": {"color": "white", "width": 1}},
                hovertemplate=f"support · {name}<extra></extra>",
            )
        )  # fmt: skip
        if qry is not None and qy is not None:
            mq = qy == c
            if pred is not None:
                text = [
                    f"query · true {name} · predicted {names[int(p)]} ({cf:.0%})"
                    for p, cf in zip(pred[i][mq], conf[i][mq])
                ]
            else:
                text = [f"query · {name}"] * int(mq.sum())
            data.append(
                go.Scatter(
                    x=qry[i][mq, 0], y=qry[i][mq, 1], mode="markers", legendgroup=name, showlegend=False,
                    marker={"color": colour, "size": 7, "symbol": "diamond", "opacity": 0.75},
                    text=text, hovertemplate="%{text}<extra></extra>",
                )
            )  # fmt: skip
        else:
            data.append(go.Scatter(x=[], y=[], mode="markers", legendgroup=name, showlegend=False))
        trail = protos[: i + 1, c]
        data.append(
            go.Scatter(
                x=trail[:, 0], y=trail[:, 1], mode="lines", legendgroup=name, showlegend=False,
                line={"color": colour, "width": 1.5, "dash": "dot"}, hoverinfo="skip",
            )
        )  # fmt: skip
        data.append(
            go.Scatter(
                x=[protos[i, c, 0]], y=[protos[i, c, 1]], mode="markers", legendgroup=name, showlegend=False,
                marker={"color": colour, "size": 20, "symbol": "star", "line": {"color": "black", "width": 1.5}},
                hovertemplate=f"prototype · {name}<extra></extra>",
            )
        )  # fmt: skip
    if qry is not None and pred is not None and qy is not None:
        wrong = pred[i] != qy
        data.append(
            go.Scatter(
                x=qry[i][wrong, 0], y=qry[i][wrong, 1], mode="markers", name="misclassified query",
                marker={"color": WRONG, "size": 16, "symbol": "circle-open", "line": {"width": 2}},
                hoverinfo="skip",
            )
        )  # fmt: skip
    else:
        data.append(go.Scatter(x=[], y=[], mode="markers", showlegend=False))
    return data


def _title(traj: Mapping[str, Any], i: int) -> str:
    step = traj["steps"][i]
    who = traj.get("learner") or "learner"
    head = f"{who}: embeddings {'before adaptation' if step == 0 else f'after step {step}'}"
    acc = traj["query_acc"][i] if i < len(traj["query_acc"]) else None
    return head + ("" if acc is None else f" — query accuracy {acc:.0%}")


def _legend_keys() -> list[go.Scatter]:
    """Legend entries that explain the marker shapes (drawn nowhere: x=[None])."""
    keys = [("support (labelled)", "circle", 10), ("query", "diamond", 7), ("prototype (class mean)", "star", 14)]
    return [
        go.Scatter(
            x=[None],
            y=[None],
            mode="markers",
            name=n,
            legendgroup="_keys",
            marker={"color": "#555", "symbol": s, "size": z},
        )
        for n, s, z in keys
    ]


def trajectory_figure(
    traj: Mapping[str, Any],
    *,
    step: int | None = None,
    class_names: Sequence[str] | None = None,
    animate: bool = True,
    height: int = 560,
) -> go.Figure:
    """Draw a precomputed :func:`~medmeta_lib.studies.adaptation.embedding_trajectory`.

    Args:
        traj: the trajectory (2-D points per step).
        step: step shown first (default: 0, so that "play" runs the adaptation forwards).
        class_names: names of the episode's classes (label ``j`` → ``class_names[j]``).
        animate: add one frame per step with a slider and play/pause buttons; ``False`` draws
            ``step`` only (the AdaptationExplorer scrubs with its own slider).
        height: figure height in pixels.

    Example:
        >>> trajectory_figure(embedding_trajectory(trace, ep.support_y, ep.query_y), step=5)  # doctest: +SKIP
    """
    steps = list(traj["steps"])
    start = steps[0] if step is None else step
    if start not in steps:
        raise ValueError(f"step {start} is not in the trajectory (steps {steps[0]}..{steps[-1]})")
    i0 = steps.index(start)
    names = _names(class_names, int(traj["n_way"]))
    fig = go.Figure(data=[*_frame_data(traj, i0, names), *_legend_keys()])
    pts = [traj["support"].reshape(-1, 2), traj["prototypes"].reshape(-1, 2)]
    if traj["query"] is not None:
        pts.append(traj["query"].reshape(-1, 2))
    allp = np.concatenate(pts)
    lo, hi = allp.min(0), allp.max(0)
    pad = 0.08 * np.maximum(hi - lo, 1e-6)
    ev = traj.get("explained_variance")
    ax = ["PC1", "PC2"] if traj["method"] == "pca" else ["t-SNE 1", "t-SNE 2"]
    if ev:
        ax = [f"{a} ({v:.0%} of variance)" for a, v in zip(ax, ev)]
    fig.update_layout(
        title=_title(traj, i0),
        height=height,
        xaxis={"title": ax[0], "range": [lo[0] - pad[0], hi[0] + pad[0]], "zeroline": False},
        yaxis={"title": ax[1], "range": [lo[1] - pad[1], hi[1] + pad[1]], "zeroline": False},
        legend={"font": {"size": 11}, "itemsizing": "constant"},
        plot_bgcolor="#f7f7f9",
        margin={"t": 60},
    )
    if animate and len(steps) > 1:
        fig.frames = [
            go.Frame(data=_frame_data(traj, i, names), name=str(s), layout={"title": {"text": _title(traj, i)}})
            for i, s in enumerate(steps)
        ]
        play = {"frame": {"duration": 600, "redraw": True}, "transition": {"duration": 300}, "fromcurrent": True}
        fig.update_layout(
            updatemenus=[
                {
                    "type": "buttons", "direction": "left", "x": 0.0, "y": -0.14, "xanchor": "left", "yanchor": "top",
                    "showactive": False, "pad": {"t": 0, "r": 10},
                    "buttons": [
                        {"label": "▶ play", "method": "animate", "args": [None, play]},
                        {"label": "❚❚ pause", "method": "animate",
                         "args": [[None], {"frame": {"duration": 0, "redraw": False}, "mode": "immediate"}]},
                    ],
                }
            ],
            sliders=[
                {
                    "active": i0, "x": 0.24, "len": 0.76, "y": -0.1, "xanchor": "left", "yanchor": "top",
                    "pad": {"t": 0}, "currentvalue": {"prefix": "step ", "font": {"size": 12}},
                    "steps": [
                        {"label": str(s), "method": "animate",
                         "args": [[str(s)], {"mode": "immediate", "frame": {"duration": 0, "redraw": True},
                                             "transition": {"duration": 0}}]}
                        for s in steps
                    ],
                }
            ],
            margin={"b": 110, "t": 60},
            height=height + 60,
        )  # fmt: skip
    return fig


def embedding_trajectory_figure(
    trace: AdaptationTrace,
    support_y: Tensor,
    query_y: Tensor | None = None,
    *,
    method: str = "pca",
    class_names: Sequence[str] | None = None,
    step: int | None = None,
    seed: int = 0,
) -> go.Figure:
    """Support/query embeddings and prototypes across inner steps, with a step slider and animation.

    Args:
        trace: from ``learner.adapt(..., query_x=..., query_y=..., record_embeddings=True)``.
        support_y: the support labels.
        query_y: the query labels (``None``: support and prototypes only).
        method: ``"pca"`` (default; one linear map for all steps) or ``"tsne"``.
        class_names: names of the episode's classes.
        step: step shown first.
        seed: projection seed.

    Returns:
        A ``go.Figure`` with one frame per recorded step (``steps + 1`` frames).

    Example:
        >>> _, tr = maml.adapt(ep.support_x, ep.support_y, query_x=ep.query_x, query_y=ep.query_y,
        ...                    record_embeddings=True)  # doctest: +SKIP
        >>> embedding_trajectory_figure(tr, ep.support_y, ep.query_y)  # doctest: +SKIP
    """
    traj = embedding_trajectory(trace, support_y, query_y, method=method, seed=seed)
    return trajectory_figure(traj, step=step, class_names=class_names)
