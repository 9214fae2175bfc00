"""Evaluation: how every number is measured — fixed episodes, the full test split, and their intervals.

* :mod:`~medmeta_lib.evaluation.episodic` — the same fixed test episodes for every learner (accuracy,
  AUROC, per site) and paired differences over them;
* :mod:`~medmeta_lib.evaluation.full_test_split` — K labelled images per class, the whole official test
  split scored over label draws (the protocol comparable to the literature), for learners and for any
  method given as a function of its support set;
* :mod:`~medmeta_lib.evaluation.intervals` — intervals over label draws *and* test images, balanced
  accuracy, the majority-class rate.

Predictions are inductive unless ``transductive=True`` is asked for (``docs/evaluation.md``).

Example:
    >>> from medmeta_lib.evaluation import mean_ci
    >>> mean_ci([0.5, 0.7])[0]
    0.6
"""

from __future__ import annotations

from medmeta_lib.evaluation.episodic import (
    EvalResult,
    evaluate_learner,
    evaluate_learners,
    inference_mode,
    paired_episode_difference,
)
from medmeta_lib.evaluation.full_test_split import (
    SupportPredictor,
    compare_full_test_split,
    evaluate_full_test_split,
    learner_predictor,
    score_full_test_split,
)
from medmeta_lib.evaluation.intervals import (
    majority_rate,
    mean_ci,
    paired_difference,
    split_metrics,
    two_level_bootstrap,
)

__all__ = [
    "EvalResult",
    "SupportPredictor",
    "compare_full_test_split",
    "evaluate_full_test_split",
    "evaluate_learner",
    "evaluate_learners",
    "inference_mode",
    "learner_predictor",
    "majority_rate",
    "mean_ci",
    "paired_difference",
    "paired_episode_difference",
    "score_full_test_split",
    "split_metrics",
    "two_level_bootstrap",
]
