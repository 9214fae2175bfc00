"""LP-FT on each support set: starts from the probe, trains a copy, predicts every test image on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from medmeta_lib.models.backbones import create_backbone
from medmeta_lib.ssl.features import PooledLayers, extract_features
from medmeta_lib.ssl.finetune import finetune_predictor
from medmeta_lib.ssl.heads import centred_l2

LAYERS = ["features.11", "features.15"]


@pytest.fixture(scope="module")
def data() -> tuple:
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28)
    y = torch.tensor([0, 1] * 8)
    x[y == 1, :, :14] += 0.5  # class 1 is brighter on top
    return create_backbone("conv4", hidden=8, norm="group"), x.clamp(0, 1), y


def test_zero_steps_is_the_centred_l2_probe(data) -> None:
    enc, x, y = data
    idx = np.array([0, 2, 1, 3])
    got = finetune_predictor(enc, LAYERS, x, x, y, steps=0, C=10.0)(idx)
    f = extract_features(PooledLayers(enc, LAYERS), x)
    (z,) = centred_l2(f)
    want = LogisticRegression(C=10.0, max_iter=2000).fit(z[idx], y.numpy()[idx]).predict_proba(z)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_fine_tuning_trains_a_copy_and_predicts_each_image_alone(data) -> None:
    enc, x, y = data
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    idx = np.array([0, 2, 4, 1, 3, 5])
    lp = finetune_predictor(enc, LAYERS, x, x, y, steps=0)(idx)
    ft = finetune_predictor(enc, LAYERS, x, x, y, steps=5, lr=1e-2)
    p = ft(idx)
    assert p.shape == (16, 2) and np.allclose(p.sum(1), 1.0, atol=1e-5) and not np.allclose(p, lp)
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(v, before[k])  # the pretrained encoder is untouched
    alone = finetune_predictor(enc, LAYERS, x, x[7:8], y, steps=5, lr=1e-2)(idx)
    np.testing.assert_allclose(alone[0], p[7], atol=1e-5)  # the same image alone: the same prediction
    np.testing.assert_allclose(ft(idx), p, atol=1e-6)  # seeded: the same support set gives the same result
    with pytest.raises(ValueError, match="steps"):
        finetune_predictor(enc, LAYERS, x, x, y, steps=-1)
    with pytest.raises(ValueError, match="must match"):
        finetune_predictor(enc, LAYERS, x, x, y[:3])
