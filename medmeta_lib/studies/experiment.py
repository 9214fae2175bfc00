"""Experiments shared by the CLI and the notebooks: a split's samplers → learners → trained → results.

:func:`train_learners` meta-trains every named learner on a split's samplers (resuming from its
checkpoints), :func:`evaluate_split` scores them on the split's fixed test episodes, and
:func:`obtain_learners` loads a trained set or trains it. The splits themselves are made in
:mod:`medmeta_lib.studies.experiment_split`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.evaluation.episodic import EvalResult, evaluate_learners, paired_episode_difference
from medmeta_lib.studies.experiment_split import ExperimentSplit
from medmeta_lib.training.learner_io import build_learner
from medmeta_lib.training.meta_training import MetaTrainConfig, MetaTrainResult, meta_train

__all__ = [
    "best_vs_runner_up",
    "evaluate_split",
    "experiment_metrics",
    "learner_defaults",
    "obtain_learners",
    "train_learners",
]


def learner_defaults(name: str, collection: ImageCollection) -> dict[str, Any]:
    """Keyword arguments a learner needs from the data (``num_train_classes`` for the baselines).

    Example:
        >>> import torch
        >>> c = ImageCollection(torch.rand(8, 1, 28, 28), torch.arange(8) % 4, tuple("abcd"))
        >>> learner_defaults("baseline++", c), learner_defaults("protonet", c)
        ({'num_train_classes': 4}, {})
    """
    return {"num_train_classes": collection.num_classes} if name in ("baseline", "baseline++") else {}


def train_learners(
    names: Sequence[str],
    split: ExperimentSplit,
    *,
    backbone: str = "conv4",
    backbone_kwargs: Mapping[str, Any] | None = None,
    encoder: str | Path | None = None,
    learner_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    config: MetaTrainConfig | None = None,
    val_episodes: int = 50,
    out_dir: str | Path | None = None,
    progress: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, MetaTrainResult]:
    """Build and meta-train each named learner on the same split (checkpoints under ``out_dir/<name>/``).

    Example:
        >>> results = train_learners(["protonet", "maml"], split, config=MetaTrainConfig(steps=200))  # doctest: +SKIP
    """
    cfg = config or MetaTrainConfig()
    col = split.train.collection
    if split.val is None and cfg.val_every and val_episodes:
        raise ValueError(
            f"validation is on (val_every={cfg.val_every}, val_episodes={val_episodes}) but the split has no "
            f"validation episodes ({split.description}); pass make_split(..., val=<validation collection>) so "
            "the best state is never chosen on training data, or set val_every=0 / val_episodes=0"
        )
    val_set = split.val.fixed(val_episodes, seed=cfg.seed + 101) if split.val is not None and val_episodes else None
    results: dict[str, MetaTrainResult] = {}
    for name in names:
        kw = {**learner_defaults(name, col), **dict((learner_kwargs or {}).get(name, {}))}
        learner = build_learner(
            name,
            backbone=backbone,
            backbone_kwargs=backbone_kwargs,
            n_way=split.train.n_way,
            in_channels=col.channels,
            encoder=encoder,
            learner_kwargs=kw,
            seed=cfg.seed,
        )
        out = Path(out_dir) / name if out_dir is not None else None
        meta = {
            "data_source": col.source,
            "data_fingerprint": col.fingerprint(),
            "split": split.description,
            **dict(metadata or {}),
        }
        results[name] = meta_train(
            learner, split.train, config=cfg, val_episodes=val_set, out=out, progress=progress, metadata=meta
        )
    return results


def evaluate_split(
    learners: Mapping[str, Any],
    split: ExperimentSplit,
    *,
    episodes: int = 600,
    seed: int = 12345,
    transductive: bool | None = None,
) -> dict[str, EvalResult]:
    """Evaluate every learner on the same fixed test episodes of ``split``.

    ``transductive``: ``None`` keeps each learner's setting (see
    :func:`~medmeta_lib.evaluation.episodic.evaluate_learner`).

    Example:
        >>> import torch
        >>> from medmeta_lib.studies.experiment_split import make_split
        >>> c = ImageCollection(torch.rand(12, 1, 28, 28), torch.arange(12) % 4, tuple("abcd"))
        >>> split = make_split(c, c, split="none", n_way=3, k_shot=1, q_query=2)
        >>> res = evaluate_split({"protonet": build_learner("protonet", n_way=3)}, split, episodes=3)
        >>> res["protonet"].episodes, res["protonet"].settings["k_shot"], res["protonet"].settings["transductive"]
        (3, 1, False)
    """
    test_set = split.test.fixed(episodes, seed=seed)
    settings = {
        "n_way": split.test.n_way,
        "k_shot": split.test.k_shot,
        "q_query": split.test.q_query,
        "episodes": episodes,
        "split": split.description,
        "episode_seed": seed,
    }
    names = split.test.collection.site_names
    return evaluate_learners(learners, test_set, site_names=names, settings=settings, transductive=transductive)


def obtain_learners(
    meta_dir: str | Path | None,
    names: Sequence[str],
    split: ExperimentSplit,
    *,
    fallback_steps: int = 150,
    seed: int = 0,
    **build: Any,
) -> tuple[dict[str, Any], str]:
    """Learners for visualisation: notebook 03's checkpoints when ``meta_dir`` has them, else trained here.

    Args:
        meta_dir: notebook 03's ``output_dir`` (its ``metrics.json`` names each learner's checkpoint).
        names: learners wanted; those missing from ``meta_dir`` are trained with ``fallback_steps``.
        split: the split to train on when needed.
        fallback_steps: outer steps for learners trained here (small: this is a stand-in).
        seed: seed.
        **build: passed to :func:`train_learners` (backbone, backbone_kwargs, encoder...).

    Returns:
        ``(learners, note)``; the note says where each learner came from.

    Example:
        >>> import torch
        >>> from medmeta_lib.studies.experiment_split import make_split
        >>> c = ImageCollection(torch.rand(12, 1, 28, 28), torch.arange(12) % 4, tuple("abcd"))
        >>> split = make_split(c, c, split="none", n_way=3, k_shot=1, q_query=2)
        >>> learners, note = obtain_learners(None, ["scratch"], split)
        >>> list(learners), note
        (['scratch'], "built here (no meta-training needed): ['scratch'].")
    """
    from medmeta_lib.runio import read_metrics
    from medmeta_lib.training.learner_io import load_learner

    learners: dict[str, Any] = {}
    loaded: list[str] = []
    if meta_dir and (Path(meta_dir) / "metrics.json").exists():
        training = read_metrics(meta_dir).get("training", {})
        for name in names:
            ck = training.get(name, {}).get("checkpoint")
            if ck and Path(ck).exists():
                learners[name] = load_learner(ck, expect_learner=name)
                loaded.append(name)
    missing = [n for n in names if n not in learners]
    if missing:
        cfg = MetaTrainConfig(steps=fallback_steps, val_every=0, seed=seed)
        trained = train_learners(missing, split, config=cfg, val_episodes=0, progress=False, **build)
        learners.update({n: r.learner for n, r in trained.items()})
    # learners without meta-parameters (scratch) need no notebook-03 output: say "built", not "trained"
    built = [n for n in missing if not learners[n].meta_trainable]
    trained_here = [n for n in missing if n not in built]
    parts = []
    if loaded:
        parts.append(f"loaded from notebook 03 ({meta_dir}): {loaded}.")
    if trained_here:
        parts.append(f"trained here for {fallback_steps} steps (notebook 03's outputs absent): {trained_here}.")
    if built:
        parts.append(f"built here (no meta-training needed): {built}.")
    return {n: learners[n] for n in names}, " ".join(parts)


def best_vs_runner_up(evals: Mapping[str, EvalResult]) -> dict[str, Any] | None:
    """The best learner against the runner-up (by mean accuracy) as a paired difference over the same episodes.

    Returns ``None`` with fewer than two learners, else :func:`paired_episode_difference`'s fields plus
    ``"best"`` and ``"runner_up"``: "A beats B" is backed by this interval, not by two overlapping ones.

    Example:
        >>> best_vs_runner_up(evaluate_split(learners, split))["mean"]  # doctest: +SKIP
    """
    ranked = sorted(evals.values(), key=lambda r: r.acc_mean, reverse=True)
    if len(ranked) < 2:
        return None
    return {
        **paired_episode_difference(ranked[0], ranked[1]),
        "best": ranked[0].learner,
        "runner_up": ranked[1].learner,
    }


def experiment_metrics(
    evals: Mapping[str, EvalResult],
    results: Mapping[str, MetaTrainResult],
    split: ExperimentSplit,
    *,
    settings: Mapping[str, Any],
    cross_site: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """What notebook 03 records for the run report and for notebook 04 (which rebuilds the split from it).

    Args:
        evals: :func:`evaluate_split`'s results.
        results: :func:`train_learners`'s results.
        split: the split they were trained and tested on.
        settings: the run's settings worth recording (``n_way``, ``k_shot``, ``transductive``, ...).
        cross_site: :func:`~medmeta_lib.studies.sites.leave_one_site_out`'s result, if any.

    Returns:
        ``{"headline", "best_vs_runner_up", "split", "split_spec", "settings", "results", "training",
        "cross_site"}``.

    Example:
        >>> m = experiment_metrics(evals, results, split, settings={"k_shot": 5})  # doctest: +SKIP
    """
    if not evals:
        raise ValueError("experiment_metrics: no evaluated learner")
    best = max(evals.values(), key=lambda r: r.acc_mean)
    return {
        "headline": {f"{n}_acc": r.acc_mean for n, r in evals.items()} | {"best_learner": best.learner},
        "best_vs_runner_up": best_vs_runner_up(evals),
        "split": split.description,
        "split_spec": split.to_json(),
        "settings": dict(settings),
        "results": {n: r.to_dict() for n, r in evals.items()},
        "training": {
            n: {
                "seconds": r.seconds,
                "best_step": r.best_step,
                "best_val_acc": r.best_val_acc,
                "checkpoint": str(r.best_checkpoint or r.last_checkpoint or ""),
            }
            for n, r in results.items()
        },
        "cross_site": dict(cross_site or {}),
    }
