"""Intervals for few-shot results on a fixed test split: label draws *and* test-set sampling, paired differences.

On a fixed test split (PneumoniaMNIST's 624 images) a result varies for two reasons: which K labelled
images were drawn (``draws``) and which test images happened to be collected. ``1.96 · sd / √draws``
covers the first only. :func:`two_level_bootstrap` covers both: each replicate resamples the draws
*and* the test images (with replacement, the same image weights for every draw), recomputes the
metric and takes the mean; the 2.5th and 97.5th percentiles of the replicates are the interval.
(Like every two-stage bootstrap it counts the draw × image interaction twice, so it errs on the wide
side when draws disagree image by image; it is never narrower than the draw-only interval's share.)
:func:`paired_difference` applies the same replicates to two methods scored on the same draws and
images, so "A beats B" comes with an interval of ``A − B``.

Metrics are computed from ``(draws, images)`` matrices: ``correct`` (prediction = label), and for
two classes ``score`` (the positive class's probability). The point estimates use scikit-learn
(``balanced_accuracy_score``, ``roc_auc_score``); the bootstrap re-weights them in closed form
(weighted accuracy, weighted per-class recall, weighted Mann-Whitney AUC) so 1,000 replicates of
100 draws take well under a second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["majority_rate", "mean_ci", "paired_difference", "split_metrics", "two_level_bootstrap"]


def mean_ci(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and 95% confidence half-width ``1.96 · sd / √n`` (sample sd, ``ddof=1``).

    Example:
        >>> m, h = mean_ci([0.5, 0.7])
        >>> round(m, 3), round(h, 3)
        (0.6, 0.196)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_ci needs at least one value")
    if v.size == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(v.size))


def majority_rate(labels: Sequence[int] | np.ndarray) -> float:
    """Accuracy of always predicting the most frequent class (the floor on an imbalanced test split).

    Example:
        >>> majority_rate([1, 1, 1, 0])
        0.75
    """
    y = np.asarray(labels).ravel()
    if y.size == 0:
        raise ValueError("majority_rate needs at least one label")
    return float(np.bincount(y.astype(np.int64)).max() / y.size)


def _weighted_acc(correct: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(D, B)``: accuracy of each draw under each replicate's image weights ``w (B, N)``."""
    return correct @ w.T / w.sum(1)[None, :]


def _weighted_recall(correct: np.ndarray, y: np.ndarray, w: np.ndarray, c: int) -> np.ndarray:
    """``(D, B)``: recall of class ``c`` (the share of its images predicted right) under each replicate's weights."""
    m = y == c
    wc = w[:, m]
    return correct[:, m] @ wc.T / np.maximum(wc.sum(1), 1e-12)[None, :]


def _weighted_bal_acc(correct: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.mean([_weighted_recall(correct, y, w, int(c)) for c in np.unique(y)], axis=0)


def _weighted_auc(score: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``(D, B)`` Mann-Whitney AUC with image weights (ties count one half)."""
    out = np.empty((score.shape[0], w.shape[0]))
    pos = y == 1
    for d in range(score.shape[0]):
        order = np.argsort(score[d], kind="stable")
        s, p, ws = score[d][order], pos[order], w[:, order]
        # weight of negatives strictly below each position, and tied with it
        neg_w = ws * (~p)[None, :]
        cum = np.cumsum(neg_w, axis=1)
        _, first, counts = np.unique(s, return_index=True, return_counts=True)
        group_end = np.repeat(first + counts - 1, counts)
        group_start = np.repeat(first, counts)
        below = np.where(group_start[None, :] > 0, cum[:, np.maximum(group_start - 1, 0)], 0.0)
        tied = cum[:, group_end] - below
        pos_w = ws * p[None, :]
        num = (pos_w * (below + 0.5 * tied)).sum(1)
        den = pos_w.sum(1) * neg_w.sum(1)
        out[d] = num / np.maximum(den, 1e-12)
    return out


def split_metrics(
    correct: np.ndarray, y: np.ndarray, score: np.ndarray | None = None, *, per_class: bool = False
) -> dict[str, np.ndarray]:
    """Per-draw metrics ``{"acc", "bal_acc"[, "auc"]}`` (each ``(D,)``) from ``(D, N)`` matrices.

    Args:
        correct: ``(D, N)`` booleans, draw ``d``'s prediction for test image ``n`` is right.
        y: ``(N,)`` test labels.
        score: ``(D, N)`` positive-class probability (two classes only), for the AUC.
        per_class: also ``"recall_<c>"`` for every class ``c`` in ``y``: the share of its images predicted
            right (balanced accuracy is their mean; with two classes, specificity and sensitivity).

    Example:
        >>> m = split_metrics(np.array([[True, False, True, True]]), np.array([0, 0, 1, 1]), per_class=True)
        >>> float(m["acc"][0]), float(m["bal_acc"][0]), float(m["recall_0"][0]), float(m["recall_1"][0])
        (0.75, 0.75, 0.5, 1.0)
    """
    correct, y = _check(correct, y, score)
    ones = np.ones((1, correct.shape[1]))
    out = {"acc": _weighted_acc(correct, ones)[:, 0], "bal_acc": _weighted_bal_acc(correct, y, ones)[:, 0]}
    if score is not None:
        out["auc"] = _weighted_auc(np.asarray(score, dtype=np.float64), y, ones)[:, 0]
    if per_class:
        out.update({f"recall_{c}": _weighted_recall(correct, y, ones, int(c))[:, 0] for c in np.unique(y)})
    return out


def _check(correct: np.ndarray, y: np.ndarray, score: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(correct, dtype=np.float64)
    yy = np.asarray(y).ravel().astype(np.int64)
    if c.ndim != 2 or c.shape[1] != yy.size or c.shape[0] < 1:
        raise ValueError(f"correct must be (draws, images) with images = len(y) = {yy.size}, got {c.shape}")
    if score is not None:
        if np.shape(score) != c.shape:
            raise ValueError(f"score must have the shape of correct {c.shape}, got {np.shape(score)}")
        if set(np.unique(yy).tolist()) != {0, 1}:
            raise ValueError("score (AUC) needs a two-class test split with labels 0 and 1")
    return c, yy


def _replicates(n_draws: int, n_images: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.multinomial(n_images, np.full(n_images, 1.0 / n_images), size=n_boot).astype(np.float64)
    draws = rng.integers(0, n_draws, size=(n_boot, n_draws))
    return w, draws


def _boot_metric(name: str, correct: np.ndarray, y: np.ndarray, score: np.ndarray | None, w: np.ndarray) -> np.ndarray:
    if name == "acc":
        return _weighted_acc(correct, w)
    if name == "bal_acc":
        return _weighted_bal_acc(correct, y, w)
    if name.startswith("recall_"):
        return _weighted_recall(correct, y, w, int(name.removeprefix("recall_")))
    assert score is not None
    return _weighted_auc(score, y, w)


def _summary(per_draw: np.ndarray, boot: np.ndarray) -> dict[str, float]:
    mean, ci = mean_ci(per_draw)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {"mean": mean, "ci95": ci, "lo95": float(lo), "hi95": float(hi), "ci95_total": float((hi - lo) / 2)}


def two_level_bootstrap(
    correct: np.ndarray,
    y: np.ndarray,
    score: np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    per_class: bool = False,
) -> dict[str, dict[str, float]]:
    """Mean of each metric with its draw-only interval and an interval that includes test-set sampling.

    Args:
        correct: ``(D, N)`` booleans (draw × test image).
        y: ``(N,)`` test labels.
        score: ``(D, N)`` positive-class probabilities for the AUC (two classes), or ``None``.
        n_boot: bootstrap replicates.
        seed: bootstrap seed.
        per_class: also each class's recall, ``recall_<c>`` (:func:`split_metrics`).

    Returns:
        ``{metric: {"mean", "ci95" (1.96·sd/√D over draws), "lo95", "hi95" (percentiles of the two-level
        bootstrap), "ci95_total" (half their distance)}}`` for ``acc``, ``bal_acc``, ``auc`` and, with
        ``per_class``, ``recall_<c>``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> r = two_level_bootstrap(rng.random((5, 200)) < 0.8, rng.integers(0, 2, 200), n_boot=200)
        >>> r["acc"]["ci95_total"] > r["acc"]["ci95"]
        True
    """
    correct, y = _check(correct, y, score)
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise ValueError(f"n_boot must be an int >= 10, got {n_boot!r}")
    sc = None if score is None else np.asarray(score, dtype=np.float64)
    w, draws = _replicates(correct.shape[0], correct.shape[1], n_boot, seed)
    per = split_metrics(correct, y, sc, per_class=per_class)
    out = {}
    cols = np.arange(n_boot)[:, None]
    for name, values in per.items():
        m = _boot_metric(name, correct, y, sc, w)  # (D, B)
        out[name] = _summary(values, m[draws, cols].mean(1))
    return out


def paired_difference(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    y: np.ndarray,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """``A − B`` for each metric, paired over the same draws and test images, with both intervals.

    Args:
        a: ``{"correct": (D, N), "score": (D, N) or None}`` of method A.
        b: the same for method B (same draws, same images, same order).
        y: ``(N,)`` test labels.
        n_boot: bootstrap replicates (the same replicates for A and B).
        seed: bootstrap seed.

    Returns:
        ``{metric: {"mean", "ci95", "lo95", "hi95", "ci95_total"}}`` of the difference; an interval
        that excludes 0 backs "A beats B" (or the reverse).

    Example:
        >>> y = np.array([0, 1] * 50)
        >>> good, bad = {"correct": np.ones((3, 100), bool)}, {"correct": np.zeros((3, 100), bool)}
        >>> paired_difference(good, bad, y, n_boot=50)["acc"]["lo95"]
        1.0
    """
    ca, yy = _check(a["correct"], y, a.get("score"))
    cb, _ = _check(b["correct"], y, b.get("score"))
    if ca.shape != cb.shape:
        raise ValueError(f"A and B must be scored on the same draws and images: {ca.shape} vs {cb.shape}")
    sa, sb = a.get("score"), b.get("score")
    w, draws = _replicates(ca.shape[0], ca.shape[1], n_boot, seed)
    pa, pb = split_metrics(ca, yy, sa), split_metrics(cb, yy, sb)
    cols = np.arange(n_boot)[:, None]
    out = {}
    for name in pa:
        if name not in pb:
            continue
        sa_ = None if sa is None else np.asarray(sa, dtype=np.float64)
        sb_ = None if sb is None else np.asarray(sb, dtype=np.float64)
        diff = _boot_metric(name, ca, yy, sa_, w) - _boot_metric(name, cb, yy, sb_, w)
        out[name] = _summary(pa[name] - pb[name], diff[draws, cols].mean(1))
    return out
