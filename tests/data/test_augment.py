"""ViewAugment: shapes, range, seeding, validation, geometry, and the vectorised ops against MONAI/numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmeta_lib.data.augment import PRESETS, ViewAugment, adjust_gamma, bias_field, blur
from tests.conftest import PNEUMONIA, needs_pneumonia

# every random component switched off
IDENTITY = {
    "rotate_deg": 0.0,
    "scale": (1.0, 1.0),
    "flip": False,
    "gamma": (1.0, 1.0),
    "contrast": (1.0, 1.0),
    "brightness": (0.0, 0.0),
    "noise_std": 0.0,
    "blur_sigma": (0.0, 0.0),
}


def _images(n: int = 16, c: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    base = (0.5 + 0.4 * torch.sin(3 * xx) * torch.cos(2 * yy)).expand(n, c, size, size)
    return (base + 0.05 * torch.rand(n, c, size, size, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_range_dtype(preset: str, channels: int) -> None:
    x = _images(8, channels)
    out = ViewAugment(preset=preset, image_size=28)(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, x)


def test_resizes_to_image_size() -> None:
    assert ViewAugment(image_size=16)(_images(4, size=28)).shape == (4, 1, 16, 16)
    assert ViewAugment(image_size=64)(_images(4, size=28)).shape == (4, 1, 64, 64)
    assert ViewAugment(image_size=28)(torch.rand(0, 1, 28, 28)).shape == (0, 1, 28, 28)


def test_deterministic_under_seed() -> None:
    x = _images()
    a, b = (
        ViewAugment(image_size=28, seed=3, scanner_shift=True),
        ViewAugment(image_size=28, seed=3, scanner_shift=True),
    )
    first = a(x)
    assert torch.equal(first, b(x))
    assert torch.equal(a(x), b(x))  # the sequences stay in step
    second = a(x)
    assert not torch.equal(first, second)  # successive calls give new views
    a.reset()
    assert torch.equal(a(x), first)


def test_different_seeds_differ() -> None:
    x = _images()
    assert not torch.allclose(ViewAugment(image_size=28, seed=0)(x), ViewAugment(image_size=28, seed=1)(x))


def test_views_of_one_batch_are_independent_per_image() -> None:
    x = _images(4)[:1].expand(4, 1, 28, 28).contiguous()  # four copies of one image
    out = ViewAugment(image_size=28)(x)
    assert all(not torch.allclose(out[0], out[i]) for i in range(1, 4))
    a, b = ViewAugment(image_size=28).pair(x)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_shared_views_are_one_transform_whatever_the_batch(preset: str) -> None:
    aug = ViewAugment(preset=preset, image_size=28, seed=5)
    copies = _images(4)[:1].expand(4, 1, 28, 28).contiguous()
    same = aug(copies, shared=True)
    assert all(torch.allclose(same[0], same[i], atol=1e-6) for i in range(1, 4))  # one transform for all
    x = _images(9, seed=1)
    aug.reset()
    batch = [aug(x, shared=True) for _ in range(3)]  # three views of a batch
    for i in (0, 4, 8):  # ... equal, view by view, to the views of each image alone
        aug.reset()
        alone = [aug(x[i : i + 1], shared=True) for _ in range(3)]
        for k in range(3):
            torch.testing.assert_close(alone[k], batch[k][i : i + 1], rtol=0, atol=1e-6)
    assert not torch.allclose(batch[0], batch[1])  # successive shared calls are different transforms
    assert not aug._shared  # the mode lasts one call
    with pytest.raises(ValueError, match="shared"):
        aug(x, shared=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rotate_deg": 15.5}, "rotate_deg"),
        ({"rotate_deg": -1}, "rotate_deg"),
        ({"scale": (0.5, 1.0)}, "scale"),
        ({"scale": (0.9, 0.8)}, "scale"),
        ({"scale": (0.7, 1.3)}, "scale"),
        ({"scale": 0.7}, "scale"),
        ({"gamma": (0.0, 1.0)}, "gamma"),
        ({"contrast": (1.2, 0.8)}, "contrast"),
        ({"brightness": (-1.0, 0.0)}, "brightness"),
        ({"noise_std": -0.1}, "noise_std"),
        ({"blur_sigma": (-1.0, 0.5)}, "blur_sigma"),
        ({"preset": "ct"}, "preset"),
        ({"image_size": 0}, "image_size"),
        ({"flip": "yes"}, "flip"),
        ({"scanner_shift": 1}, "scanner_shift"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_validation(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ViewAugment(**{"image_size": 28, **kwargs})


def test_rejects_bad_images() -> None:
    aug = ViewAugment(image_size=28)
    with pytest.raises(ValueError, match=r"\[0, 1\].*255"):
        aug(_images() * 255)
    with pytest.raises(ValueError, match="B, C, H, W"):
        aug(torch.rand(28, 28))
    with pytest.raises(ValueError, match="float"):
        aug((_images() * 255).to(torch.uint8))


def test_all_ranges_degenerate_is_identity() -> None:
    x = _images()
    out = ViewAugment(image_size=28, **IDENTITY)(x)
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_horizontal_flip_only() -> None:
    x = _images(32)
    out = ViewAugment(image_size=28, **{**IDENTITY, "flip": True})(x)
    same = [(out[i] - x[i]).abs().max() < 1e-5 for i in range(32)]
    flipped = [(out[i] - x[i].flip(-1)).abs().max() < 1e-5 for i in range(32)]
    assert all(s or f for s, f in zip(same, flipped))
    assert 4 < sum(flipped) < 28  # about half


def test_chest_xray_never_flips_but_dermoscopy_does() -> None:
    assert ViewAugment(image_size=28).flip is False
    assert ViewAugment(preset="dermoscopy", image_size=28).flip is True
    assert ViewAugment(preset="histology", image_size=28, flip=False).vflip_rot90 is False
    # an image that is bright on its left stays bright on its left under chest_xray views
    x = torch.zeros(64, 1, 28, 28)
    x[..., :10] = 1.0
    out = ViewAugment(image_size=28, **{**IDENTITY, "rotate_deg": 10.0, "scale": (0.7, 1.0)})(x)
    assert bool((out[..., :, :5].mean((1, 2, 3)) > out[..., :, -5:].mean((1, 2, 3))).all())


def test_rotation_about_the_centre_and_crops_inside_the_image() -> None:
    # rotation alone: a bright central disc stays central
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    disc = (((yy - 13.5) ** 2 + (xx - 13.5) ** 2) < 16).float()[None, None].expand(16, 1, 28, 28)
    out = ViewAugment(image_size=28, **{**IDENTITY, "rotate_deg": 15.0})(disc)
    centre = out[..., 8:20, 8:20].sum((1, 2, 3)) / out.sum((1, 2, 3))
    assert bool((centre > 0.97).all())
    torch.testing.assert_close(out.sum((1, 2, 3)), disc.sum((1, 2, 3)), rtol=0.05, atol=0)
    # zoom-in crops without rotation never leave the image (no padding shows) and magnify by 1/scale
    ones = torch.ones(16, 1, 28, 28)
    zoom = ViewAugment(image_size=28, **{**IDENTITY, "scale": (0.6, 1.0)})
    torch.testing.assert_close(zoom(ones), ones)
    zoom.reset()
    area = zoom(disc).sum((1, 2, 3)) / disc.sum((1, 2, 3))
    assert bool((area > 0.95).all()) and bool((area < 1 / 0.6**2 + 0.3).all()) and float(area.max()) > 1.5


def test_greyscale_safe_no_hue_shift() -> None:
    grey = _images(8, 1).expand(8, 3, 28, 28).contiguous()
    for preset in ("dermoscopy", "histology", "fundus"):
        out = ViewAugment(preset=preset, image_size=28, noise_std=0.0, scanner_shift=True)(grey)
        torch.testing.assert_close(out[:, 0], out[:, 1])
        torch.testing.assert_close(out[:, 0], out[:, 2])


def test_gamma_matches_monai_adjust_contrast() -> None:
    from monai.transforms import AdjustContrast

    x = torch.rand(3, 1, 12, 12)
    x[:, :, 0, 0], x[:, :, 0, 1] = 0.0, 1.0  # MONAI rescales by min/max; on a full-range image it is x**gamma
    gammas = torch.tensor([0.7, 1.0, 1.5])
    ours = adjust_gamma(x, gammas)
    for i, g in enumerate(gammas.tolist()):
        ref = torch.as_tensor(AdjustContrast(gamma=g)(x[i]))
        torch.testing.assert_close(ours[i], ref, atol=1e-5, rtol=0)


def test_blur_matches_monai_gaussian_smooth_in_the_interior() -> None:
    from monai.networks.layers.convutils import gaussian_1d
    from monai.transforms import GaussianSmooth

    x = torch.rand(2, 1, 24, 24, dtype=torch.float64)
    for s in (0.6, 1.2):
        ours = blur(x, torch.full((2,), s, dtype=torch.float64))
        for i in range(2):
            ref = torch.as_tensor(GaussianSmooth(sigma=s, approx="sampled")(x[i])).to(ours)
            # MONAI's sampled kernel is not normalised (sums to 1.0017 at sigma 0.6); ours sums to 1
            ref = ref / gaussian_1d(torch.tensor(s), 4.0, "sampled").sum().item() ** 2
            # MONAI pads with zeros, we reflect: compare away from the border
            torch.testing.assert_close(ours[i, :, 6:-6, 6:-6], ref[:, 6:-6, 6:-6], atol=1e-6, rtol=0)
    torch.testing.assert_close(blur(x, torch.zeros(2, dtype=torch.float64)), x)  # sigma 0 is the identity
    torch.testing.assert_close(blur(x, torch.tensor([0.5, 1.0])).mean(), x.mean(), atol=1e-2, rtol=0)


def test_bias_field_is_the_legendre_polynomial_model() -> None:
    g = torch.Generator().manual_seed(0)
    c = torch.rand(2, 4, 4, generator=g, dtype=torch.float64) * 0.2 - 0.1
    field = bias_field(c, (10, 14))
    mask = np.add.outer(np.arange(4), np.arange(4)) <= 3
    ys, xs = np.linspace(-1, 1, 10), np.linspace(-1, 1, 14)
    for i in range(2):
        ref = np.exp(np.polynomial.legendre.leggrid2d(ys, xs, c[i].numpy() * mask))
        np.testing.assert_allclose(field[i, 0].numpy(), ref, rtol=1e-10)


def test_scanner_shift_changes_appearance_not_anatomy() -> None:
    x = _images(16)
    aug = ViewAugment(image_size=28, **IDENTITY, scanner_shift=True)
    out = aug(x)
    assert (out - x).abs().mean() > 0.02
    a, b = out.flatten(1), x.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    corr = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    assert bool((corr > 0.8).all()), corr
    assert ViewAugment(preset="scanner_shift", image_size=28).scanner_shift is True


@needs_pneumonia
@pytest.mark.realdata
def test_views_figure_on_real_images(tmp_path) -> None:
    import matplotlib.pyplot as plt

    from medmeta_lib.viz.augment_views import views_figure

    assert PNEUMONIA is not None
    imgs = torch.from_numpy(np.load(PNEUMONIA)["train_images"][:3]).float().div(255)[:, None]
    aug = ViewAugment(image_size=28, seed=0)
    fig = views_figure(imgs, aug, n_views=4)
    assert len(fig.axes) == 3 * 5
    np.testing.assert_allclose(fig.axes[0].images[0].get_array(), imgs[0, 0].numpy())  # first column: original
    fig.savefig(tmp_path / "views.png")
    plt.close(fig)
    out = ViewAugment(image_size=28, seed=0)(imgs)
    assert out.shape == imgs.shape and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
