"""Frozen-feature evaluation of encoders: cosine kNN, linear probe, label-efficiency curve.

The probe protocol (docs/evaluation.md): draw ``k`` labelled training images
per class, fit a logistic regression (scikit-learn) on their standardised features, score it on the
*whole* test collection (accuracy and ROC AUC), repeat over seeded label draws and report the mean
± ``1.96 · sd / √draws``. The draws depend only on ``(seed, draw, k)`` and the labels, never on the
encoder, so two encoders probed with the same seed see exactly the same labelled images (a paired
comparison). Raw pixels are probed with ``nn.Flatten()`` as the encoder.

Features are inductive (:mod:`medmeta_lib.ssl.features`): an encoder with batch-statistics
normalisation is frozen with the population statistics of the (unlabelled) train images, so a test
image's feature never depends on the other test images; ``transductive=True`` is the explicit
per-batch alternative.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits
from torch import nn

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.models.task_norm import has_batch_stats
from medmeta_lib.ssl.features import extract_features, with_population_stats

__all__ = ["fit_probe", "knn_accuracy", "label_efficiency", "linear_probe", "pool_standardisation", "probe_predictor"]

ArrayLike = torch.Tensor | np.ndarray
#: an encoder, or precomputed ``(train_features, test_features)``
EncoderOrFeatures = nn.Module | tuple[ArrayLike, ArrayLike]


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def knn_accuracy(train_f: ArrayLike, train_y: ArrayLike, test_f: ArrayLike, test_y: ArrayLike, *, k: int = 5) -> float:
    """Accuracy of a cosine-distance k-nearest-neighbour classifier (scikit-learn, majority vote).

    Args:
        train_f: ``(N, D)`` labelled reference features.
        train_y: ``(N,)`` their labels.
        test_f: ``(M, D)`` features to classify.
        test_y: ``(M,)`` true labels.
        k: neighbours per vote (``1 <= k <= N``).

    Example:
        >>> f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> knn_accuracy(f, [0, 0, 1, 1], f, [0, 0, 1, 1], k=1)
        1.0
    """
    xf, yf, xt, yt = _np(train_f), _np(train_y).ravel(), _np(test_f), _np(test_y).ravel()
    if not 1 <= k <= len(xf):
        raise ValueError(f"k must lie in 1..{len(xf)} (the number of reference features), got {k}")
    if len(xf) != len(yf) or len(xt) != len(yt):
        raise ValueError("features and labels must have the same length (train_f/train_y, test_f/test_y)")
    clf = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute").fit(xf.reshape(len(xf), -1), yf)
    return float(clf.score(xt.reshape(len(xt), -1), yt))


def _features(
    enc: EncoderOrFeatures, train: ImageCollection, test: ImageCollection, transductive: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(enc, nn.Module):
        if not transductive:  # population statistics of the unlabelled train images, computed once
            enc = with_population_stats(enc, train.images) if has_batch_stats(enc) else enc
        return (
            _np(extract_features(enc, train.images, transductive=transductive)),
            _np(extract_features(enc, test.images, transductive=transductive)),
        )
    if isinstance(enc, tuple) and len(enc) == 2:
        ftr, fte = _np(enc[0]), _np(enc[1])
        if len(ftr) != len(train) or len(fte) != len(test):
            raise ValueError(
                f"precomputed features must have one row per image: got {len(ftr)}/{len(fte)} rows for "
                f"{len(train)}/{len(test)} train/test images"
            )
        return ftr.reshape(len(ftr), -1), fte.reshape(len(fte), -1)
    raise ValueError("encoder_or_features must be an nn.Module or a (train_features, test_features) tuple")


def _mean_ci(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray(values, dtype=np.float64)
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(1.96 * v.std(ddof=1) / np.sqrt(len(v)))


def _auc(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    present = np.unique(y)
    if len(present) < 2:
        return float("nan")  # AUC is undefined on a one-class test set
    if len(classes) == 2:
        return float(roc_auc_score(y, proba[:, 1]))
    if len(present) < len(classes):  # ovr needs every class in y: score on the classes present
        cols = np.searchsorted(classes, present)
        p = proba[:, cols] / proba[:, cols].sum(1, keepdims=True)
        return float(roc_auc_score(y, p, multi_class="ovr", average="macro", labels=present))
    return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes))


def linear_probe(
    encoder_or_features: EncoderOrFeatures,
    train: ImageCollection,
    test: ImageCollection,
    *,
    k_per_class: int | None,
    draws: int = 20,
    seed: int = 0,
    C: float = 1.0,
    max_iter: int = 2000,
    transductive: bool = False,
) -> dict[str, Any]:
    """Logistic-regression probe on ``k_per_class`` labelled train images per class, scored on all of ``test``.

    Features are standardised with the mean and standard deviation of *all* train features: only
    the unlabelled images are used for that (as SimCLR used them for pretraining), so the scaler
    is stable even at one label per class. Classes are those that have train images.

    Args:
        encoder_or_features: a frozen encoder (``nn.Flatten()`` for raw pixels) or precomputed
            ``(train_features, test_features)`` with one row per image.
        train: labelled pool the probe's training images are drawn from.
        test: every image of it is scored.
        k_per_class: labelled images per class; ``None`` uses every train image (then one draw).
        draws: repeated label draws (``>= 1``); the CI shrinks with ``√draws``.
        seed: draw ``d`` uses ``numpy.random.default_rng([seed, d])``, the same for every encoder.
        C: inverse L2 strength of scikit-learn's ``LogisticRegression`` (fixed, never tuned on test).
        max_iter: L-BFGS iterations.
        transductive: extract an encoder's features with per-chunk batch statistics instead of the
            population statistics of the train images (see :func:`extract_features`).

    Returns:
        ``{"acc_mean", "acc_ci95", "auc_mean", "auc_ci95", "draws", "k_per_class", "per_draw_acc"}``
        (``per_draw_acc`` allows paired comparisons of encoders over the same draws); AUC is ROC AUC
        for two classes and one-vs-rest macro AUC otherwise; ``ci95 = 1.96 · sd / √draws``.

    Raises:
        ValueError: for ``k_per_class < 1``, ``draws < 1``, ``C <= 0``, or a class with fewer
            than ``k_per_class`` train images.

    Example:
        >>> from medmeta_lib.data.collection import ImageCollection
        >>> col = ImageCollection(images=torch.rand(8, 1, 4, 4), labels=torch.tensor([0, 1] * 4),
        ...                       class_names=("a", "b"))
        >>> r = linear_probe(nn.Flatten(), col, col, k_per_class=2, draws=3)
        >>> sorted(r)
        ['acc_ci95', 'acc_mean', 'auc_ci95', 'auc_mean', 'draws', 'k_per_class', 'per_draw_acc']
    """
    if k_per_class is not None and k_per_class < 1:
        raise ValueError(f"k_per_class must be >= 1 or None (all labelled images), got {k_per_class}")
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if not C > 0:
        raise ValueError(f"C must be > 0 (inverse regularisation strength), got {C}")
    ftr, fte = _features(encoder_or_features, train, test, transductive)
    ytr, yte = _np(train.labels).astype(np.int64), _np(test.labels).astype(np.int64)
    classes = np.unique(ytr)
    if len(classes) < 2:
        raise ValueError(f"{train.source}: the probe needs train images of at least 2 classes, got {classes.tolist()}")
    unknown = sorted(set(np.unique(yte).tolist()) - set(classes.tolist()))
    if unknown:
        raise ValueError(f"{test.source}: test classes {unknown} have no train images; the probe cannot predict them")
    mean, std = pool_standardisation(ftr)  # constant features stay zero instead of dividing by zero
    ztr, zte = (ftr - mean) / std, (fte - mean) / std
    by_class = [np.flatnonzero(ytr == c) for c in classes]
    if k_per_class is not None:
        short = [(int(c), len(ix)) for c, ix in zip(classes, by_class) if len(ix) < k_per_class]
        if short:
            raise ValueError(
                f"{train.source}: k_per_class={k_per_class} but class(es) (id, count) {short} have fewer train "
                "images; lower k_per_class"
            )
    n_draws = 1 if k_per_class is None else draws
    accs, aucs = [], []
    # One BLAS thread: these fits are small (K·classes rows), and OpenBLAS's threads fight torch's OpenMP
    # threads for the same cores inside a notebook kernel. Measured on 2 cores: notebook 02's probe cell
    # took 209 s with the default BLAS threads and 32 s with one, with identical results.
    with threadpool_limits(1, user_api="blas"):
        for d in range(n_draws):
            if k_per_class is None:
                idx = np.arange(len(ytr))
            else:
                rng = np.random.default_rng([seed, d])
                idx = np.concatenate([rng.choice(ix, size=k_per_class, replace=False) for ix in by_class])
            with warnings.catch_warnings():
                # 1 image per class is the point of a few-shot probe, not a sign of a regression target
                warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
                clf = LogisticRegression(C=C, max_iter=max_iter).fit(ztr[idx], ytr[idx])
            proba = clf.predict_proba(zte)
            accs.append(float((clf.classes_[proba.argmax(1)] == yte).mean()))
            aucs.append(_auc(yte, proba, clf.classes_))
    acc_mean, acc_ci = _mean_ci(accs)
    auc_mean, auc_ci = _mean_ci(aucs)
    return {
        "acc_mean": acc_mean,
        "acc_ci95": acc_ci,
        "auc_mean": auc_mean,
        "auc_ci95": auc_ci,
        "draws": n_draws,
        "k_per_class": k_per_class,
        "per_draw_acc": accs,
    }


def label_efficiency(
    encoders: Mapping[str, EncoderOrFeatures],
    train: ImageCollection,
    test: ImageCollection,
    *,
    shots: Sequence[int | None] = (1, 5, 10, 20, None),
    draws: int = 10,
    seed: int = 0,
    C: float = 1.0,
    transductive: bool = False,
) -> list[dict[str, Any]]:
    """Linear-probe accuracy and AUC against labels per class, for several encoders (same label draws).

    Features are extracted once per encoder and reused for every shot count.

    Args:
        encoders: name → encoder (or precomputed ``(train_features, test_features)``), e.g.
            ``{"random init": enc0, "SimCLR": enc1, "raw pixels": nn.Flatten()}``.
        train: labelled pool for the probe.
        test: evaluation images.
        shots: labelled images per class; ``None`` means all (plotted as "all").
        draws: label draws per point.
        seed: draw seed (shared by all encoders: a paired comparison).
        C: logistic-regression inverse regularisation.
        transductive: per-chunk batch statistics for the features (see :func:`extract_features`).

    Returns:
        One row per (encoder, shot): ``{"encoder", "k_per_class", "acc_mean", "acc_ci95", "auc_mean",
        "auc_ci95", "draws"}``.

    Example:
        >>> from medmeta_lib.data.collection import ImageCollection
        >>> col = ImageCollection(images=torch.rand(8, 1, 4, 4), labels=torch.tensor([0, 1] * 4),
        ...                       class_names=("a", "b"))
        >>> rows = label_efficiency({"pixels": nn.Flatten()}, col, col, shots=(1, None), draws=2)
        >>> [r["k_per_class"] for r in rows]
        [1, None]
    """
    if not encoders:
        raise ValueError("encoders is empty; give at least one name -> encoder")
    if not shots:
        raise ValueError("shots is empty; give labels-per-class values such as (1, 5, 10, 20, None)")
    rows: list[dict[str, Any]] = []
    for name, enc in encoders.items():
        feats = _features(enc, train, test, transductive)
        for k in shots:
            r = linear_probe(feats, train, test, k_per_class=k, draws=draws, seed=seed, C=C)
            rows.append({"encoder": name, **r})
    return rows


def probe_predictor(
    train_features: ArrayLike,
    test_features: ArrayLike,
    train_labels: ArrayLike,
    *,
    C: float = 0.1,
    max_iter: int = 2000,
) -> Callable[[np.ndarray], np.ndarray]:
    """A logistic-regression probe as a function of its labelled images: support indices -> test probabilities.

    The returned function fits scikit-learn's ``LogisticRegression`` on the standardised features of
    the given train indices and returns ``(len(test_features), n_classes)`` probabilities (columns
    in class order). Features are standardised with the mean and sd of *all* train features (only
    the unlabelled images are used for that), as in :func:`linear_probe`. It reads no test label, so
    it plugs into :func:`~medmeta_lib.evaluation.full_test_split.score_full_test_split`.

    Args:
        train_features: ``(N, D)`` features of the labelled pool.
        test_features: ``(M, D)`` features of the images to classify.
        train_labels: ``(N,)`` labels of the pool, ``0 .. n_classes - 1``.
        C: inverse L2 strength (fixed; chosen on validation data, never on test).
        max_iter: L-BFGS iterations.

    Example:
        >>> f = np.array([[0.0], [0.1], [1.0], [1.1]])
        >>> predict = probe_predictor(f, f, [0, 0, 1, 1], C=10.0)
        >>> predict(np.array([0, 2])).argmax(1).tolist()
        [0, 0, 1, 1]
    """
    if not C > 0:
        raise ValueError(f"C must be > 0 (inverse regularisation strength), got {C}")
    ftr, fte = _np(train_features), _np(test_features)
    ytr = _np(train_labels).ravel().astype(np.int64)
    ftr, fte = ftr.reshape(len(ftr), -1), fte.reshape(len(fte), -1)
    if len(ftr) != len(ytr) or ftr.shape[1] != fte.shape[1]:
        raise ValueError(
            f"probe_predictor: {len(ftr)} train features for {len(ytr)} labels, feature sizes "
            f"{ftr.shape[1]} (train) and {fte.shape[1]} (test); they must match"
        )
    n_classes = int(ytr.max()) + 1
    mean, std = pool_standardisation(ftr)
    ztr, zte = (ftr - mean) / std, (fte - mean) / std

    def predict(idx: np.ndarray) -> np.ndarray:
        return fit_probe(ztr[idx], ytr[idx], n_classes=n_classes, C=C, max_iter=max_iter)(zte)

    return predict


def pool_standardisation(features: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """The mean and sd of an unlabelled pool's features (an sd below 1e-8 becomes 1: constant features stay 0).

    Example:
        >>> pool_standardisation(np.array([[0.0, 5.0], [2.0, 5.0]]))
        (array([1., 5.]), array([1., 1.]))
    """
    f = _np(features)  # in its own dtype: a float32 pool gives float32 statistics
    f = f.reshape(len(f), -1)
    std = f.std(0)
    return f.mean(0), np.where(std > 1e-8, std, 1.0)


def fit_probe(
    features: np.ndarray, labels: ArrayLike, *, n_classes: int, C: float = 0.1, max_iter: int = 2000
) -> Callable[[np.ndarray], np.ndarray]:
    """Fit the probe's logistic regression on (already standardised) support features.

    Returns:
        A function ``(M, D)`` features -> ``(M, n_classes)`` probabilities, columns in class order (a class
        absent from ``labels`` gets probability 0).

    Example:
        >>> proba = fit_probe(np.array([[-1.0], [-0.9], [1.0], [1.1]]), [0, 0, 1, 1], n_classes=2, C=10.0)
        >>> proba(np.array([[-2.0], [2.0]])).argmax(1).tolist()
        [0, 1]
    """
    if not C > 0:
        raise ValueError(f"C must be > 0 (inverse regularisation strength), got {C}")
    y = _np(labels).ravel().astype(np.int64)
    with threadpool_limits(1, user_api="blas"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The number of unique classes is greater than 50%")
        clf = LogisticRegression(C=C, max_iter=max_iter).fit(features, y)

    def proba(z: np.ndarray) -> np.ndarray:
        with threadpool_limits(1, user_api="blas"):
            p = clf.predict_proba(z)
        out = np.zeros((len(z), n_classes))
        out[:, clf.classes_] = p
        return out

    return proba
