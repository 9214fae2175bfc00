"""Self-training on the unlabelled pool: class-balanced pseudo-labels, one refit, inductive on the scored images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.evaluation.full_test_split import learner_predictor
from medmeta_lib.learners import create_learner
from medmeta_lib.models import create_backbone
from medmeta_lib.ssl.probe import probe_predictor
from medmeta_lib.ssl.self_training import probe_member, prototype_member, pseudo_label, self_trained_predictor


def _blobs(n0: int = 150, n1: int = 450, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two elongated classes, imbalanced like a chest X-ray pool (a quarter normal)."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], [n0, n1])
    f = rng.normal(size=(n0 + n1, 2)) * np.array([3.0, 0.6]) + np.stack([np.zeros(n0 + n1), 2.0 * y], 1)
    return f, y


def test_pseudo_labels_are_class_balanced_confident_and_skip_the_support() -> None:
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9], [0.45, 0.55]])
    idx, lab = pseudo_label(p, [0, 4], per_class=2)
    assert idx.tolist() == [1, 2, 3, 5] and lab.tolist() == [0, 0, 1, 1]  # by decreasing probability, no support
    idx, lab = pseudo_label(p, [], per_class=10)  # fewer than asked: every image predicted as the class
    assert sorted(idx.tolist()) == list(range(6)) and np.bincount(lab).tolist() == [3, 3]
    assert len(pseudo_label(p, [0], per_class=0)[0]) == 0
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="per_class"):
            pseudo_label(p, [], per_class=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probs"):
        pseudo_label(np.ones(4), [], per_class=1)


def test_per_class_zero_is_the_weighted_mix_on_the_support_set() -> None:
    f, y = _blobs()
    idx = np.array([0, 1, 200, 201])
    a, b = probe_member(f, f[:50], C=0.1), probe_member(f**2, f[:50] ** 2, C=1.0)
    got = self_trained_predictor([a, b], y, per_class=0, weights=[3, 1])(idx)
    want = 0.75 * probe_predictor(f, f[:50], y, C=0.1)(idx) + 0.25 * probe_predictor(f**2, f[:50] ** 2, y, C=1.0)(idx)
    np.testing.assert_allclose(got, want)


def test_pseudo_labels_never_read_the_pool_labels_and_each_image_is_classified_alone() -> None:
    f, y = _blobs()
    test, _ = _blobs(40, 40, seed=1)
    idx = np.array([3, 160])
    predict = self_trained_predictor([probe_member(f, test, C=0.1)], y, per_class=50)
    scrambled = y.copy()
    others = np.setdiff1d(np.arange(len(y)), idx)
    scrambled[others] = np.random.default_rng(0).permutation(scrambled[others])  # only the support keeps its labels
    full = predict(idx)
    np.testing.assert_allclose(
        self_trained_predictor([probe_member(f, test, C=0.1)], scrambled, per_class=50)(idx), full
    )
    alone = self_trained_predictor([probe_member(f, test[7:8], C=0.1)], y, per_class=50)(idx)
    np.testing.assert_allclose(alone, full[7:8])  # the same row for one image on its own


def _nearest_mean(pool: np.ndarray, scored: np.ndarray):
    """A member: softmax of minus the squared distance to each class's mean support feature (ProtoNet's rule)."""

    def make(labels: np.ndarray, on_pool: bool):
        def predict(idx: np.ndarray) -> np.ndarray:
            mu = np.stack([pool[idx][labels[idx] == c].mean(0) for c in range(2)])
            d = -(((pool if on_pool else scored)[:, None] - mu[None]) ** 2).sum(-1)
            e = np.exp(d - d.max(1, keepdims=True))
            return e / e.sum(1, keepdims=True)

        return predict

    return make


def test_pseudo_labels_pull_one_shot_prototypes_towards_the_class_means() -> None:
    """Two round classes; the one labelled image of each sits at an opposite edge, so the one-shot boundary
    tilts. The 100 most confident pool images of each class average out near the class mean."""
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1], [150, 450])
    f = rng.normal(size=(600, 2)) + np.outer(y, [4.0, 0.0])
    ty = np.repeat([0, 1], 300)
    test = rng.normal(size=(600, 2)) + np.outer(ty, [4.0, 0.0])
    edge = np.array([np.flatnonzero(y == 0)[np.argmin(f[y == 0, 1])], np.flatnonzero(y == 1)[np.argmax(f[y == 1, 1])]])
    acc = {
        m: (self_trained_predictor([_nearest_mean(f, test)], y, per_class=m)(edge).argmax(1) == ty).mean()
        for m in (0, 100)
    }
    assert acc[0] < 0.9 < acc[100], acc  # 0.83, then 0.95 (the Bayes boundary gives about 0.98)
    wins = []
    for _ in range(20):  # random one-shot draws: better in most, paired on the same draws
        idx = np.array([rng.choice(np.flatnonzero(y == c)) for c in (0, 1)])
        plain, st = (self_trained_predictor([_nearest_mean(f, test)], y, per_class=m)(idx) for m in (0, 100))
        wins.append(np.sign((st.argmax(1) == ty).mean() - (plain.argmax(1) == ty).mean()))
    assert sum(w > 0 for w in wins) > 3 * sum(w < 0 for w in wins), wins  # 15 better, 3 worse here


def test_prototype_member_is_the_learners_own_prediction_and_refits_on_pseudo_labels() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.zeros(12), torch.ones(20)]).long()
    x = (0.35 + 0.2 * y.float()[:, None, None, None] + 0.2 * torch.randn(32, 1, 16, 16, generator=g)).clamp(0, 1)
    train = ImageCollection(images=x, labels=y, class_names=("normal", "pneumonia"))
    test = ImageCollection(images=x.flip(0), labels=y.flip(0), class_names=("normal", "pneumonia"))
    torch.manual_seed(0)
    learner = create_learner("protonet", create_backbone("conv4", hidden=8, norm="group"), n_way=2)
    member = prototype_member(learner, train.images, test.images)
    idx = np.array([0, 1, 12, 13])
    np.testing.assert_allclose(
        member(y.numpy(), False)(idx), learner_predictor(learner, train, test, k_shot=2)(idx), atol=1e-5
    )
    st = self_trained_predictor([member], y.numpy(), per_class=3)(idx)
    pool = member(y.numpy(), True)(idx)
    sel, lab = pseudo_label(pool, idx, per_class=3)
    pred, _ = learner.adapt(train.images[np.concatenate([idx, sel])], torch.cat([y[idx], torch.from_numpy(lab)]))
    with torch.no_grad():
        np.testing.assert_allclose(st, pred(test.images).softmax(-1).numpy(), atol=1e-5)
    bn = create_learner("protonet", create_backbone("conv4", hidden=8), n_way=2)
    with pytest.raises(ValueError, match="support-free"):
        prototype_member(bn, train.images, test.images)


def test_bad_members_or_weights_are_refused() -> None:
    f, y = _blobs()
    with pytest.raises(ValueError, match="at least one member"):
        self_trained_predictor([], y, per_class=1)
    with pytest.raises(ValueError, match="weights"):
        self_trained_predictor([probe_member(f, f, C=1.0)], y, per_class=1, weights=[1, 1])
    with pytest.raises(ValueError, match="weights"):
        self_trained_predictor([probe_member(f, f, C=1.0)], y, per_class=1, weights=[0])
    with pytest.raises(ValueError, match="per_class"):
        self_trained_predictor([probe_member(f, f, C=1.0)], y, per_class=-2)
