from __future__ import annotations

import math

import numpy as np
import pytest

from medmeta_lib.evaluation.intervals import mean_ci


def test_mean_ci_formula():
    rng = np.random.default_rng(0)
    v = rng.random(600)
    m, h = mean_ci(v)
    assert m == pytest.approx(v.mean())
    assert h == pytest.approx(1.96 * v.std(ddof=1) / math.sqrt(600))


def test_mean_ci_covers_true_mean_about_95_percent():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(2000):
        m, h = mean_ci(rng.binomial(1, 0.7, size=200).astype(float))
        hits += abs(m - 0.7) <= h
    assert 0.93 <= hits / 2000 <= 0.97


def test_mean_ci_edge_cases():
    m, h = mean_ci([0.5])
    assert m == 0.5 and math.isnan(h)
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])
