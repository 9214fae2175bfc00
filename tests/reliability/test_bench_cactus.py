"""``bench/cactus_tasks.py``: CACTUs tasks from unlabelled images, one task group per k-means partition."""

from __future__ import annotations

import sys

import pytest
import torch

from medmeta_lib.models.backbones import create_backbone
from tests.reliability.support import REPO

sys.path.insert(0, str(REPO / "bench"))
from cactus_tasks import cactus_tasks


def _encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_backbone("conv4", in_channels=1, hidden=8, norm="group")


def test_each_partition_is_a_task_group_of_clusters_holding_every_image_at_most_once() -> None:
    images = torch.rand(240, 1, 16, 16)
    tasks = cactus_tasks(_encoder(), images, partitions=3, clusters=6, min_size=10)
    groups = tasks.class_modalities
    assert groups is not None and set(groups) == {"partition0", "partition1", "partition2"}
    sizes = tasks.meta["cluster_sizes"]
    assert min(sizes) >= 10 and len(sizes) == tasks.num_classes
    assert torch.equal(torch.bincount(tasks.labels), torch.tensor(sizes))
    for g in set(groups):  # within one partition an image belongs to one cluster at most
        classes = [c for c, name in enumerate(groups) if name == g]
        rows = tasks.images[torch.isin(tasks.labels, torch.tensor(classes))].flatten(1)
        assert len(torch.unique(rows, dim=0)) == len(rows) <= len(images)
    again = cactus_tasks(_encoder(), images, partitions=3, clusters=6, min_size=10)
    assert torch.equal(again.labels, tasks.labels) and torch.equal(again.images, tasks.images)  # seeded k-means


def test_small_clusters_are_dropped_and_bad_sizes_refused() -> None:
    images = torch.rand(60, 1, 16, 16)
    every = cactus_tasks(_encoder(), images, partitions=1, clusters=6, min_size=1)
    kept = cactus_tasks(_encoder(), images, partitions=1, clusters=6, min_size=12)
    assert len(every) == 60 and every.num_classes == 6
    assert kept.meta["cluster_sizes"] == [s for s in every.meta["cluster_sizes"] if s >= 12]
    for bad in ({"partitions": 0}, {"clusters": 2.5}, {"min_size": -1}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be an integer >= 1"):
            cactus_tasks(_encoder(), images, **bad)  # type: ignore[arg-type]
