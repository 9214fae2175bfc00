"""Plots of what a weight-generating learner's second network wrote (data from ``medmeta_lib.studies.weights``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

__all__ = ["generated_weights_figure"]


def generated_weights_figure(
    head: Mapping[str, Any], *, class_names: Sequence[str] | None = None, title: str | None = None, height: int = 360
) -> go.Figure:
    """Heatmap: cosine similarity of each class's generated weight (rows) with each class prototype (columns).

    A strong diagonal means the second network wrote, for every class, a weight that points at that
    class's support images; off-diagonal structure shows which classes it separates less.

    Args:
        head: :func:`medmeta_lib.studies.weights.generated_head`'s output.
        class_names: names of the task's classes (default ``class 0``, ``class 1``…).
        title: figure title (default: says K).
        height: figure height in pixels.

    Example:
        >>> import torch
        >>> generated_weights_figure({"k": 1, "cosine": torch.eye(2)}).data[0].type
        'heatmap'
    """
    cos = head["cosine"]
    values = cos.tolist() if hasattr(cos, "tolist") else [list(r) for r in cos]
    n = len(values)
    names = list(class_names) if class_names is not None else [f"class {i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"class_names has {len(names)} names for {n} classes")
    diag = sum(values[i][i] for i in range(n)) / n
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=[f"prototype: {c}" for c in names],
            y=[f"generated: {c}" for c in names],
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            reversescale=True,
            text=[[f"{v:.2f}" for v in row] for row in values],
            texttemplate="%{text}",
            colorbar={"title": "cosine"},
        )
    )
    fig.update_layout(
        title=title or f"what the second network wrote, K = {head['k']} (mean diagonal cosine {diag:.2f})",
        height=height,
        yaxis={"autorange": "reversed"},
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig
