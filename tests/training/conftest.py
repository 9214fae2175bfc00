"""Fixtures of the meta-training tests (``test_meta_train*.py``); ``one_thread_module`` is in ``tests/conftest.py``."""

from __future__ import annotations

import pytest

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.synthetic import MedSynth


@pytest.fixture(scope="module")
def cols() -> dict[str, ImageCollection]:
    synth = MedSynth(modalities=["chest_xray", "fundus"], n_sites=2)  # 12 classes, 6 per modality
    return {s: synth.generate(image_size=28, split=s, seed=0, n_per_class_site=3) for s in ("train", "val")}
