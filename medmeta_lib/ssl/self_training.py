"""Self-training on the unlabelled train pool: one round of class-balanced pseudo-labels.

Semi-supervised few-shot learning with the images SimCLR already saw without labels. Per support set, a
classifier fitted on the K labelled images per class predicts every other pool image; for each class, the
``per_class`` pool images predicted as that class with the highest probability of it take it as a
pseudo-label; the classifier is refitted on the support set plus those images and then classifies the images
to score. It stays **inductive** on the scored images: pseudo-labels come from the pool (the train split),
never from the images being classified, so each scored image is classified from its own features, the support
set and the pool.

No true label of a pseudo-labelled image is read: the refit reads a copy of the pool's labels in which those
entries are overwritten, and a :data:`Member` reads only the labels at the indices it is given.

On PneumoniaMNIST's validation split (BENCHMARKS.md section 15) one round with 100 pseudo-labels per class
raised ``medmeta fewshot``'s recipe at K = 1 and 2 and lowered it from K = 3, which is why the command uses it
for K <= 2 only.

Example:
    >>> f = np.array([[0.0], [0.2], [0.4], [3.0], [3.2], [3.4]])
    >>> members = [probe_member(f, f, C=1.0)]
    >>> predict = self_trained_predictor(members, np.array([0, 0, 0, 1, 1, 1]), per_class=2)
    >>> predict(np.array([0, 3])).argmax(1).tolist()
    [0, 0, 0, 1, 1, 1]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from medmeta_lib.learners.base import check_int, parameter_state
from medmeta_lib.ssl.probe import probe_predictor

__all__ = ["Member", "probe_member", "prototype_member", "pseudo_label", "self_trained_predictor"]

Predictor = Callable[[np.ndarray], np.ndarray]
#: ``member(labels, on_pool)``: a classifier as a function of support indices into the pool, for the pool's
#: ``labels`` (only the entries at the indices it is given are read), predicting the pool itself
#: (``on_pool=True``) or the images to score (``False``)
Member = Callable[[np.ndarray, bool], Predictor]


def pseudo_label(probs: ArrayLike, support: ArrayLike, *, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """Class-balanced pseudo-labels from the pool's class probabilities.

    Per class, the ``per_class`` pool images outside ``support`` predicted as that class with the highest
    probability of it (fewer when fewer are predicted so).

    Args:
        probs: ``(N, n_classes)`` class probabilities of the pool.
        support: indices of the labelled images (never pseudo-labelled).
        per_class: pseudo-labels per class (>= 0).

    Returns:
        ``(indices, labels)``, class by class, each class's images by decreasing probability.

    Example:
        >>> p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.3, 0.7]])
        >>> pseudo_label(p, [0], per_class=1)
        (array([1, 2]), array([0, 1]))
    """
    per_class = check_int("per_class", per_class, 0)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must be (N, n_classes >= 2) probabilities, got shape {p.shape}")
    free = np.ones(len(p), dtype=bool)
    free[np.asarray(support, dtype=np.int64)] = False
    pred = p.argmax(1)
    idx, lab = [], []
    for c in range(p.shape[1]):
        cand = np.flatnonzero(free & (pred == c))
        top = cand[np.argsort(-p[cand, c], kind="stable")[:per_class]]
        idx.append(top)
        lab.append(np.full(len(top), c, dtype=np.int64))
    return np.concatenate(idx), np.concatenate(lab)


def self_trained_predictor(
    members: Sequence[Member],
    pool_labels: ArrayLike,
    *,
    per_class: int,
    weights: Sequence[float] | None = None,
) -> Predictor:
    """The weighted mean of ``members``' probabilities, refitted once on support + pseudo-labelled pool images.

    Args:
        members: classifiers of the pool (e.g. :func:`probe_member`, :func:`prototype_member`).
        pool_labels: ``(N,)`` labels of the pool; only the support indices' entries are read.
        per_class: pseudo-labels per class (:func:`pseudo_label`); ``0``: the mix fitted on the support set.
        weights: one non-negative weight per member (``None``: equal); normalised to sum to 1.

    Returns:
        Support indices -> ``(M, n_classes)`` probabilities of the images to score.

    Example:
        >>> predict = self_trained_predictor([probe_member(pool, test, C=0.1)], labels, per_class=100)  # doctest: +SKIP
        >>> predict(support_indices).shape  # doctest: +SKIP
        (624, 2)
    """
    if not members:
        raise ValueError("self_trained_predictor needs at least one member")
    w = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(members),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(members)} non-negative numbers, not all 0; got {weights!r}")
    w = w / w.sum()
    labels0 = np.asarray(pool_labels).ravel().astype(np.int64)
    per_class = check_int("per_class", per_class, 0)

    def mix(labels: np.ndarray, idx: np.ndarray, on_pool: bool) -> np.ndarray:
        out = sum(wi * np.asarray(m(labels, on_pool)(idx)) for wi, m in zip(w, members, strict=True))
        return np.asarray(out)

    def predict(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        if per_class == 0:
            return mix(labels0, idx, False)
        sel, lab = pseudo_label(mix(labels0, idx, True), idx, per_class=per_class)
        labels = labels0.copy()
        labels[sel] = lab  # the pseudo-labels replace the pool's labels there; only idx and sel are read
        return mix(labels, np.concatenate([idx, sel]), False)

    return predict


def probe_member(pool_features: ArrayLike, eval_features: ArrayLike, *, C: float) -> Member:
    """The ``probe`` head (features standardised with the pool's mean and sd, logistic regression) as a member.

    Example:
        >>> f = np.array([[0.0], [0.1], [1.0], [1.1]])
        >>> probe_member(f, f, C=10.0)(np.array([0, 0, 1, 1]), False)(np.array([0, 2])).argmax(1).tolist()
        [0, 0, 1, 1]
    """
    pool, ev = np.asarray(pool_features), np.asarray(eval_features)
    return lambda labels, on_pool: probe_predictor(pool, pool if on_pool else ev, labels, C=C)


def prototype_member(learner: Any, pool_images: torch.Tensor, eval_images: torch.Tensor) -> Member:
    """A meta-trained learner as a member: adapted to the support images and labels it is given.

    The learner's features must not depend on the support set (e.g. a ProtoNet with GroupNorm), so the pool's
    and the scored images' embeddings are computed once, at the first call, and reused until a parameter of
    the learner changes.

    Raises:
        ValueError: the learner's features depend on the support set (``support_free_features`` is False).

    Example:
        >>> member = prototype_member(protonet, train.images, test.images)  # doctest: +SKIP
    """
    if not getattr(learner, "support_free_features", False):
        raise ValueError(
            f"prototype_member: {type(learner).__name__}'s features depend on the support set (e.g. batch norm); "
            "self-training needs support-free features"
        )
    stored: dict[bool, tuple[tuple[int, ...], torch.Tensor]] = {}  # on_pool -> (parameter state, embeddings)

    def make(labels: np.ndarray, on_pool: bool) -> Predictor:
        n_way = int(labels.max()) + 1
        if learner.n_way != n_way:
            learner.set_n_way(n_way)

        def predict(idx: np.ndarray) -> np.ndarray:
            sx, sy = pool_images[torch.from_numpy(idx)], torch.from_numpy(labels[idx])
            predictor, _ = learner.adapt(sx, sy)
            state = parameter_state(learner)  # the embeddings go stale with the weights, as in learner_predictor
            with torch.no_grad():
                if on_pool not in stored or stored[on_pool][0] != state:
                    images = pool_images if on_pool else eval_images
                    stored[on_pool] = (state, torch.cat([predictor.embed(x) for x in images.split(512)]))
                return predictor.classify(stored[on_pool][1]).softmax(-1).numpy()

        return predict

    return make
