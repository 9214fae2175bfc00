from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.models.backbones import create_backbone
from medmeta_lib.ssl.features import PooledLayers, extract_features, with_population_stats
from medmeta_lib.ssl.probe import knn_accuracy, label_efficiency, linear_probe
from tests.conftest import PNEUMONIA, make_collection, needs_pneumonia


def test_extract_features_eval_no_grad_and_batch_invariant() -> None:
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Dropout(0.5), nn.Flatten())
    enc.train()
    x = torch.rand(10, 1, 6, 6)
    f1 = extract_features(enc, x, batch_size=3)
    f2 = extract_features(enc, x, batch_size=512)
    assert f1.shape == (10, 4 * 4 * 4) and not f1.requires_grad
    torch.testing.assert_close(f1, f2)  # eval mode: dropout off, so batching does not matter
    assert enc.training  # the caller's mode is restored
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(enc, x, batch_size=0)


def test_pooled_layers_concatenates_pooled_block_outputs() -> None:
    torch.manual_seed(0)
    enc = create_backbone("conv4", hidden=8, norm="group")
    x = torch.rand(3, 1, 28, 28)
    pooled = PooledLayers(enc, ("features.7", "features.15"))
    f = extract_features(pooled, x)
    assert f.shape == (3, 16)
    torch.testing.assert_close(f[:, 8:], extract_features(enc, x))  # last block = the encoder's own output
    torch.testing.assert_close(f[:, :8], enc.features[:8](x).mean(dim=(2, 3)))
    assert not enc.features[7]._forward_hooks  # hooks are removed after each call
    with pytest.raises(ValueError, match="unknown"):
        PooledLayers(enc, ("features.99",))


def test_population_stats_make_features_independent_of_the_batch() -> None:
    torch.manual_seed(0)
    enc = create_backbone("conv4", hidden=8, norm="batch")  # batch statistics even in eval mode
    x = torch.rand(40, 1, 28, 28)
    ref = torch.rand(64, 1, 28, 28)
    # the explicit transductive option: a feature depends on the images it is extracted with
    alone, together = extract_features(enc, x[:4], transductive=True), extract_features(enc, x, transductive=True)[:4]
    assert (alone - together).abs().max() > 1e-3
    with pytest.raises(ValueError, match="reference="):
        extract_features(enc, x)  # no silent transductive default
    # default: population statistics of the reference images; alone == in any batch, any order
    full = extract_features(enc, x, reference=ref)
    perm = torch.randperm(40)
    torch.testing.assert_close(extract_features(enc, x[:1], reference=ref), full[:1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(extract_features(enc, x, reference=ref, batch_size=7), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        extract_features(enc, x[perm], reference=ref)[perm.argsort()], full, atol=1e-5, rtol=1e-5
    )
    frozen = with_population_stats(enc, ref)
    torch.testing.assert_close(extract_features(frozen, x), full, atol=1e-6, rtol=1e-6)
    # the population statistics of a set are its batch statistics: on that set, the transductive features
    torch.testing.assert_close(
        extract_features(enc, ref, reference=ref), extract_features(enc, ref, transductive=True), atol=1e-4, rtol=1e-4
    )
    # they do not depend on the order of the reference images
    shuffled = ref[torch.randperm(64)]
    torch.testing.assert_close(extract_features(enc, x, reference=shuffled), full, atol=1e-5, rtol=1e-5)
    assert not enc.features[1].track_running_stats  # the original is untouched


def test_probe_features_are_inductive_and_transductive_is_a_real_switch() -> None:
    torch.manual_seed(0)
    enc = create_backbone("conv4", hidden=8, norm="batch")
    train = make_collection(n_classes=2, per_class=20, size=16, seed=0)
    test = make_collection(n_classes=2, per_class=10, size=16, seed=1)
    r1 = linear_probe(enc, train, test, k_per_class=3, draws=3, seed=0)
    # predictions for the test set cannot depend on which other test images are scored with it
    r2 = linear_probe(enc, train, test.subset(torch.randperm(len(test)).tolist()), k_per_class=3, draws=3, seed=0)
    assert r1["per_draw_acc"] == pytest.approx(r2["per_draw_acc"], abs=1e-12)
    half = test.subset(range(len(test) // 2))
    ft = extract_features(enc, test.images, reference=train.images)
    fh = extract_features(enc, half.images, reference=train.images)
    torch.testing.assert_close(ft[: len(half)], fh, atol=1e-5, rtol=1e-5)
    tt = extract_features(enc, test.images, transductive=True)
    th = extract_features(enc, half.images, transductive=True)
    assert (tt[: len(half)] - th).abs().max() > 1e-3


def test_knn_cosine() -> None:
    f = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    y = torch.tensor([0, 0, 1, 1])
    q = torch.tensor([[5.0, 0.4], [0.2, 3.0]])  # far in Euclidean terms, close in angle
    assert knn_accuracy(f, y, q, [0, 1], k=1) == 1.0
    assert knn_accuracy(f, y, q, [1, 0], k=1) == 0.0
    assert knn_accuracy(f, y, q, [0, 1], k=3) == 1.0  # majority of 3
    with pytest.raises(ValueError, match="k must lie"):
        knn_accuracy(f, y, q, [0, 1], k=5)


def test_linear_probe_separable_data() -> None:
    train, test = make_collection(n_classes=3, per_class=12, seed=0), make_collection(n_classes=3, per_class=8, seed=1)
    r = linear_probe(nn.Flatten(), train, test, k_per_class=5, draws=4, seed=0)
    assert set(r) == {"acc_mean", "acc_ci95", "auc_mean", "auc_ci95", "draws", "k_per_class", "per_draw_acc"}
    assert len(r["per_draw_acc"]) == 4 and abs(sum(r["per_draw_acc"]) / 4 - r["acc_mean"]) < 1e-12
    assert r["acc_mean"] > 0.95 and r["auc_mean"] > 0.95 and r["draws"] == 4 and r["k_per_class"] == 5
    full = linear_probe(nn.Flatten(), train, test, k_per_class=None, draws=7)
    assert full["draws"] == 1 and full["acc_ci95"] == 0.0 and full["k_per_class"] is None


def test_linear_probe_ci_and_paired_draws() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 2
    images = 0.5 + 0.08 * (2 * labels.float() - 1)[:, None, None, None] + 0.2 * torch.randn(60, 1, 5, 5, generator=g)
    col = ImageCollection(images=images.clamp(0, 1), labels=labels, class_names=("a", "b"))
    train, test = col.subset(range(30)), col.subset(range(30, 60))
    one = linear_probe(nn.Flatten(), train, test, k_per_class=3, draws=1, seed=5)
    two = linear_probe(nn.Flatten(), train, test, k_per_class=3, draws=2, seed=5)
    a = one["acc_mean"]
    b = 2 * two["acc_mean"] - a  # draw 0 is the same in both calls
    assert one["acc_ci95"] == 0.0
    assert two["acc_ci95"] == pytest.approx(1.96 * abs(a - b) / math.sqrt(2) / math.sqrt(2))
    # precomputed features give the same numbers as the encoder (same labelled draws)
    feats = (train.images.flatten(1), test.images.flatten(1))
    assert linear_probe(feats, train, test, k_per_class=3, draws=2, seed=5) == two
    assert linear_probe(feats, train, test, k_per_class=3, draws=2, seed=6) != two


def _binary_auc_by_counting(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + ½ P(tie), over all pairs (Mann-Whitney)."""
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)


def test_multiclass_auc_is_macro_ovr() -> None:
    from medmeta_lib.ssl.probe import _auc

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 6)
    proba = rng.dirichlet(np.ones(4), size=len(y))
    proba[y == 2, 2] += 0.3  # class 2 separable-ish, the others near chance
    proba /= proba.sum(1, keepdims=True)
    expected = np.mean([_binary_auc_by_counting(proba[y == c, c], proba[y != c, c]) for c in range(4)])
    assert _auc(y, proba, np.arange(4)) == pytest.approx(expected, abs=1e-12)
    # two classes: the plain ROC AUC of the positive column
    yb = (y >= 2).astype(int)
    pb = np.stack([1 - proba[:, 3], proba[:, 3]], 1)
    assert _auc(yb, pb, np.arange(2)) == pytest.approx(_binary_auc_by_counting(pb[yb == 1, 1], pb[yb == 0, 1]))
    # a class missing from the test labels: macro over the classes present, on renormalised columns
    keep = y != 3
    sub = proba[keep][:, :3] / proba[keep][:, :3].sum(1, keepdims=True)
    expected3 = np.mean([_binary_auc_by_counting(sub[y[keep] == c, c], sub[y[keep] != c, c]) for c in range(3)])
    assert _auc(y[keep], proba[keep], np.arange(4)) == pytest.approx(expected3, abs=1e-12)
    # and through the probe: a valid macro AUC on a 4-class problem
    train, test = make_collection(n_classes=4, per_class=10, seed=0), make_collection(n_classes=4, per_class=5, seed=2)
    r = linear_probe(nn.Flatten(), train, test, k_per_class=2, draws=3)
    assert 0.5 < r["auc_mean"] <= 1.0


def test_linear_probe_errors() -> None:
    train = make_collection(n_classes=2, per_class=4)
    with pytest.raises(ValueError, match="k_per_class"):
        linear_probe(nn.Flatten(), train, train, k_per_class=0)
    with pytest.raises(ValueError, match="fewer train images"):
        linear_probe(nn.Flatten(), train, train, k_per_class=5)
    with pytest.raises(ValueError, match="draws"):
        linear_probe(nn.Flatten(), train, train, k_per_class=1, draws=0)
    three = make_collection(n_classes=3, per_class=4)
    with pytest.raises(ValueError, match="no train images"):
        linear_probe(nn.Flatten(), three.subset(np.flatnonzero(three.labels < 2)), three, k_per_class=1)
    with pytest.raises(ValueError, match="one row per image"):
        linear_probe((torch.zeros(3, 2), torch.zeros(8, 2)), train, train, k_per_class=1)


def test_label_efficiency_rows() -> None:
    train, test = make_collection(n_classes=2, per_class=12, seed=0), make_collection(n_classes=2, per_class=6, seed=3)
    rows = label_efficiency(
        {"pixels": nn.Flatten(), "mean": nn.AdaptiveAvgPool2d(1)}, train, test, shots=(1, 5, None), draws=3
    )
    assert [(r["encoder"], r["k_per_class"]) for r in rows] == [
        ("pixels", 1),
        ("pixels", 5),
        ("pixels", None),
        ("mean", 1),
        ("mean", 5),
        ("mean", None),
    ]
    assert all({"acc_mean", "acc_ci95", "auc_mean", "auc_ci95", "draws"} <= set(r) for r in rows)
    with pytest.raises(ValueError, match="encoders is empty"):
        label_efficiency({}, train, test)


@pytest.mark.realdata
@needs_pneumonia
def test_raw_pixel_floor_matches_design_reference() -> None:
    # measured before (BENCHMARKS.md): raw pixels, 10 labelled images per class, full test split: ACC 0.798,
    # AUC 0.868 (100 draws); raw pixels have no batch statistics, so the inductive change leaves this as it was
    d = np.load(PNEUMONIA)

    def col(split: str) -> ImageCollection:
        images = torch.from_numpy(d[f"{split}_images"]).float()[:, None] / 255
        return ImageCollection(
            images=images,
            labels=torch.from_numpy(d[f"{split}_labels"]).long(),
            class_names=("normal", "pneumonia"),
            split=split,
        )

    r = linear_probe(nn.Flatten(), col("train"), col("test"), k_per_class=10, draws=10, seed=0)
    assert abs(r["acc_mean"] - 0.798) < 0.03 and abs(r["auc_mean"] - 0.868) < 0.03
