from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for rendezvous and server tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_medmnist_npz(
    path: Path, *, channels: int = 1, n_classes: int = 10, per_class: int = 6, seed: int = 0
) -> Path:
    """A tiny MedMNIST-format file: ``{split}_images`` uint8 (N, 28, 28) or, in colour, (N, 28, 28, 3);
    ``{split}_labels`` (N, 1); ``per_class`` images per class in each of train, val and test."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "val", "test"):
        images, labels = [], []
        for c in range(n_classes):
            shape = (per_class, 28, 28, 3) if channels == 3 else (per_class, 28, 28)
            mean = np.zeros(shape[1:])
            if channels == 3:
                mean[..., c % 3] = 0.2 + 0.6 * c / n_classes  # the class is in the hue and the level
            else:
                mean[:] = 0.1 + 0.8 * c / n_classes
            images.append((np.clip(mean + rng.normal(0, 0.1, shape), 0, 1) * 255).astype(np.uint8))
            labels.append(np.full((per_class, 1), c, dtype=np.int64))
        arrays[f"{split}_images"] = np.concatenate(images)
        arrays[f"{split}_labels"] = np.concatenate(labels)
    np.savez(path, **arrays)
    return path


@pytest.fixture
def toy() -> ImageCollection:
    return make_collection()


@contextmanager
def _single_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run torch on one thread (the machine's 2 cores are shared; results depend on the thread count)."""
    with _single_thread():
        yield


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    """``one_thread`` for a whole module (``pytestmark = pytest.mark.usefixtures("one_thread_module")``): on the
    shared 2-core machine torch's default threads oversubscribe, and tiny models run many times slower."""
    with _single_thread():
        yield
