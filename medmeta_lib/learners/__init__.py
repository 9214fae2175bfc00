"""Meta-learners: MAML, FOMAML, Meta-SGD, ANIL, ProtoNet, WeightGen and the Baseline/Baseline++/Scratch baselines.

Example:
    >>> from medmeta_lib.learners import list_learners
    >>> list_learners()
    ['anil', 'baseline', 'baseline++', 'fomaml', 'maml', 'metasgd', 'protonet', 'scratch', 'weightgen']
"""

from __future__ import annotations

from medmeta_lib.learners.anil import ANIL
from medmeta_lib.learners.base import Learner, Predictor
from medmeta_lib.learners.finetune import Baseline, BaselinePlusPlus, Scratch
from medmeta_lib.learners.maml import FOMAML, MAML, MetaSGD
from medmeta_lib.learners.protonet import ProtoNet
from medmeta_lib.learners.registry import (
    create_learner,
    learner_class,
    learner_kwargs,
    list_learners,
    register_learner,
)
from medmeta_lib.learners.trace import AdaptationTrace
from medmeta_lib.learners.weightgen import WeightGen, WeightGenerator

__all__ = [
    "ANIL",
    "FOMAML",
    "MAML",
    "AdaptationTrace",
    "Baseline",
    "BaselinePlusPlus",
    "Learner",
    "MetaSGD",
    "Predictor",
    "ProtoNet",
    "Scratch",
    "WeightGen",
    "WeightGenerator",
    "create_learner",
    "learner_class",
    "learner_kwargs",
    "list_learners",
    "register_learner",
]
