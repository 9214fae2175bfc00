"""Meta-training: episodes → learner → outer optimiser, with validation, checkpoints and exact resume.

The outer loop minimises ``L(θ) = (1/T) Σ_i L_i(θ)`` over meta-batches of ``T`` episodes drawn
from an :class:`~medmeta_lib.data.episodes.EpisodeSampler`; every ``val_every`` steps the learner
is scored on a fixed validation episode set and the best state is kept. Checkpoints are
safetensors files (learner weights, optimiser state, the episode stream's RNG state, history) so
that an interrupted run resumes to exactly the result of an uninterrupted one.

Under ``torchrun`` (a process group of ``W`` ranks, see ``medmeta_lib.training.distributed``) every rank draws
the whole meta-batch from the same seeded stream and keeps ``T / W`` episodes, the meta-gradients are
averaged over ranks before the optimiser step, validation episodes are split over ranks, and rank 0
alone writes checkpoints and the progress bar: the same parameters as one process, and checkpoints
that resume at any world size.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medmeta_lib.data.episodes import Episode, EpisodeSampler
from medmeta_lib.evaluation.episodic import evaluate_learner
from medmeta_lib.training.collectives import all_reduce_gradients, all_reduce_mean, broadcast_module, evaluate_sharded
from medmeta_lib.training.distributed import (
    check_same_on_all_ranks,
    check_world_divides,
    get_world_size,
    is_main_process,
    shard_meta_batch,
    write_on_main,
)
from medmeta_lib.training.learner_io import save_learner

__all__ = ["MetaTrainConfig", "MetaTrainResult", "meta_train"]


@dataclass
class MetaTrainConfig:
    """Outer-loop settings.

    Attributes:
        steps: outer (meta) steps.
        meta_batch: episodes per outer step (``T`` in ``L(θ) = (1/T) Σ_i L_i(θ)``), over all ranks
            (a multiple of the world size under torchrun).
        lr: Adam learning rate of the outer optimiser.
        weight_decay: Adam weight decay.
        val_every: validate (and keep the best state) every this many steps; 0 = never.
        checkpoint_every: write ``last.safetensors`` every this many steps (and at the end).
        grad_clip: clip the meta-gradient norm (``None``: no clipping).
        seed: seed of the episode stream and of torch.
    """

    steps: int = 1000
    meta_batch: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    val_every: int = 100
    checkpoint_every: int = 100
    grad_clip: float | None = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "meta_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"MetaTrainConfig.{name} must be an integer >= 1, got {v!r}")
        for name in ("val_every", "checkpoint_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"MetaTrainConfig.{name} must be an integer >= 0, got {v!r}")
        if not self.lr > 0:
            raise ValueError(f"MetaTrainConfig.lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            raise ValueError(f"MetaTrainConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"MetaTrainConfig.grad_clip must be > 0 or None, got {self.grad_clip!r}")


@dataclass
class MetaTrainResult:
    """What :func:`meta_train` returns."""

    learner: Any
    history: list[dict[str, Any]] = field(default_factory=list)
    best_step: int | None = None
    best_val_acc: float | None = None
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    seconds: float = 0.0


def _clone_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def meta_train(
    learner: Any,
    sampler: EpisodeSampler,
    *,
    config: MetaTrainConfig | None = None,
    val_episodes: Sequence[Episode] | None = None,
    out: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> MetaTrainResult:
    """Meta-train ``learner`` on episodes from ``sampler``.

    Args:
        learner: from :func:`build_learner` (or ``create_learner``).
        sampler: the meta-training episode stream (its classes/sites define the split).
        config: outer-loop settings.
        val_episodes: fixed validation episodes; the best-scoring state is kept.
        out: directory for ``last.safetensors`` and ``best.safetensors`` (``None``: no files).
        resume: continue from ``out/last.safetensors`` when it exists (exactly: weights,
            optimiser, episode-stream state and history are restored).
        progress: tqdm progress bar.
        metadata: extra JSON metadata stored in checkpoints (data source, fingerprint...).

    Returns:
        :class:`MetaTrainResult`; the learner holds the *best* state when validation ran.

    Example:
        >>> res = meta_train(learner, sampler, config=MetaTrainConfig(steps=100))  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    cfg = config or MetaTrainConfig()
    t_start = time.time()
    result = MetaTrainResult(learner)
    if not learner.meta_trainable:
        result.history.append({"step": 0, "note": f"{learner.name} is not meta-trainable"})
        if out is not None:  # save it anyway, so later notebooks adapt exactly the learner evaluated here
            last = Path(out) / "last.safetensors"
            if last.exists():
                from medmeta_lib.training.checkpoint import load_checkpoint

                _check_same_run(last, load_checkpoint(last).metadata, learner, "will not overwrite")
            meta = {"config": asdict(cfg), **dict(metadata or {}), "step": 0, "history": result.history}
            result.last_checkpoint = write_on_main(save_learner, last, learner, None, meta)
        result.seconds = time.time() - t_start
        return result
    if sampler.n_way != learner.n_way:
        raise ValueError(
            f"the sampler draws {sampler.n_way}-way episodes but the learner has n_way={learner.n_way}; "
            f"build the learner with n_way={sampler.n_way} or sample {learner.n_way}-way episodes "
            f"(EpisodeSampler(..., n_way={learner.n_way}))"
        )
    world = get_world_size()
    check_world_divides(cfg.meta_batch, world, setting="MetaTrainConfig.meta_batch (--meta-batch)", what="episodes")
    torch.manual_seed(cfg.seed)
    sampler._rng = np.random.default_rng(cfg.seed)
    opt = torch.optim.Adam(learner.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    out_dir = Path(out) if out is not None else None
    meta_base = {"config": asdict(cfg), **dict(metadata or {})}
    start = 0
    best_state: dict[str, torch.Tensor] | None = None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        last = out_dir / "last.safetensors"
        if resume and last.exists():
            start = _restore(last, learner, opt, sampler, cfg, result)
    if world > 1:  # every rank must continue from the same file and hold rank 0's weights
        check_same_on_all_ranks(start, "the resume step", f"--out {out_dir} must be on a filesystem all nodes share")
        broadcast_module(learner)
    val_episodes = list(val_episodes) if val_episodes is not None else None
    bar = tqdm(
        range(start, cfg.steps),
        desc=f"meta-train {learner.name}",
        disable=not progress or not is_main_process(),
        initial=start,
        total=cfg.steps,
    )
    learner.train()
    for step in bar:
        if world > 1:
            batch = shard_meta_batch(sampler, cfg.meta_batch)
        else:
            batch = [sampler.sample() for _ in range(cfg.meta_batch)]
        if cfg.grad_clip is not None or world > 1:
            stats = all_reduce_mean(_step_clipped(learner, batch, opt, cfg.grad_clip, sync=world > 1))
        else:
            stats = learner.meta_step(batch, opt)
        rec: dict[str, Any] = {
            "step": step + 1,
            "loss": stats["loss"],
            "acc": stats["acc"],
            "time": round(time.time() - t_start, 3),
        }
        done = step + 1
        if val_episodes and cfg.val_every and (done % cfg.val_every == 0 or done == cfg.steps):
            if world > 1:
                val_acc, val_ci = evaluate_sharded(learner, val_episodes)
            else:
                ev = evaluate_learner(learner, val_episodes)
                val_acc, val_ci = ev.acc_mean, ev.acc_ci95
            rec["val_acc"], rec["val_ci95"] = val_acc, val_ci
            if result.best_val_acc is None or val_acc > result.best_val_acc:
                result.best_val_acc, result.best_step = val_acc, done
                best_state = _clone_state(learner)
                if out_dir is not None:
                    meta = {**meta_base, "step": done, "val_acc": val_acc}
                    result.best_checkpoint = write_on_main(
                        save_learner, out_dir / "best.safetensors", learner, None, meta
                    )
            learner.train()
        result.history.append(rec)
        bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['acc']:.2f}")
        if out_dir is not None and (done == cfg.steps or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0)):
            result.last_checkpoint = write_on_main(
                save_learner,
                out_dir / "last.safetensors",
                learner,
                opt,
                {
                    **meta_base,
                    "step": done,
                    "history": result.history,
                    "best_step": result.best_step,
                    "best_val_acc": result.best_val_acc,
                    "sampler_rng": sampler._rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state().tolist(),
                },
            )
    if best_state is None and result.best_step is not None and out_dir is not None:
        best_state = _best_from_disk(out_dir / "best.safetensors")
    if best_state is not None:
        learner.load_state_dict(best_state)
    result.seconds = time.time() - t_start
    return result


def _step_clipped(
    learner: Any, batch: list[Episode], opt: torch.optim.Optimizer, clip: float | None, *, sync: bool = False
) -> dict[str, float]:
    """``meta_step`` with the cross-rank gradient mean, then norm clipping, before the optimiser step.

    ``sync`` averages the gradients over ranks first, so that clipping sees the global meta-gradient.
    """
    real_step = opt.step

    def clipped_step(*a: Any, **k: Any) -> Any:
        if sync:
            all_reduce_gradients(learner.parameters())
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(learner.parameters(), clip)
        return real_step(*a, **k)

    opt.step = clipped_step  # type: ignore[method-assign]
    try:
        return learner.meta_step(batch, opt)
    finally:
        opt.step = real_step  # type: ignore[method-assign]


def _best_from_disk(path: Path) -> dict[str, torch.Tensor] | None:
    from medmeta_lib.training.checkpoint import load_checkpoint

    if not path.exists():
        return None
    ck = load_checkpoint(path)
    return {k[len("learner.") :]: v for k, v in ck.tensors.items() if k.startswith("learner.")}


def _check_same_run(path: Path, meta: dict[str, Any], learner: Any, what: str) -> None:
    """Refuse to continue from, or write over, a checkpoint of another learner, backbone or n-way."""
    spec = getattr(learner, "spec", None)
    if spec is not None and meta.get("spec") is not None:
        for key in ("learner", "backbone", "n_way"):
            if meta["spec"].get(key) != spec.get(key):
                raise ValueError(
                    f"{path}: {what}: checkpoint {key} is {meta['spec'].get(key)!r}, this run's is "
                    f"{spec.get(key)!r}; use another --out directory or delete the checkpoint"
                )


def _restore(
    path: Path,
    learner: Any,
    opt: torch.optim.Optimizer,
    sampler: EpisodeSampler,
    cfg: MetaTrainConfig,
    result: MetaTrainResult,
) -> int:
    from medmeta_lib.training.checkpoint import load_checkpoint
    from medmeta_lib.training.train_state import load_optimizer_state

    ck = load_checkpoint(path)
    meta = ck.metadata
    _check_same_run(path, meta, learner, "cannot resume")
    state = {k[len("learner.") :]: v for k, v in ck.tensors.items() if k.startswith("learner.")}
    learner.load_state_dict(state, strict=True)
    load_optimizer_state(opt, ck.tensors, meta["optimizer"])
    sampler._rng.bit_generator.state = meta["sampler_rng"]
    torch.set_rng_state(torch.tensor(meta["torch_rng"], dtype=torch.uint8))
    result.history = list(meta.get("history", []))
    result.best_step, result.best_val_acc = meta.get("best_step"), meta.get("best_val_acc")
    result.last_checkpoint = path
    best = path.parent / "best.safetensors"
    result.best_checkpoint = best if best.exists() else None
    return int(meta["step"])
