"""Few-shot heads on frozen features: SimpleShot's transform, nearest centroid, ensembles, test-time views."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medmeta_lib.models.backbones import create_backbone
from medmeta_lib.ssl.heads import (
    HEAD_C,
    centred_l2,
    ensemble_predictor,
    head_predictor,
    nearest_centroid_predictor,
    tta_features,
)
from medmeta_lib.ssl.probe import probe_predictor


def _blobs(n: int = 40, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    f = rng.normal(size=(n, d)) + 6.0 * y[:, None] * np.eye(d)[0]
    return f, y


def test_centred_l2_uses_the_pool_mean_only() -> None:
    pool, _ = _blobs()
    query = np.array([[5.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 9.0]])
    _, a = centred_l2(pool, query)
    _, b = centred_l2(pool, query[:1])
    np.testing.assert_allclose(a[0], b[0])  # a query's feature does not depend on the other queries
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0)
    expected = (query[0] - pool.mean(0)) / np.linalg.norm(query[0] - pool.mean(0))
    np.testing.assert_allclose(a[0], expected)
    with pytest.raises(ValueError, match="feature sizes differ"):
        centred_l2(pool, query[:, :3])


def test_nearest_centroid_separates_blobs_and_is_inductive() -> None:
    f, y = _blobs()
    ftr, fte = centred_l2(f, f)
    predict = nearest_centroid_predictor(ftr, fte, y)
    idx = np.array([0, 1, 2, 20, 21, 22])
    p = predict(idx)
    assert p.shape == (40, 2) and np.allclose(p.sum(1), 1.0)
    assert (p.argmax(1) == y).mean() > 0.9
    alone = nearest_centroid_predictor(ftr, fte[5:6], y)(idx)
    np.testing.assert_allclose(alone[0], p[5])  # the same image alone gets the same probabilities
    with pytest.raises(ValueError, match=r"no image of class\(es\) \[1\]"):
        predict(np.array([0, 1]))
    with pytest.raises(ValueError, match="scale"):
        nearest_centroid_predictor(ftr, fte, y, scale=0)


def test_ensemble_averages_and_checks_shapes() -> None:
    a = lambda idx: np.array([[1.0, 0.0], [0.0, 1.0]])  # noqa: E731
    b = lambda idx: np.array([[0.0, 1.0], [0.0, 1.0]])  # noqa: E731
    np.testing.assert_allclose(ensemble_predictor([a, b])(np.array([0])), [[0.5, 0.5], [0.0, 1.0]])
    with pytest.raises(ValueError, match="different shapes"):
        ensemble_predictor([a, lambda idx: np.ones((3, 2)) / 2])(np.array([0]))
    with pytest.raises(ValueError, match="at least one predictor"):
        ensemble_predictor([])


def test_tta_features_are_per_image_and_seeded() -> None:
    torch.manual_seed(0)
    enc = create_backbone("conv4", hidden=8, norm="group")
    x = torch.rand(6, 1, 28, 28)
    a = tta_features(enc, x, views=3, seed=1)
    assert a.shape == (6, enc.out_features)
    torch.testing.assert_close(a, tta_features(enc, x, views=3, seed=1))  # seeded
    y = x.clone()
    y[3:] = torch.rand(3, 1, 28, 28)  # other images change: the first three features must not
    torch.testing.assert_close(tta_features(enc, y, views=3, seed=1)[:3], a[:3])
    # nor on its position or company: one image alone, and the batch reversed, give the same features
    torch.testing.assert_close(tta_features(enc, x[4:5], views=3, seed=1), a[4:5], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tta_features(enc, x.flip(0), views=3, seed=1).flip(0), a, rtol=1e-5, atol=1e-6)
    plain = tta_features(enc, x, views=0)
    assert not torch.allclose(plain, a)
    with pytest.raises(ValueError, match="views"):
        tta_features(nn.Flatten(), x, views=-1)


def test_head_predictor_is_the_named_composition() -> None:
    f, y = _blobs()
    idx = np.array([0, 1, 2, 20, 21, 22])
    ztr, zte = centred_l2(f, f)
    np.testing.assert_allclose(head_predictor("probe", f, f, y)(idx), probe_predictor(f, f, y, C=HEAD_C["probe"])(idx))
    np.testing.assert_allclose(
        head_predictor("cl2_probe", f, f, y)(idx), probe_predictor(ztr, zte, y, C=HEAD_C["cl2_probe"])(idx)
    )
    np.testing.assert_allclose(
        head_predictor("cl2_probe", f, f, y, C=0.5)(idx), probe_predictor(ztr, zte, y, C=0.5)(idx)
    )
    np.testing.assert_allclose(head_predictor("cl2_ncm", f, f, y)(idx), nearest_centroid_predictor(ztr, zte, y)(idx))
    with pytest.raises(ValueError, match="head must be one of"):
        head_predictor("knn", f, f, y)
