"""Few-shot heads on frozen features: the ways a handful of labelled images become a classifier.

Each function returns a :data:`~medmeta_lib.evaluation.full_test_split.SupportPredictor`-shaped
callable (support indices into the labelled pool -> class probabilities of the images to classify), so
any of them plugs into the full-test-split protocol. None reads a label of the images it classifies,
and every image is classified on its own (inductive): the only statistics shared between images come
from the *unlabelled* pool (feature mean and sd, or the centring mean).

- :func:`~medmeta_lib.ssl.probe.probe_predictor` (in ``probe.py``): standardised features, logistic
  regression.
- :func:`centred_l2` + any head: SimpleShot's CL2N transform (Wang et al. 2019, "SimpleShot"): subtract
  the mean feature of the unlabelled pool, then L2-normalise each feature.
- :func:`nearest_centroid_predictor`: cosine similarity to each class's mean support feature (SimpleShot;
  Meta-Baseline's classifier, Chen et al. 2021), a softmax over the scaled similarities.
- :func:`ensemble_predictor`: the mean of several heads' probabilities.
- :func:`tta_features`: a feature averaged over augmented views of its image (test-time augmentation,
  per image).
- :func:`head_predictor`: any of the named heads (``probe``, ``cl2_probe``, ``cl2_ncm``) by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import nn

from medmeta_lib.data.augment import ViewAugment
from medmeta_lib.learners.protonet import cosine_logits, prototypes
from medmeta_lib.ssl.features import extract_features
from medmeta_lib.ssl.probe import probe_predictor

__all__ = [
    "HEAD_C",
    "HEAD_NAMES",
    "centred_l2",
    "ensemble_predictor",
    "head_predictor",
    "nearest_centroid_predictor",
    "tta_features",
]

Predictor = Callable[[np.ndarray], np.ndarray]
#: the logistic-regression C of the probe heads (both chosen on PneumoniaMNIST's validation split)
HEAD_C = {"cl2_probe": 10.0, "probe": 0.1}
#: every named head of :func:`head_predictor`
HEAD_NAMES = ("cl2_probe", "probe", "cl2_ncm")


def _as_2d(x: ArrayLike, what: str) -> np.ndarray:
    a = np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if a.ndim < 2 or len(a) == 0:
        raise ValueError(f"{what} must be a non-empty (N, D) feature array, got shape {a.shape}")
    return a.reshape(len(a), -1)


def centred_l2(train_features: ArrayLike, *others: ArrayLike) -> tuple[np.ndarray, ...]:
    """SimpleShot's CL2N: subtract the unlabelled pool's mean feature, then L2-normalise every feature.

    The mean comes from ``train_features`` only (the unlabelled pool), so a transformed feature of an
    image in ``others`` depends on that image and the pool, never on the other images it is classified with.

    Args:
        train_features: ``(N, D)`` features of the pool (labels unused).
        *others: further ``(M, D)`` feature arrays to transform with the pool's mean.

    Returns:
        The transformed ``train_features`` followed by the transformed ``others``.

    Example:
        >>> a, b = centred_l2(np.array([[1.0, 0.0], [3.0, 0.0]]), np.array([[2.0, 5.0]]))
        >>> a.tolist(), b.tolist()
        ([[-1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0]])
    """
    pool = _as_2d(train_features, "train_features")
    arrays = [pool, *(_as_2d(o, "features") for o in others)]
    if any(a.shape[1] != pool.shape[1] for a in arrays):
        raise ValueError(f"centred_l2: feature sizes differ: {[a.shape[1] for a in arrays]}")
    mean = pool.mean(0)
    out = []
    for a in arrays:
        c = a - mean
        out.append(c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12))
    return tuple(out)


def nearest_centroid_predictor(
    train_features: ArrayLike,
    test_features: ArrayLike,
    train_labels: ArrayLike,
    *,
    scale: float = 10.0,
) -> Predictor:
    """Cosine nearest-centroid head: each class's mean support feature, a softmax over scaled cosine similarities.

    Pass features already transformed (e.g. by :func:`centred_l2`); the centroids are re-normalised.
    ``scale`` (a softmax temperature) changes the probabilities' sharpness, not the predicted class or
    the AUC.

    Args:
        train_features: ``(N, D)`` features of the labelled pool.
        test_features: ``(M, D)`` features of the images to classify.
        train_labels: ``(N,)`` labels ``0 .. n_classes - 1`` of the pool.
        scale: multiplier of the cosine similarities before the softmax (> 0).

    Example:
        >>> f = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> predict = nearest_centroid_predictor(f, f, [0, 0, 1, 1])
        >>> predict(np.array([0, 2])).argmax(1).tolist()
        [0, 0, 1, 1]
    """
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"scale must be a number > 0, got {scale!r}")
    ftr, fte = _as_2d(train_features, "train_features"), _as_2d(test_features, "test_features")
    ytr = np.asarray(train_labels).ravel().astype(np.int64)
    if len(ftr) != len(ytr) or ftr.shape[1] != fte.shape[1]:
        raise ValueError(
            f"nearest_centroid_predictor: {len(ftr)} train features for {len(ytr)} labels, feature sizes "
            f"{ftr.shape[1]} (train) and {fte.shape[1]} (test); they must match"
        )
    n_classes = int(ytr.max()) + 1
    query = torch.from_numpy(fte)

    def predict(idx: np.ndarray) -> np.ndarray:
        labels = ytr[idx]
        missing = [c for c in range(n_classes) if not (labels == c).any()]
        if missing:
            raise ValueError(f"nearest_centroid_predictor: the support set has no image of class(es) {missing}")
        mu = prototypes(torch.from_numpy(ftr[idx]), torch.from_numpy(labels), n_classes)  # ProtoNet's class means
        return cosine_logits(query, mu, scale).softmax(-1).numpy()  # Meta-Baseline's classifier

    return predict


def ensemble_predictor(predictors: Sequence[Predictor]) -> Predictor:
    """The mean of several heads' probabilities (e.g. probes on the features of several encoders).

    Example:
        >>> a = lambda idx: np.array([[0.8, 0.2]])
        >>> b = lambda idx: np.array([[0.4, 0.6]])
        >>> ensemble_predictor([a, b])(np.array([0])).round(2).tolist()
        [[0.6, 0.4]]
    """
    members = list(predictors)
    if not members or not all(callable(p) for p in members):
        raise ValueError("ensemble_predictor: give at least one predictor (support indices -> probabilities)")

    def predict(idx: np.ndarray) -> np.ndarray:
        probs = [np.asarray(p(idx)) for p in members]
        if len({p.shape for p in probs}) != 1:
            raise ValueError(f"ensemble_predictor: members return different shapes {[p.shape for p in probs]}")
        return np.mean(probs, axis=0)

    return predict


def tta_features(
    encoder: nn.Module,
    images: torch.Tensor,
    *,
    views: int = 8,
    preset: str = "generic",
    seed: int = 0,
    reference: torch.Tensor | None = None,
    batch_size: int = 512,
) -> torch.Tensor:
    """Test-time augmentation: each image's feature averaged over the image itself and ``views`` augmented views.

    The views are ``views`` fixed transforms drawn once from a seeded
    :class:`~medmeta_lib.data.augment.ViewAugment` (``shared=True``): the k-th view of every image is the same
    crop, rotation and intensity change, whatever other images are passed with it. With each view's feature
    computed on its own (:func:`~medmeta_lib.ssl.features.extract_features`), an image's feature does not
    depend on the others or on its position: one image alone gets the feature it gets in a batch.

    Args:
        encoder: a frozen feature extractor.
        images: ``(N, C, H, W)`` images.
        views: augmented views per image (0: the plain feature).
        preset: ``ViewAugment`` preset (the one the encoder was pretrained with fits best).
        seed: seed of the views.
        reference: the unlabelled images, for encoders that normalise with batch statistics.
        batch_size: images per forward pass.

    Example:
        >>> tta_features(nn.Flatten(), torch.rand(3, 1, 8, 8), views=2).shape
        torch.Size([3, 64])
    """
    if isinstance(views, bool) or not isinstance(views, int) or views < 0:
        raise ValueError(f"views must be an int >= 0, got {views!r}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    total = extract_features(encoder, images, batch_size=batch_size, reference=reference)
    if views == 0:
        return total
    aug = ViewAugment(preset=preset, image_size=int(images.shape[-1]), seed=seed)
    for _ in range(views):  # the same transform for every image: no dependence on the batch
        total = total + extract_features(encoder, aug(images, shared=True), batch_size=batch_size, reference=reference)
    return total / (views + 1)


def head_predictor(
    head: str,
    train_features: np.ndarray | torch.Tensor,
    test_features: np.ndarray | torch.Tensor,
    train_labels: np.ndarray | torch.Tensor,
    *,
    C: float | None = None,
) -> Predictor:
    """A named few-shot head on frozen features, as a support-set predictor.

    ``probe``: features standardised with the pool's mean and sd, logistic regression;
    ``cl2_probe``: :func:`centred_l2`, then logistic regression; ``cl2_ncm``: :func:`centred_l2`, then
    :func:`nearest_centroid_predictor`.

    Args:
        head: one of ``HEAD_NAMES``.
        train_features: ``(N, D)`` features of the labelled pool (also the unlabelled statistics).
        test_features: ``(M, D)`` features of the images to classify.
        train_labels: ``(N,)`` labels of the pool.
        C: inverse L2 strength of a probe head (``None``: ``HEAD_C[head]``); unused by ``cl2_ncm``.

    Example:
        >>> f = np.array([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.1, 0.1]])
        >>> head_predictor("cl2_ncm", f, f, [0, 0, 1, 1])(np.array([0, 2])).argmax(1).tolist()
        [0, 0, 1, 1]
    """
    if head not in HEAD_NAMES:
        raise ValueError(f"head must be one of {sorted(HEAD_NAMES)}, got {head!r}")
    if head == "probe":
        return probe_predictor(train_features, test_features, train_labels, C=HEAD_C[head] if C is None else C)
    ztr, zte = centred_l2(train_features, test_features)
    if head == "cl2_probe":
        return probe_predictor(ztr, zte, train_labels, C=HEAD_C[head] if C is None else C)
    return nearest_centroid_predictor(ztr, zte, train_labels)
