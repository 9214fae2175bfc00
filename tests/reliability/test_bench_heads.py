"""``bench/fewshot_recipes.py``'s head names: ``+tta`` features, ``@C`` strength and ``^B`` power transform."""

from __future__ import annotations

import sys

import numpy as np

from medmeta_lib.ssl.heads import head_predictor
from tests.reliability.support import REPO

sys.path.insert(0, str(REPO / "bench"))
from fewshot_recipes import _head


def test_a_power_suffix_transforms_the_features_of_the_named_kind_before_the_head() -> None:
    rng = np.random.default_rng(0)
    plain = (rng.random((40, 6)), rng.random((10, 6)))
    views = (rng.random((40, 6)) ** 3, rng.random((10, 6)) ** 3)  # skewed, non-negative
    feats, labels, support = {"": plain, "+tta": views}, np.arange(40) % 2, np.arange(8)
    got = _head("probe+tta^0.5@0.3", feats, labels)(support)
    want = head_predictor("probe", np.sqrt(views[0]), np.sqrt(views[1]), labels, C=0.3)(support)
    np.testing.assert_allclose(got, want)
    assert not np.allclose(got, head_predictor("probe", *views, labels, C=0.3)(support))  # the transform mattered
    np.testing.assert_allclose(_head("probe", feats, labels)(support), head_predictor("probe", *plain, labels)(support))
