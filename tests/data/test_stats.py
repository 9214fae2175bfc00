"""Descriptive statistics: how well the site can be told from pixels, also for small sites."""

from __future__ import annotations

import math

import pytest
import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.stats import site_predictability


def _two_sites(n0: int, n1: int) -> ImageCollection:
    g = torch.Generator().manual_seed(0)
    x = torch.cat(
        [0.2 + 0.05 * torch.rand(n0, 1, 4, 4, generator=g), 0.8 + 0.05 * torch.rand(n1, 1, 4, 4, generator=g)]
    )
    n = n0 + n1
    return ImageCollection(images=x, labels=torch.arange(n) % 2, class_names=("a", "b"),
                           sites=torch.tensor([0] * n0 + [1] * n1), site_names=("s0", "s1"), source="demo")  # fmt: skip


def test_a_visible_site_shift_is_found_even_with_two_images_at_a_site() -> None:
    assert site_predictability(_two_sites(8, 8)) == 1.0
    assert site_predictability(_two_sites(8, 2)) == 1.0  # two folds instead of three


def test_a_site_with_one_image_gives_nan_and_says_why() -> None:
    with pytest.warns(
        UserWarning,
        match=r"demo: site predictability needs at least 2 images at every site; sampled \{'s0': 8, 's1': 1\}",
    ):
        assert math.isnan(site_predictability(_two_sites(8, 1)))


def test_one_site_is_refused() -> None:
    col = _two_sites(4, 0)
    with pytest.raises(ValueError, match="at least two sites"):
        site_predictability(ImageCollection(images=col.images, labels=col.labels, class_names=("a", "b")))
