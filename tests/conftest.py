from __future__ import annotations

import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("MPLBACKEND", "Agg")

from medmeta_lib.config import shared_data_file
from medmeta_lib.data.collection import ImageCollection

PNEUMONIA = shared_data_file("pneumoniamnist.npz")
needs_pneumonia = pytest.mark.skipif(
    PNEUMONIA is None,
    reason="real PneumoniaMNIST not at ../shared/data/medmnist/pneumoniamnist.npz (a fresh clone has no ../shared)",
)


def make_collection(
    n_classes: int = 4, per_class: int = 10, n_sites: int = 2, size: int = 8, seed: int = 0
) -> ImageCollection:
    g = torch.Generator().manual_seed(seed)
    n = n_classes * per_class
    labels = torch.arange(n) % n_classes
    sites = (torch.arange(n) // n_classes) % n_sites
    # class-dependent mean intensity so that tasks are easy but images differ
    images = (labels.float()[:, None, None, None] + 1) / (n_classes + 1) + 0.05 * torch.randn(
        n, 1, size, size, generator=g
    )
    return ImageCollection(
        images=images.clamp(0, 1),
        labels=labels,
        class_names=tuple(f"c{i}" for i in range(n_classes)),
        sites=sites,
        site_names=tuple(f"s{i}" for i in range(n_sites)),
        source="toy",
    )


@pytest.fixture
def toy() -> ImageCollection:
    return make_collection()
