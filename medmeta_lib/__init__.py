"""MedMeta Workbench: meta-learning for few-shot medical image analysis.

The core (``data``, ``models``, ``learners``, ``evaluation``, ``training``, ``ssl``, ``studies``) never
imports the notebook-facing layers (``viz``, ``ui``, ``pipeline``, ``cli``).

Example:
    >>> import medmeta_lib as mm
    >>> col = mm.load_collection("synthetic", image_size=28, n_per_class_site=4)
    >>> ep = mm.EpisodeSampler(col, n_way=5, k_shot=1, q_query=2, seed=0).sample()
    >>> learner = mm.create_learner("protonet", mm.create_backbone("conv4", hidden=8), n_way=5)

The packages, in the order data flows through them: ``data`` → ``models`` → ``learners`` →
``evaluation`` → ``training`` → ``ssl`` → ``studies`` → ``viz`` → ``ui`` → ``pipeline`` → ``cli``
(docs/architecture.md; ``make test`` checks the order with import-linter).
"""

from __future__ import annotations

from medmeta_lib.config import VERSION
from medmeta_lib.data import (
    ClassSplit,
    Episode,
    EpisodeSampler,
    EpisodeSet,
    ImageCollection,
    load_collection,
    split_classes,
    split_sites,
)
from medmeta_lib.learners import create_learner, list_learners
from medmeta_lib.models import create_backbone, list_backbones

__version__ = VERSION

__all__ = [
    "ClassSplit",
    "Episode",
    "EpisodeSampler",
    "EpisodeSet",
    "ImageCollection",
    "__version__",
    "create_backbone",
    "create_learner",
    "list_backbones",
    "list_learners",
    "load_collection",
    "split_classes",
    "split_sites",
]
