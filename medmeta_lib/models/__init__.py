"""The networks: backbones, heads, inductive batch normalisation, a fast 2×2 max-pooling and training layout.

Backbones (feature extractors, one registry: ``create_backbone``), classification heads, inductive batch
normalisation (``task_norm``), 2×2 max-pooling with a fast prediction path (``pooling``) and a faster memory
layout for training (``training_layout``: channels-last tensors, in-place ReLUs where safe).
"""

from __future__ import annotations

from medmeta_lib.models.backbones import (
    count_parameters,
    create_backbone,
    list_backbones,
    register_backbone,
    resolve_backbone_kwargs,
)
from medmeta_lib.models.heads import CosineHead, LinearHead
from medmeta_lib.models.norm_layers import NORMS, make_norm, replace_norm
from medmeta_lib.models.pooling import MaxPool2x2, max_pool_2x2
from medmeta_lib.models.task_norm import (
    NormStats,
    TaskBatchNorm2d,
    context_forward,
    frozen_forward,
    has_batch_stats,
    record_norm_stats,
    use_norm_stats,
)
from medmeta_lib.models.training_layout import training_layout

__all__ = [
    "NORMS",
    "CosineHead",
    "LinearHead",
    "MaxPool2x2",
    "NormStats",
    "TaskBatchNorm2d",
    "context_forward",
    "count_parameters",
    "create_backbone",
    "frozen_forward",
    "has_batch_stats",
    "list_backbones",
    "make_norm",
    "max_pool_2x2",
    "record_norm_stats",
    "register_backbone",
    "replace_norm",
    "resolve_backbone_kwargs",
    "training_layout",
    "use_norm_stats",
]
