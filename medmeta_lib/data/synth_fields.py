"""MedSynth building blocks: counter-based randomness, texture fields and soft shapes.

Every random number MedSynth uses is a pure function of (image key, stream, draw number), computed
with an integer hash in torch. A patient (or an acquisition) can therefore be re-rendered exactly, in
any batch, at any size: shapes live in continuous coordinates ``u, v`` in ``(-1, 1)`` and textures come
from a fixed bank of Gaussian random fields resampled to the output size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Draw", "ell", "gauss", "grid", "hash_keys", "line", "nexp", "pose", "soft", "texture", "uniforms"]

_M32 = 0xFFFFFFFF


def _mix32(x: Tensor) -> Tensor:
    # A lowbias32-style integer finaliser. Constants are < 2**31 and x < 2**32, so the int64 products
    # never overflow: results are exact and identical on every platform (torch has no uint32 hashing).
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x2C1B3C6D) & _M32
    return x ^ (x >> 16)


def hash_keys(keys: Tensor | int, *parts: Tensor | int) -> Tensor:
    """Hash int64 keys with further integer parts into new 32-bit keys (broadcasting).

    Example:
        >>> hash_keys(torch.tensor([1, 2]), 7).shape
        torch.Size([2])
    """
    h = torch.as_tensor(keys, dtype=torch.long) & _M32
    for p in parts:
        q = _mix32((torch.as_tensor(p, dtype=torch.long) + 0x61C88647) & _M32)
        h = _mix32(h ^ q)
    return h


def uniforms(keys: Tensor, stream: int, n: int) -> Tensor:
    """``(B, n)`` float32 uniforms in ``(0, 1)``, a pure function of (key, stream, column).

    Example:
        >>> u = uniforms(torch.tensor([5]), stream=1, n=3)
        >>> bool(((u > 0) & (u < 1)).all())
        True
    """
    h = hash_keys(keys.view(-1, 1), stream, torch.arange(n))
    return ((h >> 8).float() + 0.5) / float(1 << 24)


class Draw:
    """Hands out per-image random numbers ``(B, 1, 1)`` in a fixed order (the patient's latents).

    A *variant* pins named draws: ``{"side": -1.0}`` makes every ``sign("side")`` return -1,
    ``{"extent": (0.5, 1.0)}`` maps every ``u(lo, hi, "extent")`` into the upper half of ``[lo, hi)``,
    ``{"both": 0.0}`` fixes ``coin(p, "both")``. A pinned draw still consumes its latent, so the other
    draws of a patient are the same with or without a variant, and unnamed draws are never affected.

    Example:
        >>> d = Draw(torch.tensor([1, 2, 3]), stream=0)
        >>> d.u(0.2, 0.4).shape
        torch.Size([3, 1, 1])
        >>> Draw(torch.tensor([1, 2]), stream=0, variant={"side": 1.0}).sign("side").flatten().tolist()
        [1.0, 1.0]
    """

    def __init__(self, keys: Tensor, stream: int, n: int = 96, variant: Mapping[str, Any] | None = None) -> None:
        self._u = uniforms(keys, stream, n)
        self._i = 0
        self._variant = dict(variant or {})

    def _next(self) -> Tensor:
        if self._i >= self._u.shape[1]:
            raise RuntimeError("MedSynth Draw ran out of latents; raise n")
        col = self._u[:, self._i].view(-1, 1, 1)
        self._i += 1
        return col

    def u(self, lo: float = 0.0, hi: float = 1.0, name: str | None = None) -> Tensor:
        """Uniform in ``[lo, hi)`` (a variant ``name: (a, b)`` narrows it to ``[lo + a(hi-lo), lo + b(hi-lo))``)."""
        x = self._next()
        if name is not None and name in self._variant:
            a, b = self._variant[name]
            x = a + (b - a) * x
        return lo + (hi - lo) * x

    def n(self, sd: float = 1.0) -> Tensor:
        """Gaussian with mean 0 (inverse-CDF of a uniform)."""
        return sd * math.sqrt(2.0) * torch.erfinv(2.0 * self._next() - 1.0)

    def coin(self, p: float, name: str | None = None) -> Tensor:
        """1.0 with probability ``p``, else 0.0 (a variant ``name: 0.0 or 1.0`` fixes it)."""
        x = (self._next() < p).float()
        if name is not None and name in self._variant:
            return torch.full_like(x, float(self._variant[name]))
        return x

    def sign(self, name: str | None = None) -> Tensor:
        """-1 or +1 with equal probability (a variant ``name: -1.0 or 1.0`` fixes it)."""
        x = 2.0 * (self._next() < 0.5).float() - 1.0
        if name is not None and name in self._variant:
            return torch.full_like(x, float(self._variant[name]))
        return x

    def index(self, k: int) -> Tensor:
        """Integer in ``0 .. k-1``, shape ``(B,)``."""
        return (self._next().view(-1) * k).long().clamp_(max=k - 1)


# ----------------------------------------------------------------------------------- texture fields
_BANK_RES, _BANK_TILES = 128, 48
_SCALES = {"coarse": 0.14, "mid": 0.06, "fine": 0.025, "micro": 0.011}  # Gaussian sigma, fraction of width


@functools.lru_cache(maxsize=8)
def _bank(size: int) -> dict[str, Tensor]:
    # Low-pass Gaussian random fields on a 128-px torus, normalised to unit variance, then resampled to
    # the output size (so a texture is the same pattern at 28 and 64 px). numpy's generator and FFT are
    # used (not torch) because they are single-threaded and bit-reproducible across thread counts.
    rng = np.random.default_rng(20240611)
    white = np.fft.fft2(rng.standard_normal((_BANK_TILES, _BANK_RES, _BANK_RES)))
    f = np.fft.fftfreq(_BANK_RES)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    out = {}
    for name, s in _SCALES.items():
        t = np.fft.ifft2(white * np.exp(-2 * np.pi**2 * (s * _BANK_RES) ** 2 * f2)).real
        t = (t - t.mean(axis=(1, 2), keepdims=True)) / t.std(axis=(1, 2), keepdims=True)
        x = torch.from_numpy(t.astype(np.float32))[:, None]
        if size != _BANK_RES:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=size < _BANK_RES, align_corners=False)
        out[name] = x[:, 0].contiguous()
    return out


def texture(d: Draw, scale: str, size: int) -> Tensor:
    """A per-image zero-mean random field ``(B, H, W)`` at ``scale`` (coarse, mid, fine, micro).

    Two tiles of a fixed bank mixed at a random angle (so the field keeps unit variance).

    Example:
        >>> texture(Draw(torch.arange(3), stream=0), "mid", 16).shape
        torch.Size([3, 16, 16])
    """
    tiles = _bank(size)[scale]
    a = d.index(_BANK_TILES)
    b = (a + 1 + d.index(_BANK_TILES - 1)) % _BANK_TILES
    phi = d.u(0.0, 2 * math.pi)
    # index_select, not tiles[a]: the same copy, ~3x faster than advanced indexing on CPU
    return tiles.index_select(0, a).mul_(torch.cos(phi)).addcmul_(tiles.index_select(0, b), torch.sin(phi))


# ----------------------------------------------------------------------------------- shape helpers
def soft(x: Tensor, w: float | Tensor) -> Tensor:
    """~1 where x > 0, ~0 where x < 0, with a transition of width w (a sigmoid edge).

    Example:
        >>> soft(torch.tensor([-1.0, 0.0, 1.0]), 0.1).round(decimals=3).tolist()
        [0.0, 0.5, 1.0]
    """
    return (x / w).sigmoid_()


def ell(u: Tensor, v: Tensor, cx: Tensor | float, cy: Tensor | float, rx: Tensor | float, ry: Tensor | float) -> Tensor:
    """Normalised elliptic radius: 1 on the ellipse boundary.

    Example:
        >>> r = ell(torch.tensor([0.0, 0.5, 1.0]), torch.tensor(0.0), cx=0.0, cy=0.0, rx=0.5, ry=0.25)
        >>> r.round(decimals=3).tolist()
        [0.0, 1.0, 2.0]
    """
    return (((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2).add_(1e-12).sqrt_()


def nexp(q: Tensor) -> Tensor:
    """``exp(-q)`` for ``q >= 0``, with q capped at 60: exp underflowing into denormals is ~10x slower on CPU.

    Example:
        >>> [round(x, 4) for x in nexp(torch.tensor([0.0, 1.0, 2.0])).tolist()]
        [1.0, 0.3679, 0.1353]
        >>> bool(nexp(torch.tensor(100.0)) == nexp(torch.tensor(60.0)))  # q capped at 60
        True
    """
    return q.clamp(max=60.0).neg_().exp_()


def _nexp_(q: Tensor) -> Tensor:
    # nexp on a temporary, in place: the same operations without another full-size buffer
    return q.clamp_(max=60.0).neg_().exp_()


def gauss(u: Tensor, v: Tensor, cx: Tensor | float, cy: Tensor | float, r: Tensor | float) -> Tensor:
    """Isotropic Gaussian bump of radius ``r``.

    Example:
        >>> g = gauss(torch.tensor([0.0, 0.5, 1.0]), torch.tensor(0.0), cx=0.0, cy=0.0, r=0.5)
        >>> [round(x, 4) for x in g.tolist()]  # exp(-d²/r²): 1 at the centre, exp(-1) at distance r
        [1.0, 0.3679, 0.0183]
    """
    return _nexp_(((u - cx) ** 2 + (v - cy) ** 2).div_(r**2))


def line(dist: Tensor, w: Tensor | float) -> Tensor:
    """A thin ridge where ``dist`` is 0, of half-width ``w``.

    Example:
        >>> [round(x, 4) for x in line(torch.tensor([0.0, 0.1, -0.2]), 0.1).tolist()]
        [1.0, 0.3679, 0.0183]
    """
    return _nexp_((dist / w).square_())


def grid(size: int) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates in ``(-1, 1)``: ``u`` (x) shaped ``(1, 1, W)``, ``v`` (y) shaped ``(1, H, 1)``.

    Kept separable so that terms in one coordinate cost a row, not an image; they broadcast to
    ``(B, H, W)`` only where x and y meet.

    Example:
        >>> u, v = grid(4)
        >>> u.flatten().tolist(), tuple(v.shape)
        ([-0.75, -0.25, 0.25, 0.75], (1, 4, 1))
    """
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    return c.view(1, 1, -1), c.view(1, -1, 1)


def pose(d: Draw, size: int, shift: float, scale: float) -> tuple[Tensor, Tensor]:
    """Per-patient coordinates: the anatomy shifted by ~``shift`` and scaled by ~``exp(scale)``.

    Example:
        >>> u, v = pose(Draw(torch.arange(2), stream=0), 8, shift=0.05, scale=0.05)
        >>> tuple(u.shape), tuple(v.shape)
        ((2, 1, 8), (2, 8, 1))
    """
    u, v = grid(size)
    k = torch.exp(scale * d.n())
    return (u - shift * d.n()) / k, (v - shift * d.n()) / k
