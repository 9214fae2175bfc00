"""Training: the meta-training loop, learner checkpoints, exact resume, and distributed runs.

* :mod:`~medmeta_lib.training.meta_training` — the outer loop over ``L(θ) = (1/T) Σ_i L_i(θ)`` with
  validation on episodes and the best state kept;
* :mod:`~medmeta_lib.training.learner_io` — build a learner from its spec, save it, load it back;
* :mod:`~medmeta_lib.training.checkpoint` and :mod:`~medmeta_lib.training.train_state` — safetensors
  checkpoints (never pickle) with optimiser, scheduler and RNG state for exact resume;
* :mod:`~medmeta_lib.training.distributed`, :mod:`~medmeta_lib.training.collectives` and
  :mod:`~medmeta_lib.training.launch` — the same run under ``torchrun`` on several processes or nodes.

Example:
    >>> from medmeta_lib.training import MetaTrainConfig
    >>> MetaTrainConfig(steps=10).steps
    10
"""

from __future__ import annotations

from medmeta_lib.training.checkpoint import (
    Checkpoint,
    load_backbone,
    load_checkpoint,
    save_backbone,
    save_checkpoint,
)
from medmeta_lib.training.distributed import distributed_session, get_rank, get_world_size, is_main_process
from medmeta_lib.training.launch import torchrun_command
from medmeta_lib.training.learner_io import build_learner, load_learner, save_learner
from medmeta_lib.training.meta_training import MetaTrainConfig, MetaTrainResult, meta_train

__all__ = [
    "Checkpoint",
    "MetaTrainConfig",
    "MetaTrainResult",
    "build_learner",
    "distributed_session",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "load_backbone",
    "load_checkpoint",
    "load_learner",
    "meta_train",
    "save_backbone",
    "save_checkpoint",
    "save_learner",
    "torchrun_command",
]
