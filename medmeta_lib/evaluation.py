"""Episodic evaluation: the same fixed test episodes for every learner, mean ± 95% CI, AUROC, per site.

Protocol (DESIGN.md): fixed, seeded test episodes shared by all learners (≥ 600 for reported
numbers); accuracy reported as ``mean ± 1.96·sd/√n``; AUROC as well for 2-way tasks; a per-site
breakdown where sites exist. For PneumoniaMNIST the comparable-to-the-literature protocol is
:func:`evaluate_full_test_split`: K labelled images per class drawn from the train split, the
whole official test split scored, repeated over label draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import Episode

__all__ = ["EvalResult", "evaluate_full_test_split", "evaluate_learner", "evaluate_learners", "mean_ci"]


def mean_ci(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and 95% confidence half-width ``1.96 · sd / √n`` (sample sd, ``ddof=1``).

    Example:
        >>> m, h = mean_ci([0.5, 0.7])
        >>> round(m, 3), round(h, 3)
        (0.6, 0.196)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_ci needs at least one value")
    if v.size == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(1.96 * v.std(ddof=1) / math.sqrt(v.size))


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
) -> EvalResult:
    """Adapt ``learner`` to each episode's support and score its query set.

    Args:
        learner: a :class:`~medmeta_lib.learners.base.Learner`.
        episodes: the fixed test episodes (e.g. ``sampler.fixed(600, seed=...)``).
        steps: adaptation steps (``None``: the learner's default).
        site_names: names for the per-site breakdown (episodes drawn from one site).
        progress: show a tqdm bar.
        settings: recorded in the result (N, K, Q, split...).

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
    m, h = mean_ci(accs)
    res = EvalResult(learner.name, len(accs), m, h, per_episode_acc=accs, settings=dict(settings or {}))
    valid = [a for a in aucs if not math.isnan(a)]
    if valid:
        res.auc_mean, res.auc_ci95 = mean_ci(valid)
    for name, v in sorted(by_site.items()):
        sm, sh = mean_ci(v)
        res.per_site[name] = {"acc_mean": sm, "acc_ci95": sh, "episodes": len(v)}
    return res


def evaluate_learners(learners: Mapping[str, Any], episodes: Sequence[Episode], **kw: Any) -> dict[str, EvalResult]:
    """:func:`evaluate_learner` for several learners on the *same* episodes."""
    return {name: evaluate_learner(lr, episodes, **kw) for name, lr in learners.items()}


def evaluate_full_test_split(
    learner: Any,
    train: ImageCollection,
    test: ImageCollection,
    *,
    k_shot: int,
    draws: int = 100,
    steps: int | None = None,
    seed: int = 0,
    batch_size: int = 512,
) -> dict[str, Any]:
    """Few-shot protocol comparable to full-data results: K labelled train images per class, whole test split.

    For each of ``draws`` label draws, the learner adapts to ``k_shot`` images per class drawn
    from ``train`` and predicts every image of ``test`` (e.g. PneumoniaMNIST's official 624).

    Returns:
        ``{"acc_mean", "acc_ci95", "auc_mean", "auc_ci95" (binary tasks), "draws", "k_shot"}``.
    """
    if k_shot < 1 or draws < 1:
        raise ValueError(f"k_shot and draws must be >= 1, got {k_shot}, {draws}")
    n_way = train.num_classes
    if test.num_classes != n_way:
        raise ValueError(f"train has {n_way} classes but test has {test.num_classes}; they must match")
    if learner.n_way != n_way:
        learner.set_n_way(n_way)
    rng = np.random.default_rng(seed)
    labels = train.labels.numpy()
    pools = [np.nonzero(labels == c)[0] for c in range(n_way)]
    for c, p in enumerate(pools):
        if len(p) < k_shot:
            raise ValueError(f"{train.source}: class {train.class_names[c]!r} has {len(p)} < k_shot={k_shot} images")
    ty = test.labels.numpy()
    accs, aucs = [], []
    for _ in range(draws):
        idx = np.concatenate([rng.choice(p, size=k_shot, replace=False) for p in pools])
        sx = train.images[torch.from_numpy(idx)]
        sy = torch.arange(n_way).repeat_interleave(k_shot)
        predictor, _ = learner.adapt(sx, sy, steps=steps)
        with torch.no_grad():
            probs = torch.cat(
                [predictor(test.images[i : i + batch_size]).softmax(-1) for i in range(0, len(test), batch_size)]
            )
        pred = probs.argmax(-1).numpy()
        accs.append(float((pred == ty).mean()))
        if n_way == 2:
            aucs.append(_auroc(ty, probs[:, 1].numpy()))
    am, ah = mean_ci(accs)
    out: dict[str, Any] = {"acc_mean": am, "acc_ci95": ah, "draws": draws, "k_shot": k_shot, "learner": learner.name}
    if aucs:
        out["auc_mean"], out["auc_ci95"] = mean_ci(aucs)
    return out
