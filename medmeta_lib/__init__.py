"""MedMeta Workbench: meta-learning for few-shot medical image analysis.

The core (``data``, ``models``, ``learners``, ``ssl``, ``training``, ``evaluation``,
``checkpoint``) never imports the notebook-facing layers (``viz``, ``ui``, ``pipeline``).

Example:
    >>> import medmeta_lib as mm
    >>> col = mm.load_collection("synthetic", image_size=28, n_per_class_site=4)
    >>> ep = mm.EpisodeSampler(col, n_way=5, k_shot=1, q_query=2, seed=0).sample()
"""

from __future__ import annotations

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

__version__ = "0.1.0"

__all__ = [
    "ClassSplit",
    "Episode",
    "EpisodeSampler",
    "EpisodeSet",
    "ImageCollection",
    "__version__",
    "load_collection",
    "split_classes",
    "split_sites",
]
