"""MedSynth acquisition: how each hospital's scanner turns a patient's anatomy into pixels.

A site has one acquisition profile per modality, built from four archetypes (a modern digital unit; an
older, noisier, low-dose one; a high-contrast unit with tight collimation and tilted patients; a
low-resolution portable) with per-(site, modality) jitter. Sites 4 and above blend two archetypes.
The effects follow the physics order: positioning (rotation, zoom, shift) → the site's mix of the
secondary contrast (kVp for bone, stain strength, colour-to-grey, sequence weighting) → detector
resolution and blur → exposure and contrast curve (gamma) → bias field / heel effect → MRI ghosting →
collimation or camera aperture → noise (Gaussian + signal-dependent, Rician for MRI, grain) →
burnt-in markers (side letters, rulers, text stamps).

Every per-image random number is keyed by (patient key, site), so re-acquiring a patient at its own
site reproduces its image exactly, in any batch.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medmeta_lib.data.synth_fields import Draw, grid, hash_keys, uniforms

__all__ = ["SiteProfile", "acquire", "site_profile"]


@dataclasses.dataclass(frozen=True)
class SiteProfile:
    """One site's acquisition settings for one modality (sizes are fractions of the image width)."""

    mix: float = 1.0  # weight of the secondary physical channel (bone, haemoglobin, eosin, T2)
    gamma: float = 1.0
    contrast: float = 1.0
    offset: float = 0.0
    exposure_sd: float = 0.04
    noise: float = 0.01
    shot: float = 0.01  # signal-dependent (quantum) noise
    grain: float = 0.0  # 0 = white noise, 1 = spatially correlated (plates, compression)
    blur: float = 0.002  # Gaussian sigma
    resolution: float = 1.0  # detector resolution, x 80 px across (down- then up-sampled when coarser)
    bias: float = 0.05  # amplitude of the smooth multiplicative shading
    bias_angle: float = 0.0
    rotation: float = 0.0  # mean rotation in degrees
    rotation_sd: float = 1.0
    zoom: float = 1.0
    shift_sd: float = 0.02
    border: float = 0.0  # collimation margin (radiograph) or aperture shrink (fundus, dermoscopy)
    border_level: float = 0.0
    marker: int = -1  # burnt-in marker corner 0..3 (-1: none)
    marker_level: float = 1.0
    ghost: float = 0.0  # MRI phase-encode ghost amplitude


_ARCHETYPES = (
    SiteProfile(marker=0),
    SiteProfile(
        gamma=0.85,
        contrast=0.9,
        offset=0.02,
        noise=0.022,
        shot=0.015,
        grain=0.6,
        blur=0.011,
        resolution=0.65,
        bias=0.12,
        bias_angle=math.pi / 2,
        rotation=1.0,
        zoom=1.03,
        border=0.07,
        border_level=0.92,
        marker=1,
        marker_level=0.0,
    ),
    SiteProfile(
        gamma=1.25,
        contrast=1.15,
        offset=-0.03,
        noise=0.015,
        shot=0.015,
        grain=0.2,
        blur=0.005,
        bias=0.22,
        bias_angle=math.pi,
        rotation=-2.0,
        rotation_sd=1.5,
        zoom=0.95,
        border=0.07,
        border_level=0.04,
        marker=2,
        ghost=0.06,
    ),
    SiteProfile(
        gamma=1.05,
        contrast=0.92,
        offset=0.0,
        exposure_sd=0.07,
        noise=0.015,
        shot=0.025,
        blur=0.008,
        resolution=0.45,
        bias=0.18,
        bias_angle=-math.pi / 3,
        rotation=2.0,
        zoom=1.06,
        shift_sd=0.03,
        marker=3,
        marker_level=0.05,
        ghost=0.03,
    ),
)
# the secondary channel's weight per archetype: kVp (bone), colour-to-grey, stain, T2 weighting
_MIX = {
    "chest_xray": (1.0, 0.6, 1.45, 1.15),
    "dermoscopy": (1.0, 0.6, 1.5, 1.2),
    "fundus": (1.0, 1.4, 0.7, 1.2),
    "histology": (1.0, 1.5, 0.65, 1.25),
    "brain_mri": (0.0, 0.15, 0.08, 0.22),
}
_OVERRIDES: dict[str, dict[str, float]] = {
    "chest_xray": {"ghost": 0.0},
    "dermoscopy": {"ghost": 0.0, "rotation_sd": 4.0},
    "fundus": {"ghost": 0.0, "border_level": 0.0, "rotation_sd": 2.0},
    "histology": {"ghost": 0.0, "border": 0.0, "marker": -1, "rotation_sd": 2.0, "zoom": 1.0, "bias": 0.03},
    "brain_mri": {"border": 0.0, "rotation_sd": 4.0},
}
_SCALE = {"brain_mri": {"bias": 1.5}, "fundus": {"bias": 1.5}}
_NATIVE_PX = 80  # resolution factor 1 = 80 px across: images smaller than a site's detector are unaffected
_PAD = {"chest_xray": "border", "dermoscopy": "reflection", "fundus": "border", "histology": "reflection"}
_JITTERED = ("gamma", "contrast", "noise", "shot", "blur", "bias", "zoom", "mix")


@functools.lru_cache(maxsize=256)
def site_profile(modality: str, site: int) -> SiteProfile:
    """The fixed acquisition profile of ``site`` (0-based) for ``modality``; the same in every split.

    Example:
        >>> site_profile("chest_xray", 1).gamma < 1 < site_profile("chest_xray", 2).gamma
        True
    """
    mod_id = list(_MIX).index(modality)
    u = uniforms(hash_keys(torch.tensor([site]), 0x5173, mod_id), stream=31, n=16)[0].tolist()
    if site < len(_ARCHETYPES):
        base = dataclasses.asdict(_ARCHETYPES[site])
        base["mix"] = _MIX[modality][site]
    else:  # a blend of two archetypes
        g = uniforms(torch.tensor([site]), stream=32, n=3)[0].tolist()
        i, j, w = int(g[0] * 4), int(g[1] * 4), g[2]
        a, b = dataclasses.asdict(_ARCHETYPES[i]), dataclasses.asdict(_ARCHETYPES[j])
        base = {k: (a[k] if isinstance(a[k], int) else (1 - w) * a[k] + w * b[k]) for k in a}
        base["mix"] = (1 - w) * _MIX[modality][i] + w * _MIX[modality][j]
    base.update(_OVERRIDES.get(modality, {}))
    for k, f in _SCALE.get(modality, {}).items():
        base[k] *= f
    for n, k in enumerate(_JITTERED):
        base[k] *= 1 + 0.16 * (u[n] - 0.5)
    base["offset"] += 0.03 * (u[10] - 0.5)
    base["bias_angle"] += 0.6 * (u[11] - 0.5)
    if modality == "brain_mri":
        base["rotation"] *= 0.5
    return SiteProfile(**base)


@functools.lru_cache(maxsize=8)
def _noise_bank(size: int, tiles: int = 64) -> tuple[Tensor, Tensor]:
    # Fixed white-noise tiles (and a spatially correlated "grain" version); numpy's generator is
    # bit-reproducible, and a per-image random pair of tiles with a random angle gives fresh noise.
    rng = np.random.default_rng(8675309)
    white = rng.standard_normal((tiles, size, size))
    grain = white.copy()
    for axis in (1, 2):  # binomial [1, 2, 1] / 4 smoothing, applied twice per axis (periodic)
        for _ in range(2):
            grain = 0.5 * grain + 0.25 * (np.roll(grain, 1, axis) + np.roll(grain, -1, axis))
    grain = grain / grain.std(axis=(1, 2), keepdims=True)
    return torch.from_numpy(white.astype(np.float32)), torch.from_numpy(grain.astype(np.float32))


def _noise(d: Draw, size: int, grain: float) -> Tensor:
    white, corr = _noise_bank(size)
    k = white.shape[0]
    a = d.index(k)
    b = (a + 1 + d.index(k - 1)) % k
    phi = d.u(0.0, 2 * math.pi)
    wa, wb = white.index_select(0, a), white.index_select(0, b)  # faster than white[a] on CPU
    n = wa.mul_(torch.cos(phi)).add_(wb.mul_(torch.sin(phi)))
    if grain > 0:
        g = min(grain, 1.0)
        ca, cb = corr.index_select(0, a), corr.index_select(0, b)
        n.mul_(math.sqrt(1 - g**2)).add_(cb.mul_(torch.cos(phi)).sub_(ca.mul_(torch.sin(phi))).mul_(g))
    return n


def _blur(x: Tensor, sigma: float) -> Tensor:
    # Separable Gaussian as a sum of shifted copies (not conv2d): elementwise arithmetic in a fixed order
    # gives bit-identical results whatever the batch size, which restyle's exactness relies on.
    if sigma < 0.3:
        return x
    r = math.ceil(2.5 * sigma)
    w = [math.exp(-(k**2) / (2 * sigma**2)) for k in range(-r, r + 1)]
    w = [x_ / sum(w) for x_ in w]
    h, wd = x.shape[-2:]
    xp = F.pad(x, (r, r, 0, 0), mode="replicate")
    out = xp[..., :, 0:wd] * w[0]
    for k in range(1, 2 * r + 1):
        out.add_(xp[..., :, k : k + wd], alpha=w[k])
    xp = F.pad(out, (0, 0, r, r), mode="replicate")
    out = xp[..., 0:h, :] * w[0]
    for k in range(1, 2 * r + 1):
        out.add_(xp[..., k : k + h, :], alpha=w[k])
    return out


_GLYPHS: dict[str, list[tuple[float, float, float, float]]] = {  # rectangles (x0, y0, x1, y1) in a unit box
    "L": [(0, 0, 0.3, 1), (0, 0.75, 1, 1)],
    "R": [(0, 0, 0.3, 1), (0, 0, 1, 0.22), (0.7, 0, 1, 0.55), (0, 0.4, 1, 0.6), (0.5, 0.6, 0.8, 0.8), (0.7, 0.8, 1, 1)],
    "text": [(i * 0.21, 0, i * 0.21 + 0.15, 0.4) for i in range(5)]
    + [(i * 0.3, 0.6, i * 0.3 + 0.22, 1) for i in range(3)],
    "ruler": [(0, 0.75, 1, 0.9)] + [(i / 8, 0.25 if i % 2 else 0, i / 8 + 0.025, 0.75) for i in range(9)],
}
_MARKER = {
    "chest_xray": ("L", "R", "R", "L"),
    "dermoscopy": ("ruler",) * 4,
    "fundus": ("text",) * 4,
    "brain_mri": ("text",) * 4,
}
_MARKER_SIZE = {"L": (0.1, 0.14), "R": (0.1, 0.14), "text": (0.3, 0.1), "ruler": (0.7, 0.12)}


def _markers(x: Tensor, p: SiteProfile, modality: str, site: int, d: Draw) -> Tensor:
    glyph = _MARKER[modality][site % 4]
    gw, gh = _MARKER_SIZE[glyph]
    size = x.shape[-1]
    px = 2.0 / size
    corner = p.marker % 4
    x0 = (-0.92 if corner in (0, 2) else 0.92 - gw) + 0.03 * d.n()
    y0 = (-0.92 if corner in (0, 1) else 0.92 - gh) + 0.03 * d.n()
    # work on the window the glyph can reach (its box +- 5 sd of the jitter), not the whole image
    lo_x, lo_y = -0.92 if corner in (0, 2) else 0.92 - gw, -0.92 if corner in (0, 1) else 0.92 - gh
    c0, c1 = (max(0, int((lo - 0.16 + 1) / px)) for lo in (lo_x, lo_y))
    e0, e1 = (min(size, int((lo + ext + 0.16 + 1) / px) + 1) for lo, ext in ((lo_x, gw), (lo_y, gh)))
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    cx, cy = c[c0:e0], c[c1:e1].view(-1, 1)
    cov = torch.zeros(x.shape[0], e1 - c1, e0 - c0)
    for a0, b0, a1, b1 in _GLYPHS[glyph]:
        cu = ((torch.minimum(cx - (x0 + a0 * gw), (x0 + a1 * gw) - cx)) / px + 0.5).clamp(0, 1)  # (B, 1, w)
        cv = ((torch.minimum(cy - (y0 + b0 * gh), (y0 + b1 * gh) - cy)) / px + 0.5).clamp(0, 1)  # (B, h, 1)
        cov = torch.maximum(cov, cu * cv)
    win = x[:, c1:e1, c0:e0]  # x is a fresh tensor here: editing it in place is safe
    x[:, c1:e1, c0:e0] = win * (1 - cov) + p.marker_level * cov
    return x


def acquire(primary: Tensor, secondary: Tensor, modality: str, site: int, keys: Tensor) -> Tensor:
    """Image a patient's physical maps (each ``(B, H, W)``) at ``site``; returns ``(B, 1, H, W)`` in [0, 1].

    Example:
        >>> acquire(torch.rand(2, 16, 16), torch.rand(2, 16, 16), "chest_xray", 1, torch.tensor([3, 4])).shape
        torch.Size([2, 1, 16, 16])
    """
    p = site_profile(modality, site)
    b, size, _ = primary.shape
    d = Draw(hash_keys(keys, 0xAC01, site), stream=21, n=48)
    u, v = grid(size)
    # the site's weighting of the secondary contrast; mixing first is exact (sampling below is linear)
    x = (primary + p.mix * secondary)[:, None]
    # positioning: rotation, zoom and shift, as an elementwise sampling grid (batch-invariant)
    ang = math.radians(p.rotation) + math.radians(p.rotation_sd) * d.n()
    zoom = p.zoom * torch.exp(0.025 * d.n())
    ca, sa = torch.cos(ang) / zoom, torch.sin(ang) / zoom
    g = torch.empty(b, size, size, 2)
    g[..., 0] = ca * u - sa * v + p.shift_sd * d.n()
    g[..., 1] = sa * u + ca * v + p.shift_sd * d.n()
    x = F.grid_sample(x, g, mode="bilinear", padding_mode=_PAD.get(modality, "zeros"), align_corners=False)
    lo = round(_NATIVE_PX * p.resolution)  # the detector's effective resolution, in pixels across
    if lo < size:
        x = F.interpolate(F.interpolate(x, size=(lo, lo), mode="area"), size=(size, size), mode="bilinear")
    x = _blur(x, p.blur * size)[:, 0]  # (B, H, W) from here on
    # x is a fresh tensor from here on, so the chains below work in place (fewer passes over memory);
    # each in-place op is the same operation, in the same order, as its out-of-place form
    x.mul_(1 + p.exposure_sd * d.n())
    x.sub_(0.5).mul_(p.contrast).add_(0.5).add_(p.offset).clamp_(0, 1).pow_(p.gamma)
    ba = p.bias_angle + 0.3 * d.n()
    amp = p.bias * (1 + 0.2 * d.n())
    field = (torch.cos(ba) * u + torch.sin(ba) * v).add_(0.25 * (u**2 + v**2)).sub_(0.17).mul_(amp).add_(1)
    x.mul_(field)
    if p.ghost > 0:
        x.add_(torch.roll(x, size // 4, dims=-2).mul_(p.ghost * (1 + 0.3 * d.n())))
    edges = [p.border * torch.exp(0.3 * d.n()) for _ in range(4)]
    aperture_jitter = 0.01 * d.n()
    px = 2.0 / size
    if modality == "chest_xray" and p.border > 0:  # collimator blades
        inside = (
            ((u + 1 - edges[0]) / px).clamp(0, 1)
            * ((1 - edges[1] - u) / px).clamp(0, 1)
            * ((v + 1 - edges[2]) / px).clamp(0, 1)
            * ((1 - edges[3] - v) / px).clamp(0, 1)
        )
        x.mul_(inside).add_((1 - inside).mul_(p.border_level))
    elif modality in ("fundus", "dermoscopy"):  # camera aperture / dermatoscope vignette
        rad = (0.98 - p.border) if modality == "fundus" else (1.45 - 4 * p.border)
        soft_w = px if modality == "fundus" else 0.06
        inside = (rad + aperture_jitter - torch.sqrt(u**2 + v**2)).div_(soft_w).sigmoid_()
        x.mul_(inside).add_((1 - inside).mul_(p.border_level))
    n1 = _noise(d, size, p.grain)
    if modality == "brain_mri":  # Rician magnitude noise
        n2 = _noise(d, size, p.grain)
        x.add_(n1.mul_(p.noise)).pow_(2).add_(n2.mul_(p.noise).pow_(2)).sqrt_()
    else:
        x.add_(x.clamp(min=0).mul_(p.shot**2).add_(p.noise**2).sqrt_().mul_(n1))
    if p.marker >= 0 and modality in _MARKER:
        x = _markers(x, p, modality, site, d)
    return x.clamp_(0, 1)[:, None]
