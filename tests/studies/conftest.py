"""Fixtures of the experiment tests."""

from __future__ import annotations

import pytest

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.synthetic import MedSynth
from tests.studies.split_helpers import MODS


@pytest.fixture(scope="module")
def cols() -> dict[str, ImageCollection]:
    """Three modalities × six classes, three sites, three patients per (class, site) and split."""
    synth = MedSynth(modalities=list(MODS), n_sites=3)
    return {s: synth.generate(image_size=28, split=s, seed=0, n_per_class_site=3) for s in ("train", "val", "test")}
