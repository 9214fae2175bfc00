"""Backbones (feature extractors) and classification heads."""

from __future__ import annotations

from medmeta_lib.models.backbones import (
    NORMS,
    count_parameters,
    create_backbone,
    list_backbones,
    make_norm,
    register_backbone,
    replace_norm,
    resolve_backbone_kwargs,
)
from medmeta_lib.models.heads import CosineHead, LinearHead

__all__ = [
    "NORMS",
    "CosineHead",
    "LinearHead",
    "count_parameters",
    "create_backbone",
    "list_backbones",
    "make_norm",
    "register_backbone",
    "replace_norm",
    "resolve_backbone_kwargs",
]
