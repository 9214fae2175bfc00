"""What the experiment tests share: the task size, MedSynth's modalities, and episode helpers."""

from __future__ import annotations

from typing import Any

from medmeta_lib.data.collection import ImageCollection

__all__ = ["MODS", "TASK", "episode_sites", "episodes", "modalities_of"]

#: the modalities of the ``cols`` fixture (``tests/studies/conftest.py``)
MODS = ("chest_xray", "dermoscopy", "fundus")
#: the task size most tests use
TASK = {"n_way": 5, "k_shot": 1, "q_query": 2}


def episodes(sampler: Any, n: int = 8) -> list[Any]:
    """``n`` episodes drawn from ``sampler``."""
    return [sampler.sample() for _ in range(n)]


def episode_sites(ep: Any) -> set[int]:
    """The sites of an episode's support and query images."""
    return set(ep.support_sites.tolist()) | set(ep.query_sites.tolist())


def modalities_of(col: ImageCollection, classes: Any) -> set[str]:
    """The modalities of ``classes`` in ``col``."""
    return {col.class_modalities[c] for c in classes}
