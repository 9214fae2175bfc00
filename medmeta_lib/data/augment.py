"""Greyscale-safe augmentation presets for medical images: SSL views, training augmentation, scanner shift.

:class:`ViewAugment` turns a batch ``(B, C, H, W)`` in ``[0, 1]`` into a randomly augmented batch
``(B, C, image_size, image_size)`` in ``[0, 1]``: one affine resampling (small rotation, zoom-in crop,
optional flips) followed by intensity changes (gamma, contrast, brightness, blur, noise) and,
optionally, a simulated *scanner shift* (smooth bias field, contrast curve, blur or sharpening,
intensity offset) that mimics how the same anatomy looks when acquired at another site.

What the presets do **not** do, on purpose: no hue/saturation jitter (greyscale modalities, and
colour is diagnostic in dermoscopy/histology); no large rotations (``rotate_deg ≤ 15``: a radiograph
is never upside down); no tiny crops (``scale ≥ 0.6``: a lesion must stay in view); no left–right
flip for chest radiographs (the heart is on the left; situs inversus is a finding).

Implementation note. The transforms follow MONAI's array transforms (``RandAffine``,
``RandAdjustContrast``, ``RandGaussianSmooth``/``RandGaussianSharpen``, ``RandBiasField``,
``RandGaussianNoise``), but those work one image at a time: measured on the project's 2-core
machine, ``RandAffine`` alone took 9 s and ``RandGaussianSmooth`` 1.1 s for 256 images of 28 px,
while SimCLR calls the augmentation every batch. So the per-image parameters are drawn in one go
and applied to the whole batch: the resampling with MONAI's batched spatial transformer
(``monai.networks.layers.AffineTransform``), the intensity parts as torch tensor operations (their
formulas are checked against MONAI's deterministic transforms in ``tests/data/test_augment.py``).
All randomness comes from one ``torch.Generator`` seeded with ``seed`` (there are no MONAI random
transforms left to ``set_random_state``), so two augmenters with the same seed give the same views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["PRESETS", "Preset", "ViewAugment", "adjust_gamma", "bias_field", "blur", "gaussian_kernels"]


@dataclass(frozen=True)
class Preset:
    """Geometry defaults of a modality.

    Attributes:
        flip: random horizontal flip (label-preserving for this modality?).
        vflip_rot90: also vertical flips and 90° rotations (orientation-free images: skin, tissue).
        padding: how areas outside the image are filled (``"zeros"``, ``"border"``, ``"reflection"``).
        scanner_shift: simulate acquisition shift by default.
    """

    flip: bool
    vflip_rot90: bool
    padding: str
    scanner_shift: bool = False


PRESETS: dict[str, Preset] = {
    "chest_xray": Preset(flip=False, vflip_rot90=False, padding="zeros"),
    "dermoscopy": Preset(flip=True, vflip_rot90=True, padding="reflection"),
    "fundus": Preset(flip=True, vflip_rot90=False, padding="zeros"),  # a flipped left eye looks like a right eye
    "histology": Preset(flip=True, vflip_rot90=True, padding="reflection"),
    "brain_mri": Preset(flip=False, vflip_rot90=False, padding="zeros"),
    "generic": Preset(flip=False, vflip_rot90=False, padding="border"),
    "scanner_shift": Preset(flip=False, vflip_rot90=False, padding="zeros", scanner_shift=True),
}


def _range(field: str, value: tuple[float, float], lo: float, hi: float, hint: str) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be a (min, max) pair of numbers, got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)) or not lo <= a <= b <= hi:
        raise ValueError(f"{field} must satisfy {lo} ≤ min ≤ max ≤ {hi} ({hint}), got {value!r}")
    return a, b


def gaussian_kernels(sigma: Tensor, radius: int) -> Tensor:
    """Normalised 1-D Gaussian kernels ``(B, 2·radius+1)``, one per sigma; sigma ≈ 0 gives the identity.

    Example:
        >>> gaussian_kernels(torch.tensor([0.0, 1.0]), 2)[0].tolist()
        [0.0, 0.0, 1.0, 0.0, 0.0]
    """
    x = torch.arange(-radius, radius + 1, dtype=sigma.dtype, device=sigma.device)
    s = sigma.clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (x[None, :] / s) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def blur(images: Tensor, sigma: Tensor) -> Tensor:
    """Per-image separable Gaussian blur (reflect padding); ``sigma`` ``(B,)`` in pixels.

    Example:
        >>> blur(torch.rand(2, 1, 8, 8), torch.tensor([0.0, 1.0])).shape
        torch.Size([2, 1, 8, 8])
    """
    b, c, h, w = images.shape
    # truncation at 4 sigma, as MONAI's GaussianFilter (tail = int(4·sigma + 0.5))
    radius = max(1, min(int(4.0 * float(sigma.max()) + 0.5), (min(h, w) - 1) // 2))
    k = gaussian_kernels(sigma.to(images), radius).repeat_interleave(c, dim=0)  # (B·C, K)
    x = images.reshape(1, b * c, h, w)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=b * c)
    return x.reshape(b, c, h, w)


def _legendre(t: Tensor) -> Tensor:
    """Legendre polynomials P0..P3 at ``t`` → ``(4, len(t))``."""
    return torch.stack([torch.ones_like(t), t, 0.5 * (3 * t**2 - 1), 0.5 * (5 * t**3 - 3 * t)])


def bias_field(coeffs: Tensor, size: tuple[int, int]) -> Tensor:
    """Smooth multiplicative fields ``exp(Σ c_ij P_i(y) P_j(x))``, ``(B, 1, H, W)``, Legendre degree i + j ≤ 3.

    The same polynomial model as MONAI's ``RandBiasField`` (which keeps the terms with i ≥ j).

    Args:
        coeffs: ``(B, 4, 4)`` Legendre coefficients (entries with i + j > 3 are ignored).
        size: ``(H, W)``.

    Example:
        >>> c = torch.zeros(2, 4, 4); c[1, 0, 0] = math.log(2.0)  # image 1: a constant factor 2
        >>> c[:, 3, 3] = 5.0  # i + j > 3: ignored
        >>> f = bias_field(c, (8, 6))
        >>> f.shape, f[0].unique().tolist(), f[1].unique().tolist()
        (torch.Size([2, 1, 8, 6]), [1.0], [2.0])
    """
    h, w = size
    py = _legendre(torch.linspace(-1, 1, h, dtype=coeffs.dtype, device=coeffs.device))
    px = _legendre(torch.linspace(-1, 1, w, dtype=coeffs.dtype, device=coeffs.device))
    mask = (torch.arange(4)[:, None] + torch.arange(4)[None, :] <= 3).to(coeffs)
    field = torch.einsum("bij,iy,jx->byx", coeffs * mask, py, px)
    return field.exp()[:, None]


def adjust_gamma(images: Tensor, gamma: Tensor) -> Tensor:
    """``x ** gamma`` per image (``gamma`` ``(B,)``) for images in [0, 1].

    MONAI's ``AdjustContrast`` without its per-image min-max rescaling: the two agree for an image whose minimum is 0
    and maximum 1; here a darker or lighter image keeps its range.

    Example:
        >>> y = adjust_gamma(torch.full((2, 1, 2, 2), 0.25), torch.tensor([1.0, 0.5]))
        >>> y.shape, y[:, 0, 0, 0].tolist()
        (torch.Size([2, 1, 2, 2]), [0.25, 0.5])
    """
    return images.clamp(0, 1) ** gamma.to(images)[:, None, None, None]


class ViewAugment:
    """Random, label-preserving views of a batch of medical images (greyscale-safe, seeded).

    Args:
        preset: modality preset (``PRESETS``): ``chest_xray``, ``dermoscopy``, ``fundus``,
            ``histology``, ``brain_mri``, ``generic`` or ``scanner_shift``.
        image_size: output side in pixels (the views are resampled to ``image_size × image_size``).
        rotate_deg: maximal rotation, degrees (≤ 15).
        scale: range of the crop side as a fraction of the image side (zoom-in; 0.6 ≤ min ≤ max ≤ 1).
        flip: random horizontal flips; ``None`` = the preset's choice (off for chest X-ray and brain
            MRI, on for dermoscopy, fundus and histology). Dermoscopy and histology also get vertical
            flips and 90° rotations.
        gamma: range of the gamma exponent (``x ** gamma``).
        contrast: range of the contrast factor around the image mean.
        brightness: range of the additive brightness offset.
        noise_std: maximal standard deviation of additive Gaussian noise (drawn per image in [0, noise_std]).
        blur_sigma: range of the Gaussian blur sigma, in output pixels.
        scanner_shift: add a simulated acquisition shift (bias field, contrast curve, blur or sharpen,
            offset); ``None`` = the preset's choice (on only for ``"scanner_shift"``).
        seed: seed of the augmenter's random generator.

    Example:
        >>> aug = ViewAugment(preset="chest_xray", image_size=28, seed=0)
        >>> v1, v2 = aug(torch.rand(8, 1, 28, 28)), aug(torch.rand(8, 1, 28, 28))
        >>> v1.shape, bool(v1.min() >= 0), bool(v1.max() <= 1)
        (torch.Size([8, 1, 28, 28]), True, True)
    """

    def __init__(
        self,
        *,
        preset: str = "chest_xray",
        image_size: int,
        rotate_deg: float = 10.0,
        scale: tuple[float, float] = (0.7, 1.0),
        flip: bool | None = None,
        gamma: tuple[float, float] = (0.7, 1.5),
        contrast: tuple[float, float] = (0.8, 1.2),
        brightness: tuple[float, float] = (-0.1, 0.1),
        noise_std: float = 0.03,
        blur_sigma: tuple[float, float] = (0.0, 0.8),
        scanner_shift: bool | None = None,
        seed: int = 0,
    ) -> None:
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 4:
            raise ValueError(f"image_size must be an int ≥ 4 (the output side in pixels), got {image_size!r}")
        if isinstance(rotate_deg, bool) or not isinstance(rotate_deg, (int, float)) or not 0 <= rotate_deg <= 15:
            raise ValueError(
                f"rotate_deg must be in [0, 15] degrees (larger rotations are not label-preserving for "
                f"medical images), got {rotate_deg!r}"
            )
        self.scale = _range("scale", scale, 0.6, 1.0, "crop side fraction; < 0.6 can cut the finding out of view")
        self.gamma = _range("gamma", gamma, 0.2, 5.0, "gamma exponent")
        self.contrast = _range("contrast", contrast, 0.2, 5.0, "contrast factor")
        self.brightness = _range("brightness", brightness, -0.5, 0.5, "additive offset")
        self.blur_sigma = _range("blur_sigma", blur_sigma, 0.0, 5.0, "pixels")
        if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or not 0 <= noise_std <= 0.5:
            raise ValueError(f"noise_std must be in [0, 0.5] (images are in [0, 1]), got {noise_std!r}")
        if flip is not None and not isinstance(flip, bool):
            raise ValueError(f"flip must be True, False or None (preset default), got {flip!r}")
        if scanner_shift is not None and not isinstance(scanner_shift, bool):
            raise ValueError(f"scanner_shift must be True, False or None (preset default), got {scanner_shift!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        p = PRESETS[preset]
        self.preset = preset
        self.image_size = image_size
        self.rotate_deg = float(rotate_deg)
        self.flip = p.flip if flip is None else flip
        self.vflip_rot90 = p.vflip_rot90 and self.flip
        self.padding = p.padding
        self.noise_std = float(noise_std)
        self.scanner_shift = p.scanner_shift if scanner_shift is None else scanner_shift
        self.seed = seed
        self._gen = torch.Generator().manual_seed(seed)
        self._shared = False  # set for one call by ``__call__(..., shared=True)``
        self._resample: Any = None  # MONAI AffineTransform, built on first use (MONAI import is slow)

    def reset(self, seed: int | None = None) -> None:
        """Restart the random sequence (from ``seed``, default the constructor's)."""
        self._gen.manual_seed(self.seed if seed is None else seed)

    def __repr__(self) -> str:
        return (
            f"ViewAugment(preset={self.preset!r}, image_size={self.image_size}, rotate_deg={self.rotate_deg}, "
            f"scale={self.scale}, flip={self.flip}, gamma={self.gamma}, contrast={self.contrast}, "
            f"brightness={self.brightness}, noise_std={self.noise_std}, blur_sigma={self.blur_sigma}, "
            f"scanner_shift={self.scanner_shift}, seed={self.seed})"
        )

    # ------------------------------------------------------------ random parameters

    def _rand(self, *shape: int, dtype: torch.dtype = torch.float64, normal: bool = False) -> Tensor:
        """Uniform (or normal) draws of ``shape``; in shared mode one row, repeated for every image."""
        lead = 1 if self._shared else shape[0]
        draw = torch.randn if normal else torch.rand
        r = draw((lead, *shape[1:]), generator=self._gen, dtype=dtype)
        return r.expand(shape).clone() if self._shared else r

    def _u(self, n: int, lo: float, hi: float) -> Tensor:
        return lo + (hi - lo) * self._rand(n)

    def _theta(self, n: int, h: int, w: int) -> Tensor:
        """Affine matrices ``(n, 2, 3)`` mapping output to input normalised coordinates (affine_grid convention)."""
        angle = torch.deg2rad(self._u(n, -self.rotate_deg, self.rotate_deg))
        if self.vflip_rot90:
            quarter = torch.randint(0, 4, (1 if self._shared else n,), generator=self._gen).expand(n)
            angle = angle + (math.pi / 2) * quarter
        side = self._u(n, *self.scale) * min(h, w)  # crop side in input pixels
        # crop centre (pixels from the image centre): the outermost output pixel centres, at
        # side/2 · (S-1)/S, must stay within the outermost input pixel centres, else bilinear sampling
        # blends in the padding
        reach = side * (self.image_size - 1) / (2 * self.image_size)
        cx = (2 * self._rand(n) - 1) * ((w - 1) / 2 - reach).clamp_min(0)
        cy = (2 * self._rand(n) - 1) * ((h - 1) / 2 - reach).clamp_min(0)
        fx = torch.ones(n, dtype=torch.float64)
        fy = torch.ones(n, dtype=torch.float64)
        if self.flip:
            fx = torch.where(self._rand(n, dtype=torch.float32) < 0.5, -1.0, 1.0).double()
        if self.vflip_rot90:
            fy = torch.where(self._rand(n, dtype=torch.float32) < 0.5, -1.0, 1.0).double()
        cos, sin, half = torch.cos(angle), torch.sin(angle), side / 2
        # input_pixel = c + R(angle) · diag(fx, fy) · half · u, then divided by the input half-extents
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        theta[:, 0, 0] = cos * fx * half / (w / 2)
        theta[:, 0, 1] = -sin * fy * half / (w / 2)
        theta[:, 1, 0] = sin * fx * half / (h / 2)
        theta[:, 1, 1] = cos * fy * half / (h / 2)
        theta[:, 0, 2] = cx / (w / 2)
        theta[:, 1, 2] = cy / (h / 2)
        return theta

    # ------------------------------------------------------------ application

    def _spatial(self, images: Tensor, theta: Tensor) -> Tensor:
        if self._resample is None:
            from monai.networks.layers import AffineTransform

            self._resample = AffineTransform(
                spatial_size=(self.image_size, self.image_size),
                normalized=True,
                reverse_indexing=False,
                align_corners=False,
                padding_mode=self.padding,
            )
        out = self._resample(images, theta.to(images))  # type: ignore[misc]
        return out.as_tensor() if hasattr(out, "as_tensor") else out

    def _scanner(self, x: Tensor) -> Tensor:
        """Acquisition shift: bias field, contrast curve, blur or sharpen, offset (all per image)."""
        n = x.shape[0]
        coeffs = (-0.1 + 0.2 * self._rand(n, 16)).reshape(n, 4, 4)
        coeffs[:, 0, 0] = 0.0  # global level is the offset's job
        x = x * bias_field(coeffs, tuple(x.shape[-2:])).to(x)  # type: ignore[arg-type]
        x = adjust_gamma(x, self._u(n, 0.75, 1.35))
        sigma = self._u(n, 0.3, 0.7)
        sharpen = self._rand(n, dtype=torch.float32) < 0.5
        amount = self._u(n, 0.3, 0.8).to(x)[:, None, None, None]
        blurred = blur(x, sigma)
        sharp = x + amount * (x - blurred)  # unsharp mask, as MONAI's GaussianSharpen
        x = torch.where(sharpen.to(x.device)[:, None, None, None], sharp, blurred)
        return x + self._u(n, -0.08, 0.08).to(x)[:, None, None, None]

    def __call__(self, images: Tensor, *, shared: bool = False) -> Tensor:
        """Augment a batch ``(B, C, H, W)`` in [0, 1]; returns ``(B, C, image_size, image_size)`` in [0, 1].

        Args:
            images: the batch.
            shared: draw one set of random parameters (crop, rotation, intensity, noise pattern) and apply
                it to every image: a fixed transform, so an image's view does not depend on the other
                images in the batch or on its position (test-time augmentation; equal to float rounding:
                the blur's kernels run batched). The generator advances
                by the same amount whatever the batch size, so the k-th shared call after ``reset`` is
                the same transform for any batch. ``False`` (training views): independent draws per image.

        Example:
            >>> aug, x = ViewAugment(image_size=16), torch.rand(5, 1, 16, 16)
            >>> aug.reset(); alone = aug(x[3:4], shared=True)
            >>> aug.reset(); bool(torch.allclose(aug(x, shared=True)[3:4], alone, atol=1e-6))  # float rounding
            True
        """
        if not isinstance(shared, bool):
            raise ValueError(f"shared must be True or False, got {shared!r}")
        self._shared = shared
        try:
            return self._apply(images)
        finally:
            self._shared = False

    def _apply(self, images: Tensor) -> Tensor:
        if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a float tensor (B, C, H, W), got {got}")
        n = images.shape[0]
        if n == 0:
            return images.new_zeros(0, images.shape[1], self.image_size, self.image_size)
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"images must be scaled to [0, 1] (got min {lo:.3g}, max {hi:.3g}); divide uint8 by 255")
        x = self._spatial(images, self._theta(n, images.shape[-2], images.shape[-1]))
        if self.scanner_shift:
            x = self._scanner(x).clamp(0, 1)
        x = adjust_gamma(x, self._u(n, *self.gamma))
        c = self._u(n, *self.contrast).to(x)[:, None, None, None]
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * c + mean + self._u(n, *self.brightness).to(x)[:, None, None, None]
        if self.blur_sigma[1] > 0:
            x = blur(x, self._u(n, *self.blur_sigma))
        if self.noise_std > 0:
            std = self._u(n, 0.0, self.noise_std).to(x)[:, None, None, None]
            x = x + std * self._rand(*x.shape, dtype=x.dtype, normal=True).to(x.device)
        return x.clamp(0, 1)

    def pair(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Two independent views of each image (a SimCLR positive pair).

        Example:
            >>> a, b = ViewAugment(image_size=16).pair(torch.rand(4, 1, 16, 16))
            >>> bool((a - b).abs().max() > 0)
            True
        """
        return self(images), self(images)
