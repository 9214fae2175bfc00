"""Descriptive statistics of a collection: intensity by site, 2-D projections, site predictability."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from medmeta_lib.data.collection import ImageCollection

__all__ = ["project_2d", "sample_indices", "site_predictability"]


def sample_indices(collection: ImageCollection, max_images: int, *, seed: int = 0) -> np.ndarray:
    """Up to ``max_images`` indices drawn uniformly without replacement (sorted), seeded.

    Example:
        >>> c = ImageCollection(images=torch.rand(10, 1, 4, 4), labels=torch.arange(10) % 2, class_names=("a", "b"))
        >>> sample_indices(c, 4, seed=0).tolist(), len(sample_indices(c, 20))
        ([2, 4, 5, 7], 10)
    """
    if max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    n = len(collection)
    if n <= max_images:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_images, replace=False))


def project_2d(features: torch.Tensor | np.ndarray, *, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Project ``(N, D)`` features to 2-D with scikit-learn's PCA or t-SNE.

    Example:
        >>> project_2d(np.random.rand(20, 5)).shape
        (20, 2)
    """
    from threadpoolctl import threadpool_limits

    x = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    with threadpool_limits(1):
        return _project(x, method, seed)


def _project(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        if len(x) > 50:
            x = PCA(n_components=min(50, x.shape[1]), random_state=seed).fit_transform(x)
        perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")


def site_predictability(collection: ImageCollection, *, max_images: int = 2000, seed: int = 0) -> float:
    """Cross-validated accuracy of predicting the *site* from raw pixels (chance = 1/num_sites).

    A value well above chance means the acquisition shift is visible in the pixels: a model can
    tell hospitals apart, and may latch onto that instead of the pathology. Three folds, stratified by site
    (two when a site has only two sampled images); a site with a single image gives ``nan`` and a warning.

    Example:
        >>> x = torch.cat([torch.full((6, 1, 4, 4), 0.2), torch.full((6, 1, 4, 4), 0.8)])  # site 1 is brighter
        >>> c = ImageCollection(images=x, labels=torch.tensor([0, 1] * 6), class_names=("a", "b"),
        ...                     sites=torch.tensor([0] * 6 + [1] * 6), site_names=("s0", "s1"))
        >>> site_predictability(c)
        1.0
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from threadpoolctl import threadpool_limits

    if collection.num_sites < 2:
        raise ValueError(f"{collection.source}: site predictability needs at least two sites")
    idx = sample_indices(collection, max_images, seed=seed)
    assert collection.sites is not None and collection.site_names is not None
    x = collection.images[idx].flatten(1).numpy()
    y = collection.sites[idx].numpy()
    counts = {collection.site_names[s]: int(n) for s, n in enumerate(np.bincount(y)) if n > 0}
    if min(counts.values()) < 2:
        warnings.warn(
            f"{collection.source}: site predictability needs at least 2 images at every site; sampled {counts}: "
            "returning nan",
            stacklevel=2,
        )
        return float("nan")
    clf = LogisticRegression(max_iter=300)
    # Small problems: BLAS threads only fight torch's OpenMP threads (measured 50x slower on 2 cores).
    with threadpool_limits(1):
        return float(cross_val_score(clf, x, y, cv=min(3, *counts.values())).mean())
