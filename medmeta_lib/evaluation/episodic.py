"""Episodic evaluation: the same fixed test episodes for every learner, mean ± 95% CI, AUROC, per site.

Protocol (docs/evaluation.md): inductive predictions (a query's probabilities depend on the support
set and the query alone; ``transductive=True`` is the named alternative), fixed, seeded test episodes
shared by all learners (≥ 600 for reported numbers); accuracy reported as ``mean ± 1.96·sd/√n``;
AUROC as well for 2-way tasks; a per-site breakdown where sites exist; "A beats B" as a paired
difference over the same episodes (:func:`paired_episode_difference`). The protocol comparable to
the literature (the whole official test split scored over label draws) is in
:mod:`medmeta_lib.evaluation.full_test_split`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from medmeta_lib.data.episodes import Episode
from medmeta_lib.evaluation.intervals import mean_ci

__all__ = ["EvalResult", "evaluate_learner", "evaluate_learners", "inference_mode", "paired_episode_difference"]


def _auroc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, score)) if len(np.unique(y)) == 2 else float("nan")


@dataclass
class EvalResult:
    """Evaluation of one learner on a fixed episode set."""

    learner: str
    episodes: int
    acc_mean: float
    acc_ci95: float
    auc_mean: float | None = None
    auc_ci95: float | None = None
    per_site: dict[str, dict[str, float]] = field(default_factory=dict)
    per_episode_acc: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self, *, per_episode: bool = False) -> dict[str, Any]:
        """JSON-friendly dict (per-episode accuracies only when asked)."""
        d = asdict(self)
        if not per_episode:
            d.pop("per_episode_acc")
        return d

    def __str__(self) -> str:
        s = f"{self.learner}: acc {self.acc_mean:.3f} ± {self.acc_ci95:.3f} ({self.episodes} episodes)"
        if self.auc_mean is not None:
            s += f", AUROC {self.auc_mean:.3f} ± {self.auc_ci95:.3f}"
        return s


def evaluate_learner(
    learner: Any,
    episodes: Sequence[Episode],
    *,
    steps: int | None = None,
    site_names: Sequence[str] | None = None,
    progress: bool = False,
    settings: Mapping[str, Any] | None = None,
    transductive: bool | None = None,
) -> EvalResult:
    """Adapt ``learner`` to each episode's support and score its query set.

    Args:
        learner: a :class:`~medmeta_lib.learners.base.Learner`.
        episodes: the fixed test episodes (e.g. ``sampler.fixed(600, seed=...)``).
        steps: adaptation steps (``None``: the learner's default).
        site_names: names for the per-site breakdown (episodes drawn from one site).
        progress: show a tqdm bar.
        settings: recorded in the result (N, K, Q, split...), with ``"transductive"``.
        transductive: ``None`` keeps the learner's setting; ``True``/``False`` overrides it for this call.

    Example:
        >>> res = evaluate_learner(learner, test_set)  # doctest: +SKIP
        >>> print(res)  # protonet: acc 0.612 ± 0.011 (600 episodes)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    if len(episodes) == 0:
        raise ValueError("evaluate_learner: no episodes given")
    accs: list[float] = []
    aucs: list[float] = []
    by_site: dict[str, list[float]] = {}
    with inference_mode(learner, transductive):
        for ep in tqdm(episodes, desc=f"eval {learner.name}", disable=not progress, leave=False):
            if ep.n_way != learner.n_way:
                learner.set_n_way(ep.n_way)
            out = learner.evaluate_episode(ep, steps=steps)
            accs.append(float(out["acc"]))
            if ep.n_way == 2:
                aucs.append(_auroc(ep.query_y.numpy(), out["probs"][:, 1].numpy()))
            if ep.site is not None:
                name = site_names[ep.site] if site_names else str(ep.site)
                by_site.setdefault(name, []).append(float(out["acc"]))
        mode = bool(getattr(learner, "transductive", False))
    m, h = mean_ci(accs)
    res = EvalResult(
        learner.name, len(accs), m, h, per_episode_acc=accs, settings={**dict(settings or {}), "transductive": mode}
    )
    valid = [a for a in aucs if not math.isnan(a)]
    if valid:
        res.auc_mean, res.auc_ci95 = mean_ci(valid)
    for name, v in sorted(by_site.items()):
        sm, sh = mean_ci(v)
        res.per_site[name] = {"acc_mean": sm, "acc_ci95": sh, "episodes": len(v)}
    return res


def evaluate_learners(learners: Mapping[str, Any], episodes: Sequence[Episode], **kw: Any) -> dict[str, EvalResult]:
    """:func:`evaluate_learner` for several learners on the *same* episodes.

    Example:
        >>> import torch
        >>> from medmeta_lib.data import EpisodeSampler, ImageCollection
        >>> from medmeta_lib.learners import create_learner
        >>> from medmeta_lib.models import create_backbone
        >>> c = ImageCollection(torch.rand(12, 1, 28, 28), torch.arange(12) % 4, class_names=tuple("abcd"))
        >>> episodes = EpisodeSampler(c, n_way=3, k_shot=1, q_query=2, seed=0).fixed(3, seed=0)
        >>> learner = create_learner("protonet", create_backbone("conv4", hidden=8), n_way=3)
        >>> res = evaluate_learners({"protonet": learner}, episodes)
        >>> sorted(res), res["protonet"].episodes
        (['protonet'], 3)
    """
    return {name: evaluate_learner(lr, episodes, **kw) for name, lr in learners.items()}


@contextlib.contextmanager
def inference_mode(learner: Any, transductive: bool | None) -> Iterator[None]:
    """Temporarily set ``learner.transductive`` (``None``: leave the learner's own setting).

    Example:
        >>> from medmeta_lib.learners import create_learner
        >>> from medmeta_lib.models import create_backbone
        >>> learner = create_learner("protonet", create_backbone("conv4", hidden=8), n_way=2)
        >>> with inference_mode(learner, True):
        ...     inside = learner.transductive
        >>> inside, learner.transductive
        (True, False)
    """
    if transductive is None:
        yield
        return
    old = learner.transductive
    learner.transductive = transductive
    try:
        yield
    finally:
        learner.transductive = old


def paired_episode_difference(a: EvalResult, b: EvalResult) -> dict[str, float]:
    """Mean and 95% CI of ``acc(A) − acc(B)`` over the same episodes (backs "A beats B").

    Example:
        >>> a = EvalResult("a", 2, 0.6, 0.1, per_episode_acc=[0.6, 0.7])
        >>> b = EvalResult("b", 2, 0.5, 0.1, per_episode_acc=[0.5, 0.5])
        >>> round(paired_episode_difference(a, b)["mean"], 3)
        0.15
    """
    if len(a.per_episode_acc) != len(b.per_episode_acc) or not a.per_episode_acc:
        raise ValueError(
            f"paired_episode_difference needs both learners scored on the same episodes: "
            f"{len(a.per_episode_acc)} vs {len(b.per_episode_acc)} per-episode accuracies"
        )
    m, h = mean_ci(np.asarray(a.per_episode_acc) - np.asarray(b.per_episode_acc))
    return {"mean": m, "ci95": h, "episodes": len(a.per_episode_acc)}
