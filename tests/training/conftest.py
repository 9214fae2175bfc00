"""Fixtures of the meta-training tests (``test_meta_train*.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.synthetic import MedSynth


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core machine torch's default threads oversubscribe (10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cols() -> dict[str, ImageCollection]:
    synth = MedSynth(modalities=["chest_xray", "fundus"], n_sites=2)  # 12 classes, 6 per modality
    return {s: synth.generate(image_size=28, split=s, seed=0, n_per_class_site=3) for s in ("train", "val")}
