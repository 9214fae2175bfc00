"""Data layer: collections, sources (MedSynth, MedMNIST, folders, CSV), episodes, augmentation."""

from __future__ import annotations

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import Episode, EpisodeSampler, EpisodeSet
from medmeta_lib.data.sources import SOURCE_HELP, check_source, load_collection, source_kind
from medmeta_lib.data.splits import ClassSplit, split_classes, split_modalities, split_sites

__all__ = [
    "SOURCE_HELP",
    "ClassSplit",
    "Episode",
    "EpisodeSampler",
    "EpisodeSet",
    "ImageCollection",
    "check_source",
    "load_collection",
    "source_kind",
    "split_classes",
    "split_modalities",
    "split_sites",
]
