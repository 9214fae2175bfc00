"""Frozen features of an encoder, computed inductively: pooled layers, population statistics, extraction.

A feature of a test image must not depend on the other test images: an encoder that normalises with
batch statistics is frozen with the population statistics of the (unlabelled) train images
(:func:`with_population_stats`), and :func:`extract_features` refuses such an encoder without them
unless ``transductive=True`` asks for per-batch statistics explicitly. :class:`PooledLayers` pools
several blocks of an encoder into one feature vector.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medmeta_lib.models.task_norm import has_batch_stats

__all__ = ["CONV4_BLOCKS_2_4", "PooledLayers", "extract_features", "with_population_stats"]

#: Conv-4's blocks 2-4 (after each block's pooling), the layers a probe reads: on PneumoniaMNIST these
#: pooled features beat the last block alone (BENCHMARKS.md section 3; chosen on the validation split)
CONV4_BLOCKS_2_4 = ("features.7", "features.11", "features.15")


class PooledLayers(nn.Module):
    """Features from several layers of an encoder: each output globally average-pooled, then concatenated.

    Linear probes often read more than the last layer (lower layers keep finer texture and
    intensity cues); for Conv-4 at 28 px the last block sees a 1 × 1 map, so blocks 2–4 together
    give a 192-d feature. Outputs are captured with forward hooks, so any module works.

    Args:
        encoder: the network (its own output is ignored unless its name is listed as ``""``).
        layers: names of submodules (``dict(encoder.named_modules())`` keys), e.g.
            ``("features.7", "features.11", "features.15")`` for Conv-4 blocks 2–4.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3))
        >>> PooledLayers(net, ("1", "2"))(torch.zeros(2, 1, 8, 8)).shape
        torch.Size([2, 12])
    """

    def __init__(self, encoder: nn.Module, layers: Sequence[str]) -> None:
        super().__init__()
        modules = dict(encoder.named_modules())
        missing = [name for name in layers if name not in modules]
        if not layers or missing:
            raise ValueError(
                f"layers must name submodules of the encoder; unknown: {missing or 'none given'}; "
                f"available: {[n for n in modules if n][:20]}..."
            )
        self.encoder, self.layers = encoder, tuple(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, Σ channels)``: the pooled outputs of ``layers`` in order."""
        modules = dict(self.encoder.named_modules())
        captured: dict[str, torch.Tensor] = {}

        def hook(name: str) -> Any:
            def save(_module: nn.Module, _inp: Any, out: torch.Tensor) -> None:
                captured[name] = out

            return save

        # hooks live only for this call, so the wrapped encoder behaves normally elsewhere
        handles = [modules[n].register_forward_hook(hook(n)) for n in self.layers]
        try:
            self.encoder(x)
        finally:
            for h in handles:
                h.remove()
        return torch.cat(
            [captured[n].flatten(2).mean(2) if captured[n].ndim > 2 else captured[n] for n in self.layers], 1
        )


def with_population_stats(
    encoder: nn.Module, images: torch.Tensor, *, max_images: int = 2048, seed: int = 0
) -> nn.Module:
    """A frozen copy of ``encoder`` whose batch norms use population statistics of ``images``.

    The registry's ``norm="batch"`` keeps no running statistics (``torch.func`` adaptation needs
    that), so in eval mode a feature would depend on the other images of its batch. This copies the
    encoder, runs one forward pass over ``images`` (a seeded random subset of at most ``max_images``,
    in one batch, so the statistics do not depend on the images' order) and stores every such
    layer's batch mean and (biased) variance as its running statistics: the copy then normalises
    every image with them, as a conventionally trained BatchNorm does in eval mode, and a feature is
    a function of its own image alone. The copy is returned in eval mode; the original is untouched.
    Encoders without such layers are returned as an unchanged copy.

    Args:
        encoder: a backbone, possibly with ``BatchNorm*d(track_running_stats=False)`` layers.
        images: ``(N, C, H, W)`` reference images (e.g. the unlabelled training images; no labels needed).
        max_images: subset size for the statistics (memory: one forward pass of this many images).
        seed: seed of the subset.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False))
        >>> x = torch.rand(8, 1, 6, 6)
        >>> frozen = with_population_stats(net, x)
        >>> torch.allclose(frozen(x)[:1], frozen(x[:1]), atol=1e-6)  # a feature no longer depends on its batch
        True
    """
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 2:
        raise ValueError(f"max_images must be an int >= 2, got {max_images!r}")
    if images.ndim != 4 or len(images) < 1:
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor, got shape {tuple(images.shape)}")
    net = copy.deepcopy(encoder)
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and not m.track_running_stats]
    if not norms:
        return net.eval()
    if len(images) > max_images:
        g = torch.Generator().manual_seed(seed)
        images = images[torch.randperm(len(images), generator=g)[:max_images].sort().values]
    recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0]
        dims = [0, *range(2, x.ndim)]
        var, mean = torch.var_mean(x, dim=dims, unbiased=False)
        recorded[id(module)] = (mean, var)

    handles = [m.register_forward_pre_hook(record) for m in norms]
    param = next(iter(net.parameters()), None)
    dev = param.device if param is not None else images.device
    try:
        with torch.no_grad():
            net(images.to(dev))
    finally:
        for h in handles:
            h.remove()
    for m in norms:
        mean, var = recorded[id(m)]
        m.register_buffer("running_mean", mean.clone())
        m.register_buffer("running_var", var.clone())
        m.register_buffer("num_batches_tracked", torch.tensor(1, dtype=torch.long, device=dev))
        m.track_running_stats, m.momentum = True, None
    return net.eval()


def extract_features(
    encoder: nn.Module,
    images: torch.Tensor,
    *,
    batch_size: int = 512,
    reference: torch.Tensor | None = None,
    transductive: bool = False,
) -> torch.Tensor:
    """Run a frozen encoder over ``images`` in eval mode without gradients, one image independent of another.

    An encoder whose batch norms normalise with batch statistics would make a feature depend on the
    other images of its chunk; by default its batch norms use the population statistics of
    ``reference`` instead (:func:`with_population_stats`; pass the unlabelled training images).
    ``transductive=True`` keeps the per-chunk statistics (results then depend on ``batch_size`` and
    on the images' order; say so wherever such features are reported).

    The encoder's train/eval mode is restored afterwards, and images are moved to the encoder's
    device batch by batch; the features come back on the CPU, flattened to ``(N, D)``.

    Args:
        encoder: any module mapping ``(B, C, H, W)`` to ``(B, ...)``; ``nn.Flatten()`` gives raw pixels.
        images: ``(N, C, H, W)`` float images.
        batch_size: images per forward pass (memory bound only, unless ``transductive``).
        reference: images for the population statistics; required when ``encoder`` normalises with
            batch statistics and ``transductive`` is off.
        transductive: normalise each chunk of ``batch_size`` images with its own statistics.

    Raises:
        ValueError: bad shapes or sizes, or a batch-statistics encoder without ``reference``.

    Example:
        >>> extract_features(nn.Flatten(), torch.rand(3, 1, 4, 4)).shape
        torch.Size([3, 16])
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if not transductive and has_batch_stats(encoder):
        if reference is None:
            raise ValueError(
                "extract_features: the encoder normalises with batch statistics, so a feature would depend on "
                "its batch; pass reference=<unlabelled training images> (population statistics) or "
                "transductive=True"
            )
        encoder = with_population_stats(encoder, reference)
    param = next(iter(encoder.parameters()), None)
    device = param.device if param is not None else images.device
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.no_grad():
            out = [
                encoder(images[i : i + batch_size].to(device)).flatten(1).cpu()
                for i in range(0, len(images), batch_size)
            ]
    finally:
        encoder.train(was_training)
    return torch.cat(out, dim=0)
