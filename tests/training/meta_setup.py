"""Shared set-up of the meta-training tests: tiny learners, task samplers and state comparisons."""

from __future__ import annotations

from typing import Any

import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.training.learner_io import build_learner

__all__ = [
    "FAST",
    "HIDDEN",
    "K_SHOT",
    "N_WAY",
    "Q_QUERY",
    "no_time",
    "prefixed",
    "same_state",
    "state_of",
    "task_sampler",
    "tiny_learner",
    "val_episodes",
]

HIDDEN = 8
N_WAY, K_SHOT, Q_QUERY = 5, 1, 2
# tiny adaptation settings so that every learner is quick; they also exercise learner_kwargs round trips
FAST = {
    "maml": {"inner_steps": 1, "eval_steps": 1},
    "fomaml": {"inner_steps": 1, "eval_steps": 1},
    "metasgd": {"inner_steps": 1, "eval_steps": 1},
    "anil": {"inner_steps": 1, "eval_steps": 2},
    "protonet": {},
    "baseline": {"eval_steps": 3},
    "baseline++": {"eval_steps": 3},
    "scratch": {"eval_steps": 2},
    "weightgen": {"refine_steps": 1},
}


def task_sampler(col: ImageCollection, n_way: int = N_WAY, seed: int = 0) -> EpisodeSampler:
    return EpisodeSampler(col, n_way, K_SHOT, Q_QUERY, same_modality=True, seed=seed)


def val_episodes(cols: dict[str, ImageCollection], n: int = 3):
    return task_sampler(cols["val"], seed=5).fixed(n, seed=7)


def tiny_learner(name: str, col: ImageCollection, *, seed: int = 0, n_way: int = N_WAY, **extra: Any):
    kw = dict(FAST[name])
    if name in ("baseline", "baseline++"):
        kw["num_train_classes"] = col.num_classes
    return build_learner(name, backbone_kwargs={"hidden": HIDDEN}, n_way=n_way, learner_kwargs=kw, seed=seed, **extra)


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def no_time(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History without the wall-clock field (the only entry that may differ between identical runs)."""
    return [{k: v for k, v in rec.items() if k != "time"} for rec in history]


def prefixed(ck, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in ck.tensors.items() if k.startswith(prefix)}
