"""Views of a collection: sample grids by class and by site, balance, intensities, projections, episodes."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
from matplotlib.figure import Figure

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import Episode
from medmeta_lib.data.stats import project_2d, sample_indices

__all__ = [
    "class_balance_figure",
    "episode_figure",
    "projection_figure",
    "sample_grid",
    "site_grid",
    "site_histogram_figure",
]


def _show(ax, img, interpolation: str | None = None) -> None:
    """Draw a ``(C, H, W)`` image in ``[0, 1]`` (a tensor or an array): greyscale or colour, no ticks."""
    arr = img.detach().cpu().float().numpy() if hasattr(img, "detach") else np.asarray(img)
    if arr.shape[0] == 1:
        ax.imshow(arr[0], cmap="gray", vmin=0, vmax=1, interpolation=interpolation)
    else:
        ax.imshow(np.clip(arr.transpose(1, 2, 0), 0, 1), interpolation=interpolation)
    ax.set_xticks([])
    ax.set_yticks([])


def _short(name: str) -> str:
    return name.split("/")[-1]


def sample_grid(
    collection: ImageCollection,
    *,
    per_class: int = 6,
    classes: Sequence[int] | None = None,
    seed: int = 0,
) -> Figure:
    """A grid with one row per class and ``per_class`` random images of it.

    Example:
        >>> import torch
        >>> c = ImageCollection(images=torch.rand(6, 1, 8, 8), labels=torch.tensor([0, 0, 0, 1, 1, 1]),
        ...                     class_names=("a", "b"))
        >>> len(sample_grid(c, per_class=2).axes)
        4
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    classes = list(range(collection.num_classes)) if classes is None else list(classes)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(
        len(classes),
        per_class,
        figsize=(per_class * 1.0, len(classes) * 1.0 + 0.4),
        squeeze=False,
        layout="constrained",
    )
    labels = collection.labels.numpy()
    for r, c in enumerate(classes):
        pool = np.nonzero(labels == c)[0]
        pick = rng.choice(pool, size=min(per_class, len(pool)), replace=False) if len(pool) else pool
        for j in range(per_class):
            ax = axes[r, j]
            if j < len(pick):
                _show(ax, collection.images[pick[j]])
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(_short(collection.class_names[c]), rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"{collection.source} ({collection.split}): samples per class", fontsize=10)
    return fig


def site_grid(collection: ImageCollection, *, classes: Sequence[int] | None = None, seed: int = 0) -> Figure:
    """One image per (class, site): rows are classes, columns are sites — the acquisition shift made visible.

    Example:
        >>> import torch
        >>> c = ImageCollection(images=torch.linspace(0, 1, 512).reshape(8, 1, 8, 8), labels=torch.tensor([0, 1] * 4),
        ...                     class_names=("a", "b"), sites=torch.tensor([0, 0, 1, 1] * 2), site_names=("s0", "s1"))
        >>> fig = site_grid(c)
        >>> len(fig.axes), fig.axes[1].get_title()
        (4, 's1')
        >>> plt.close(fig)
    """
    assert collection.sites is not None and collection.site_names is not None
    classes = list(range(min(collection.num_classes, 8))) if classes is None else list(classes)
    rng = np.random.default_rng(seed)
    ns = collection.num_sites
    fig, axes = plt.subplots(
        len(classes), ns, figsize=(ns * 1.2, len(classes) * 1.2 + 0.4), squeeze=False, layout="constrained"
    )
    labels, sites = collection.labels.numpy(), collection.sites.numpy()
    for r, c in enumerate(classes):
        for s in range(ns):
            ax = axes[r, s]
            pool = np.nonzero((labels == c) & (sites == s))[0]
            if len(pool):
                _show(ax, collection.images[rng.choice(pool)])
            else:
                ax.axis("off")
            if r == 0:
                ax.set_title(_short(collection.site_names[s]), fontsize=8)
        axes[r, 0].set_ylabel(_short(collection.class_names[c]), rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("the same classes at different sites (hospitals / devices)", fontsize=10)
    return fig


def class_balance_figure(collection: ImageCollection) -> go.Figure:
    """Stacked bar chart of images per class, one colour per site.

    Example:
        >>> import torch
        >>> c = ImageCollection(images=torch.linspace(0, 1, 512).reshape(8, 1, 8, 8), labels=torch.tensor([0, 1] * 4),
        ...                     class_names=("a", "b"), sites=torch.tensor([0, 0, 1, 1] * 2), site_names=("s0", "s1"))
        >>> fig = class_balance_figure(c)
        >>> [(bar.name, list(bar.y)) for bar in fig.data]
        [('s0', [2, 2]), ('s1', [2, 2])]
    """
    assert collection.site_names is not None
    counts = collection.site_class_counts().numpy()
    fig = go.Figure()
    for s, name in enumerate(collection.site_names):
        fig.add_bar(name=name, x=list(collection.class_names), y=counts[s].tolist())
    fig.update_layout(barmode="stack", title="class balance by site", xaxis_tickangle=-45, height=420)
    return fig


def site_histogram_figure(collection: ImageCollection, *, bins: int = 40, max_images: int = 2000) -> go.Figure:
    """Per-site pixel-intensity histograms (normalised): exposure, contrast and offset differences.

    Example:
        >>> import torch
        >>> c = ImageCollection(images=torch.linspace(0, 1, 512).reshape(8, 1, 8, 8), labels=torch.tensor([0, 1] * 4),
        ...                     class_names=("a", "b"), sites=torch.tensor([0, 0, 1, 1] * 2), site_names=("s0", "s1"))
        >>> fig = site_histogram_figure(c, bins=10)
        >>> [line.name for line in fig.data], len(fig.data[0].x)
        (['s0', 's1'], 10)
    """
    assert collection.sites is not None and collection.site_names is not None
    idx = sample_indices(collection, max_images)
    edges = np.linspace(0, 1, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure()
    for s, name in enumerate(collection.site_names):
        sel = idx[collection.sites[idx].numpy() == s]
        if len(sel) == 0:
            continue
        h, _ = np.histogram(collection.images[sel].numpy().ravel(), bins=edges, density=True)
        fig.add_scatter(x=centres, y=h, mode="lines", name=name)
    fig.update_layout(title="pixel intensity by site", xaxis_title="intensity", yaxis_title="density", height=380)
    return fig


def projection_figure(
    collection: ImageCollection,
    *,
    color_by: str = "class",
    method: str = "pca",
    max_images: int = 1500,
    features: np.ndarray | None = None,
    seed: int = 0,
) -> go.Figure:
    """2-D projection (PCA or t-SNE) of raw pixels (or given features), coloured by class or by site.

    Args:
        collection: the images.
        color_by: ``"class"``, ``"site"`` or ``"modality"``.
        method: ``"pca"`` or ``"tsne"``.
        max_images: subsample for speed.
        features: optional ``(N, D)`` features aligned with the collection (else raw pixels).
        seed: subsampling and projection seed.

    Example:
        >>> import torch
        >>> c = ImageCollection(images=torch.linspace(0, 1, 512).reshape(8, 1, 8, 8), labels=torch.tensor([0, 1] * 4),
        ...                     class_names=("a", "b"), sites=torch.tensor([0, 0, 1, 1] * 2), site_names=("s0", "s1"))
        >>> fig = projection_figure(c, color_by="site")
        >>> fig.layout.title.text, [t.name for t in fig.data]
        ('PCA of pixels, by site', ['s0', 's1'])
    """
    if color_by not in ("class", "site", "modality"):
        raise ValueError(f"color_by must be 'class', 'site' or 'modality', got {color_by!r}")
    assert collection.sites is not None and collection.site_names is not None
    idx = sample_indices(collection, max_images, seed=seed)
    x = collection.images[idx].flatten(1).numpy() if features is None else np.asarray(features)[idx]
    xy = project_2d(x, method=method, seed=seed)
    labels = collection.labels[idx].numpy()
    if color_by == "class":
        groups, names = labels, list(collection.class_names)
    elif color_by == "site":
        groups, names = collection.sites[idx].numpy(), list(collection.site_names)
    else:
        mods = list(collection.modalities)
        cm = collection.class_modalities or ("unknown",) * collection.num_classes
        groups, names = np.array([mods.index(cm[c]) for c in labels]), mods
    fig = go.Figure()
    for g, name in enumerate(names):
        m = groups == g
        if m.any():
            fig.add_scattergl(x=xy[m, 0], y=xy[m, 1], mode="markers", name=name, marker={"size": 4, "opacity": 0.7})
    fig.update_layout(
        title=f"{method.upper()} of {'features' if features is not None else 'pixels'}, by {color_by}",
        height=480,
        legend={"font": {"size": 9}},
    )
    return fig


def episode_figure(episode: Episode, *, class_names: Sequence[str] | None = None, max_query: int = 6) -> Figure:
    """One row per class: its K support images, a gap, then up to ``max_query`` query images.

    Example:
        >>> import torch
        >>> from medmeta_lib.data.episodes import EpisodeSampler
        >>> c = ImageCollection(images=torch.linspace(0, 1, 512).reshape(8, 1, 8, 8), labels=torch.tensor([0, 1] * 4),
        ...                     class_names=("a", "b"))
        >>> episode = EpisodeSampler(c, n_way=2, k_shot=1, q_query=2, seed=0).sample()
        >>> fig = episode_figure(episode, class_names=c.class_names)
        >>> len(fig.axes), fig.get_suptitle()  # 2 rows of 1 support + gap + 2 queries
        (8, '2-way 1-shot task (site 0)')
        >>> plt.close(fig)
    """
    n, k, q = episode.n_way, episode.k_shot, min(episode.q_query, max_query)
    cols = k + 1 + q
    fig, axes = plt.subplots(n, cols, figsize=(cols * 0.9, n * 0.95 + 0.4), squeeze=False, layout="constrained")
    for r in range(n):
        for j in range(k):
            _show(axes[r, j], episode.support_x[r * k + j])
        axes[r, k].axis("off")
        for j in range(q):
            _show(axes[r, k + 1 + j], episode.query_x[r * episode.q_query + j])
        name = class_names[episode.classes[r]] if class_names else str(episode.classes[r])
        axes[r, 0].set_ylabel(_short(name), rotation=0, ha="right", va="center", fontsize=8)
    axes[0, 0].set_title("support", fontsize=8, loc="left")
    if q:
        axes[0, k + 1].set_title("query", fontsize=8, loc="left")
    where = f"site {episode.site}" if episode.site is not None else "mixed sites"
    fig.suptitle(f"{n}-way {k}-shot task ({where})", fontsize=10)
    return fig
