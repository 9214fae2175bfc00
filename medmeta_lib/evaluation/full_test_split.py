"""The full-test-split protocol: K labelled images per class, every official test image scored, over label draws.

The protocol a reader compares with the literature (PneumoniaMNIST and other MedMNIST sets): the same
D draws of K labelled train images per class for every learner, the whole test split predicted one
image at a time (inductive), accuracy, balanced accuracy and AUC with an interval over the draws and a
two-level bootstrap interval over draws *and* test images, the majority-class rate, and paired
differences against the best learner (docs/evaluation.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.evaluation.episodic import inference_mode
from medmeta_lib.evaluation.intervals import majority_rate, paired_difference, two_level_bootstrap
from medmeta_lib.learners.base import parameter_state

__all__ = [
    "SupportPredictor",
    "compare_full_test_split",
    "evaluate_full_test_split",
    "learner_predictor",
    "score_full_test_split",
]

#: a few-shot method that is not a learner: support indices into ``train`` (K per class, class-major)
#: -> ``(len(test), n_way)`` class probabilities for every test image (e.g. a logistic probe on features)
SupportPredictor = Callable[[np.ndarray], np.ndarray]


def _draw_supports(train: ImageCollection, n_way: int, k_shot: int, draws: int, seed: int) -> list[np.ndarray]:
    """The ``draws`` support index sets (K per class), a function of the train labels and ``seed`` only."""
    labels = train.labels.numpy()
    pools = [np.nonzero(labels == c)[0] for c in range(n_way)]
    for c, p in enumerate(pools):
        if len(p) < k_shot:
            raise ValueError(
                f"{train.source}: class {train.class_names[c]!r} has {len(p)} train images, fewer than "
                f"k_shot={k_shot}; lower --k-shot"
            )
    rng = np.random.default_rng(seed)
    return [np.concatenate([rng.choice(p, size=k_shot, replace=False) for p in pools]) for _ in range(draws)]


def learner_predictor(
    learner: Any,
    train: ImageCollection,
    test: ImageCollection,
    *,
    k_shot: int,
    steps: int | None = None,
    batch_size: int = 512,
) -> SupportPredictor:
    """A learner as a :data:`SupportPredictor`: adapt to the support indices, then predict every test image.

    Support images are ``train.images[idx]`` with labels ``0..n_way-1`` repeated ``k_shot`` times
    (class-major, as the draws are made); the learner's ``n_way`` is set to ``train``'s classes. Test
    images go through in chunks of ``batch_size``, which matters only for a transductive learner. Use it
    to combine learners with other methods, e.g. ``ensemble_predictor`` over several meta-trained learners.

    When the learner's features do not depend on the support set
    (:attr:`~medmeta_lib.learners.base.Learner.support_free_features`, e.g. a ProtoNet with GroupNorm), the
    test images are embedded once and only the classifier runs per support set: the same probabilities,
    without re-embedding the test split for every draw. The stored features are dropped when a parameter
    of the learner changes (e.g. an optimiser step between calls).

    Example:
        >>> predict = learner_predictor(protonet, train, test, k_shot=5)  # doctest: +SKIP
        >>> predict(support_indices).shape  # (len(test), n_way) probabilities  # doctest: +SKIP
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_way = train.num_classes
    if test.num_classes != n_way:
        raise ValueError(f"train has {n_way} classes but test has {test.num_classes}; they must match")
    if learner.n_way != n_way:
        learner.set_n_way(n_way)
    sy = torch.arange(n_way).repeat_interleave(k_shot)
    chunks = [test.images[i : i + batch_size] for i in range(0, len(test), batch_size)]
    cache: dict[tuple[int, ...], torch.Tensor] = {}

    def predict(idx: np.ndarray) -> np.ndarray:
        predictor, _ = learner.adapt(train.images[torch.from_numpy(idx)], sy, steps=steps)
        with torch.no_grad():
            if not getattr(learner, "support_free_features", False):
                return torch.cat([predictor(x).softmax(-1) for x in chunks]).numpy()
            key = parameter_state(learner)  # the test features go stale with the weights
            if key not in cache:
                cache.clear()
                cache[key] = torch.cat([predictor.embed(x) for x in chunks])
            return predictor.classify(cache[key]).softmax(-1).numpy()

    return predict


def evaluate_full_test_split(
    learner: Any,
    train: ImageCollection,
    test: ImageCollection,
    *,
    k_shot: int,
    draws: int = 100,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
    transductive: bool | None = None,
    n_boot: int = 1000,
    keep_predictions: bool = False,
) -> dict[str, Any]:
    """Few-shot protocol comparable to full-data results: K labelled train images per class, whole test split.

    For each of ``draws`` label draws, the learner adapts to ``k_shot`` images per class drawn from
    ``train`` and predicts every image of ``test`` (e.g. PneumoniaMNIST's official 624). The draws
    depend only on ``seed`` and the train labels, so every learner sees the same support sets.
    Predictions are inductive unless ``transductive=True`` (then test images are normalised with the
    statistics of their chunk of ``batch_size``, and the result says so).

    Args:
        learner: a :class:`~medmeta_lib.learners.base.Learner` (its ``n_way`` is set to the classes).
        train: the pool the K labelled images per class are drawn from.
        test: every image of it is scored.
        k_shot: labelled images per class.
        draws: label draws.
        steps: adaptation steps (``None``: the learner's default).
        seed: seed of the draws.
        batch_size: test images per forward pass (memory only, unless transductive).
        transductive: ``None`` keeps the learner's setting; ``True``/``False`` overrides it for this call.
        n_boot: bootstrap replicates for the intervals that include test-set sampling.
        keep_predictions: also return ``"correct"`` and ``"score"`` ``(draws, N)`` arrays (for
            :func:`compare_full_test_split`'s paired differences).

    Returns:
        ``{"learner", "k_shot", "draws", "test_images", "transductive", "majority_rate",
        "acc_mean", "acc_ci95", "acc_ci95_total", "acc_lo95", "acc_hi95", the same for "bal_acc" and (two
        classes) "auc", "recall_per_class", "per_draw_acc", "seconds"}``: ``ci95`` is over the label draws
        (``1.96·sd/√draws``); ``ci95_total``/``lo95``/``hi95`` come from a bootstrap over draws *and* test
        images. ``recall_per_class`` maps each test class's name to the same five numbers for its recall (the
        share of its images predicted right; balanced accuracy is their mean).

    Example:
        >>> r = evaluate_full_test_split(learner, train, test, k_shot=10, draws=100)  # doctest: +SKIP
        >>> r["acc_mean"], r["bal_acc_mean"], r["majority_rate"]  # doctest: +SKIP
        (0.83, 0.80, 0.625)
    """
    if isinstance(k_shot, bool) or not isinstance(k_shot, int) or k_shot < 1:
        raise ValueError(f"k_shot must be an int >= 1, got {k_shot!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    predict = learner_predictor(learner, train, test, k_shot=k_shot, steps=steps, batch_size=batch_size)
    with inference_mode(learner, transductive):
        mode = bool(learner.transductive)
        return score_full_test_split(
            learner.name,
            predict,
            train,
            test,
            k_shot=k_shot,
            draws=draws,
            seed=seed,
            n_boot=n_boot,
            keep_predictions=keep_predictions,
            transductive=mode,
        )


def score_full_test_split(
    name: str,
    predict: SupportPredictor,
    train: ImageCollection,
    test: ImageCollection,
    *,
    k_shot: int,
    draws: int = 100,
    seed: int = 0,
    n_boot: int = 1000,
    keep_predictions: bool = False,
    transductive: bool = False,
) -> dict[str, Any]:
    """The full-test-split protocol for any few-shot method given as a function of its support set.

    Draws the same ``draws`` support sets as :func:`evaluate_full_test_split` (a function of ``seed``
    and the train labels only), calls ``predict(support_indices)`` for each and scores every test
    image. Test labels are read only here, after the predictions.

    Args:
        name: the method's name in the result.
        predict: support indices into ``train`` (``k_shot`` per class, class-major) -> ``(len(test),
            n_way)`` probabilities.
        train: the pool the labelled images are drawn from.
        test: every image of it is scored.
        k_shot: labelled images per class.
        draws: label draws.
        seed: seed of the draws.
        n_boot: bootstrap replicates (intervals that include test-set sampling).
        keep_predictions: also return the ``"correct"`` and ``"score"`` matrices.
        transductive: recorded in the result (whether ``predict`` used batch statistics of test images).

    Returns:
        The same keys as :func:`evaluate_full_test_split`, ``"learner"`` holding ``name``; ``"seconds"``
        is the wall time of the ``draws`` adaptations and predictions.

    Example:
        >>> prior = lambda idx: np.full((len(test), 2), 0.5)  # doctest: +SKIP
        >>> score_full_test_split("prior", prior, train, test, k_shot=1)["acc_mean"]  # doctest: +SKIP
    """
    if isinstance(k_shot, bool) or not isinstance(k_shot, int) or k_shot < 1:
        raise ValueError(f"k_shot must be an int >= 1, got {k_shot!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    n_way = train.num_classes
    supports = _draw_supports(train, n_way, k_shot, draws, seed)
    t0 = time.perf_counter()
    probs = np.stack([np.asarray(predict(idx)) for idx in supports])  # (draws, N, n_way), before any test label
    if probs.shape[1:] != (len(test), n_way):
        raise ValueError(f"{name}: predict must return ({len(test)}, {n_way}) probabilities, got {probs.shape[1:]}")
    seconds = time.perf_counter() - t0
    ty = test.labels.numpy()
    correct = probs.argmax(-1) == ty[None, :]
    score = probs[:, :, 1] if n_way == 2 else None
    stats = two_level_bootstrap(correct, ty, score, n_boot=n_boot, seed=seed, per_class=True)
    out: dict[str, Any] = {
        "learner": name,
        "k_shot": k_shot,
        "draws": draws,
        "test_images": len(test),
        "transductive": transductive,
        "majority_rate": majority_rate(ty),
        "seconds": round(seconds, 2),
    }
    recalls = {m: st for m, st in stats.items() if m.startswith("recall_")}
    for metric, st in stats.items():
        if metric not in recalls:
            for key, value in st.items():
                out[f"{metric}_{key}"] = value
    names = test.class_names  # each class's recall under its name (two classes: specificity, sensitivity)
    out["recall_per_class"] = {names[int(m.removeprefix("recall_"))]: st for m, st in recalls.items()}
    out["per_draw_acc"] = correct.mean(1).tolist()
    if keep_predictions:
        out["correct"], out["score"] = correct, score
    return out


def compare_full_test_split(
    learners: Mapping[str, Any | SupportPredictor],
    train: ImageCollection,
    test: ImageCollection,
    *,
    k_shot: int,
    draws: int = 100,
    seed: int = 0,
    n_boot: int = 1000,
    **kw: Any,
) -> dict[str, Any]:
    """:func:`evaluate_full_test_split` for several learners on the same draws, with paired differences.

    A value may also be a :data:`SupportPredictor` (a method that is not a learner, scored with
    :func:`score_full_test_split`; ``**kw`` then applies to the learners only). The best learner
    (highest mean balanced accuracy) is compared with every other one: ``A − B`` for accuracy, balanced
    accuracy and AUC over the same draws and test images, with both intervals.

    Returns:
        ``{"results": {name: result}, "best": name, "paired_vs_best": {name: {metric: {...}}}}``.

    Example:
        >>> out = compare_full_test_split({"protonet": p, "baseline": b}, train, test, k_shot=5)  # doctest: +SKIP
        >>> out["paired_vs_best"]["baseline"]["acc"]["lo95"] > 0  # doctest: +SKIP
    """
    if not learners:
        raise ValueError("compare_full_test_split: give at least one learner")
    common: dict[str, Any] = {"k_shot": k_shot, "draws": draws, "seed": seed, "n_boot": n_boot}
    common["keep_predictions"] = True
    raw = {
        name: evaluate_full_test_split(lr, train, test, **common, **kw)
        if hasattr(lr, "adapt")
        else score_full_test_split(name, lr, train, test, **common)
        for name, lr in learners.items()
    }
    best = max(raw, key=lambda n: raw[n]["bal_acc_mean"])
    ty = test.labels.numpy()
    paired = {
        name: paired_difference(raw[best], r, ty, n_boot=n_boot, seed=seed) for name, r in raw.items() if name != best
    }
    results = {name: {k: v for k, v in r.items() if k not in ("correct", "score")} for name, r in raw.items()}
    return {"results": results, "best": best, "paired_vs_best": paired}
