"""Fine-tuning a pretrained encoder on each support set: linear probe, then fine-tune (LP-FT) with augmented views.

The third step of "pretrain → meta-train → fine-tune" (P>M>F, Hu et al. 2022): for every label draw, a copy
of the encoder and a linear head start from the probe's solution (LP-FT, Kumar et al. 2022, so that early
gradients do not wreck the features), and both are trained for a fixed number of steps on augmented views
of the support images. Hyper-parameters are fixed for every task (no per-task tuning); choose them on
validation data. Every test image is then predicted on its own (GroupNorm or population statistics; the
fine-tuned network is in eval mode).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from torch import nn

from medmeta_lib.data.augment import ViewAugment
from medmeta_lib.ssl.features import PooledLayers, extract_features

__all__ = ["finetune_predictor"]


def _cl2(f: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    c = f - mean
    return c / c.norm(dim=1, keepdim=True).clamp_min(1e-12)


def finetune_predictor(
    encoder: nn.Module,
    layers: Sequence[str],
    train_images: torch.Tensor,
    test_images: torch.Tensor,
    train_labels: torch.Tensor,
    *,
    steps: int = 30,
    lr: float = 1e-4,
    C: float = 10.0,
    preset: str = "generic",
    seed: int = 0,
) -> Callable[[np.ndarray], np.ndarray]:
    """A support-set predictor that fine-tunes a copy of ``encoder`` (and a linear head) on every support set.

    Features are the pooled ``layers`` of the encoder, centred on the *unlabelled* pool's mean feature
    (computed once, with the pretrained encoder) and L2-normalised; the head starts from a logistic
    regression (``C``) on the support features, then encoder and head take ``steps`` Adam steps (``lr``)
    on the cross-entropy of one augmented view of each support image per step.

    Args:
        encoder: the pretrained encoder (not modified; each draw trains a copy).
        layers: the encoder layers to pool (e.g. ``CONV4_BLOCKS_2_4``).
        train_images: ``(N, C, H, W)`` labelled pool (also the unlabelled pool for the centring mean).
        test_images: ``(M, C, H, W)`` images to classify.
        train_labels: ``(N,)`` labels of the pool.
        steps: fine-tuning steps per support set (0: the linear probe alone).
        lr: Adam learning rate of encoder and head.
        C: inverse L2 strength of the initial logistic regression.
        preset: ``ViewAugment`` preset of the support views.
        seed: seeds the views (the same for every draw).

    Example:
        >>> from medmeta_lib.models import create_backbone
        >>> enc = create_backbone("conv4", hidden=8, norm="group")
        >>> x, y = torch.rand(8, 1, 28, 28), torch.tensor([0, 1] * 4)
        >>> predict = finetune_predictor(enc, ["features.15"], x, x, y, steps=2)
        >>> predict(np.array([0, 2, 1, 3])).shape
        (8, 2)
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if not (isinstance(lr, (int, float)) and lr > 0) or not (isinstance(C, (int, float)) and C > 0):
        raise ValueError(f"lr and C must be numbers > 0, got lr={lr!r}, C={C!r}")
    if len(train_images) != len(train_labels):
        raise ValueError(f"{len(train_images)} train images for {len(train_labels)} labels; they must match")
    labels = train_labels.long()
    n_classes = int(labels.max()) + 1
    mean = extract_features(PooledLayers(encoder, layers), train_images, reference=train_images).mean(0)

    def predict(idx: np.ndarray) -> np.ndarray:
        net = PooledLayers(copy.deepcopy(encoder).cpu(), layers)
        sx, sy = train_images[torch.from_numpy(idx)], labels[torch.from_numpy(idx)]
        z = _cl2(extract_features(net, sx), mean).numpy()
        with threadpool_limits(1, user_api="blas"):
            clf = LogisticRegression(C=C, max_iter=2000).fit(z, sy.numpy())
        head = nn.Linear(z.shape[1], n_classes)
        with torch.no_grad():  # the probe's solution as the start (two classes: one logit against zero)
            w, b = torch.as_tensor(clf.coef_, dtype=torch.float32), torch.as_tensor(clf.intercept_, dtype=torch.float32)
            if n_classes == 2:
                w, b = torch.cat([torch.zeros_like(w), w]), torch.cat([torch.zeros_like(b), b])
            head.weight.copy_(w)
            head.bias.copy_(b)
        if steps:
            aug = ViewAugment(preset=preset, image_size=int(sx.shape[-1]), seed=seed)
            opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=lr)
            net.train()
            for _ in range(steps):
                loss = nn.functional.cross_entropy(head(_cl2(net(aug(sx)), mean)), sy)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            f = extract_features(net, test_images, reference=train_images)
            return head(_cl2(f, mean)).softmax(-1).numpy()

    return predict
