"""Widgets for JupyterLab: pick a few-shot task, then watch a learner adapt to it step by step.

Example:
    >>> from medmeta_lib import load_collection
    >>> from medmeta_lib.ui import TaskPicker
    >>> TaskPicker(load_collection("synthetic", n_per_class_site=4), n_way=3)  # doctest: +SKIP
"""

from __future__ import annotations

from medmeta_lib.ui.adaptation_explorer import AdaptationExplorer
from medmeta_lib.ui.task_picker import TaskPicker

__all__ = ["AdaptationExplorer", "TaskPicker"]
