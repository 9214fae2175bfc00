"""Saliency figure: image / before / after rows, a shared scale per image, flat maps labelled."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from medmeta_lib.viz.saliency_plots import saliency_figure


def test_rows_columns_titles_and_flat_maps():
    torch.manual_seed(0)
    images = torch.rand(4, 1, 12, 12)
    before = torch.zeros(4, 1, 12, 12)  # a uniform prediction: no evidence anywhere
    after = torch.randn(4, 1, 12, 12)
    fig = saliency_figure(
        images,
        before,
        after,
        labels=torch.tensor([0, 1, 2, 0]),
        pred_before=torch.tensor([0, 0, 0, 0]),
        conf_before=torch.full((4,), 1 / 3),
        pred_after=torch.tensor([0, 1, 1, 0]),
        conf_after=torch.tensor([0.9, 0.8, 0.6, 0.7]),
        class_names=["x/a", "x/b", "x/c"],
        steps_after=5,
    )
    image_axes = fig.axes[:12]
    assert len(fig.axes) == 3 * 4 + 1  # + colour bar
    grid = np.array(image_axes).reshape(3, 4)
    assert grid[0, 1].get_title() == "true: b"
    assert grid[1, 0].get_title() == "uniform 33%" and "no class" in grid[1, 0].texts[0].get_text()
    assert grid[2, 2].get_title() == "b 60%"
    assert grid[2, 2].title.get_color() == "#d62728" and grid[2, 1].title.get_color() == "#1a7f37"
    assert not grid[2, 0].texts  # the after map is not flat
    assert "5 steps" in grid[2, 0].get_ylabel()
    overlay = grid[2, 0].images[-1].get_array()
    assert overlay.shape == (12, 12)
    plt.close(fig)


@pytest.mark.parametrize("method", ["occlusion", "gradient"])
def test_rgb_images_are_shown_in_colour_and_maps_reduced_over_channels(method: str):
    torch.manual_seed(0)
    images = torch.rand(2, 3, 8, 8)
    images[:, 0] *= 0.2  # distinct channels: a channel swap or an H/W transpose would show
    maps = torch.randn(2, 3, 8, 8)
    fig = saliency_figure(images, maps, 2 * maps, method=method)
    assert len(fig.axes) == 7  # 3 rows x 2 images + colour bar
    grid = np.array(fig.axes[:6]).reshape(3, 2)
    reduced = maps[:, 0] if method == "occlusion" else maps.sum(1)  # occlusion's channels are one map repeated
    for i in range(2):
        shown = np.asarray(grid[0, i].images[0].get_array())
        assert shown.shape == (8, 8, 3)
        np.testing.assert_allclose(shown, images[i].permute(1, 2, 0).numpy(), rtol=0, atol=1e-7)
        np.testing.assert_allclose(
            np.asarray(grid[1, i].images[-1].get_array()), reduced[i].numpy(), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            np.asarray(grid[2, i].images[-1].get_array()), 2 * reduced[i].numpy(), rtol=1e-5, atol=1e-6
        )
    plt.close(fig)


def test_shape_checks():
    images = torch.rand(2, 3, 8, 8)
    maps = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="match the images"):
        saliency_figure(images, maps[:1], maps)
