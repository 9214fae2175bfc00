from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.models.backbones import create_backbone
from medmeta_lib.ssl.probe import (
    PooledLayers,
    extract_features,
    knn_accuracy,
    label_efficiency,
    linear_probe,
    with_population_stats,
)
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
    alone, together = extract_features(enc, x[:4]), extract_features(enc, x)[:4]
    assert (alone - together).abs().max() > 1e-3  # the raw encoder's features depend on the batch
    frozen = with_population_stats(enc, x, batch_size=40)
    torch.testing.assert_close(
        extract_features(frozen, x[:4]), extract_features(frozen, x, batch_size=7)[:4], atol=1e-5, rtol=1e-5
    )
    # with one batch, the population statistics are that batch's: same features as the raw encoder on it
    torch.testing.assert_close(extract_features(frozen, x), extract_features(enc, x), atol=1e-2, rtol=1e-2)
    assert not enc.features[1].track_running_stats  # the original is untouched


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


def test_multiclass_auc_is_macro_ovr() -> None:
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
    # DESIGN.md: raw pixels, 10 labelled images per class, full test split: ACC 0.798, AUC 0.868 (100 draws)
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
