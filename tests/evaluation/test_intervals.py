from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

from medmeta_lib.evaluation.intervals import (
    _boot_metric,
    majority_rate,
    mean_ci,
    paired_difference,
    split_metrics,
    two_level_bootstrap,
)


def _data(d=4, n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.625).astype(int)  # imbalanced, like PneumoniaMNIST's test split
    score = np.clip(0.5 + 0.25 * (2 * y - 1)[None, :] + 0.3 * rng.standard_normal((d, n)), 0, 1)
    score = np.round(score, 2)  # ties on purpose
    pred = (score > 0.5).astype(int)
    return y, score, pred


def test_split_metrics_match_scikit_learn() -> None:
    y, score, pred = _data()
    m = split_metrics(pred == y[None, :], y, score)
    for d in range(len(pred)):
        assert m["acc"][d] == pytest.approx(float((pred[d] == y).mean()), abs=1e-12)
        assert m["bal_acc"][d] == pytest.approx(balanced_accuracy_score(y, pred[d]), abs=1e-12)
        assert m["auc"][d] == pytest.approx(roc_auc_score(y, score[d]), abs=1e-12)


def test_per_class_recall_matches_scikit_learn_and_averages_to_balanced_accuracy() -> None:
    y, score, pred = _data(d=3, n=90, seed=4)
    m = split_metrics(pred == y[None, :], y, score, per_class=True)
    for d in range(3):
        assert [m["recall_0"][d], m["recall_1"][d]] == pytest.approx(recall_score(y, pred[d], average=None))
        assert (m["recall_0"][d] + m["recall_1"][d]) / 2 == pytest.approx(m["bal_acc"][d])
    assert "recall_0" not in split_metrics(pred == y[None, :], y, score)  # only when asked
    r = two_level_bootstrap(pred == y[None, :], y, score, n_boot=200, per_class=True)
    for c in (0, 1):
        assert r[f"recall_{c}"]["lo95"] <= r[f"recall_{c}"]["mean"] <= r[f"recall_{c}"]["hi95"]
        assert r[f"recall_{c}"]["mean"] == pytest.approx(float(m[f"recall_{c}"].mean()))


def test_bootstrap_weights_equal_resampled_data() -> None:
    # a replicate's weighted metric equals scikit-learn on the explicitly repeated images
    y, score, pred = _data(d=2, n=60, seed=1)
    rng = np.random.default_rng(5)
    w = rng.multinomial(60, np.full(60, 1 / 60), size=3).astype(float)
    correct = (pred == y[None, :]).astype(float)
    acc = _boot_metric("acc", correct, y, None, w)
    bal = _boot_metric("bal_acc", correct, y, None, w)
    rec1 = _boot_metric("recall_1", correct, y, None, w)
    auc = _boot_metric("auc", correct, y, score, w)
    for b in range(3):
        idx = np.repeat(np.arange(60), w[b].astype(int))
        for d in range(2):
            assert acc[d, b] == pytest.approx(float((pred[d][idx] == y[idx]).mean()), abs=1e-12)
            assert bal[d, b] == pytest.approx(balanced_accuracy_score(y[idx], pred[d][idx]), abs=1e-12)
            assert rec1[d, b] == pytest.approx(recall_score(y[idx], pred[d][idx]), abs=1e-12)
            assert auc[d, b] == pytest.approx(roc_auc_score(y[idx], score[d][idx]), abs=1e-12)


def test_two_level_interval_is_wider_than_the_draw_interval_and_covers_the_mean() -> None:
    y, score, pred = _data(d=20, n=300, seed=2)
    r = two_level_bootstrap(pred == y[None, :], y, score, n_boot=400, seed=0)
    for name in ("acc", "bal_acc", "auc"):
        s = r[name]
        assert s["lo95"] <= s["mean"] <= s["hi95"]
        assert s["ci95_total"] > s["ci95"]  # test-set sampling adds to the draw-to-draw spread
    # delta-method reference: var ≈ var_images(mean-over-draws correctness)/N + var_draws(accuracy)/D; the
    # two-level bootstrap counts the draw × image interaction once more (conservative), here pure interaction
    c = (pred == y[None, :]).astype(float)
    expected = 1.96 * np.sqrt(c.mean(0).var(ddof=1) / 300 + c.mean(1).var(ddof=1) / 20)
    assert 0.95 < r["acc"]["ci95_total"] / expected < 1.4


def test_paired_difference() -> None:
    y, score, pred = _data(d=10, n=200, seed=3)
    a = {"correct": pred == y[None, :], "score": score}
    r = paired_difference(a, a, y, n_boot=100)
    assert r["acc"]["mean"] == 0 and r["acc"]["lo95"] == 0 and r["auc"]["hi95"] == 0
    worse = {"correct": np.zeros_like(a["correct"]), "score": 1 - score}
    d = paired_difference(a, worse, y, n_boot=100)
    assert d["acc"]["lo95"] > 0.5 and d["auc"]["lo95"] > 0
    with pytest.raises(ValueError, match="same draws"):
        paired_difference(a, {"correct": a["correct"][:3]}, y)


def test_majority_rate_and_mean_ci_and_errors() -> None:
    assert majority_rate([0] * 234 + [1] * 390) == pytest.approx(0.625)
    assert mean_ci([1.0])[1] != mean_ci([1.0])[1]  # nan for one value
    with pytest.raises(ValueError, match="two-class"):
        split_metrics(np.ones((1, 3), bool), np.array([0, 1, 2]), np.ones((1, 3)))
    with pytest.raises(ValueError, match="n_boot"):
        two_level_bootstrap(np.ones((1, 4), bool), np.array([0, 1, 0, 1]), n_boot=1)
