"""Episodic evaluation: the same fixed test episodes for every learner, mean ± 95% CI, AUROC, per site.

Protocol (docs/evaluation.md): inductive predictions (a query's probabilities depend on the support
set and the query alone; ``transductive=True`` is the named alternative), fixed, seeded test episodes
shared by all learners (≥ 600 for reported numbers); accuracy reported as ``mean ± 1.96·sd/√n``;
AUROC as well for 2-way tasks; a per-site breakdown where sites exist; "A beats B" as a paired
difference over the same episodes (:func:`paired_episode_difference`). For PneumoniaMNIST the
comparable-to-the-literature protocol is :func:`evaluate_full_test_split`: K labelled images per
class drawn from the train split, the whole official test split scored, repeated over label draws,
with accuracy, balanced accuracy and AUC, intervals over the draws and over draws *and* test images,
and the majority-class rate (:func:`compare_full_test_split` adds paired differences).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import Episode
from medmeta_lib.intervals import majority_rate, mean_ci, paired_difference, two_level_bootstrap

__all__ = [
    "EvalResult",
    "compare_full_test_split",
    "evaluate_full_test_split",
    "evaluate_learner",
    "evaluate_learners",
    "mean_ci",
    "paired_episode_difference",
]


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
    with _inference_mode(learner, transductive):
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
    """:func:`evaluate_learner` for several learners on the *same* episodes."""
    return {name: evaluate_learner(lr, episodes, **kw) for name, lr in learners.items()}


@contextlib.contextmanager
def _inference_mode(learner: Any, transductive: bool | None) -> Iterator[None]:
    """Temporarily set ``learner.transductive`` (``None``: leave the learner's own setting)."""
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


def _draw_supports(train: ImageCollection, n_way: int, k_shot: int, draws: int, seed: int) -> list[np.ndarray]:
    """The ``draws`` support index sets (K per class), a function of the train labels and ``seed`` only."""
    labels = train.labels.numpy()
    pools = [np.nonzero(labels == c)[0] for c in range(n_way)]
    for c, p in enumerate(pools):
        if len(p) < k_shot:
            raise ValueError(
                f"{train.source}: class {train.class_names[c]!r} has {len(p)} train images, fewer than "
                f"k_shot={k_shot}; lower --k-shot"
            )
    rng = np.random.default_rng(seed)
    return [np.concatenate([rng.choice(p, size=k_shot, replace=False) for p in pools]) for _ in range(draws)]


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
    transductive: bool | None = None,
    n_boot: int = 1000,
    keep_predictions: bool = False,
) -> dict[str, Any]:
    """Few-shot protocol comparable to full-data results: K labelled train images per class, whole test split.

    For each of ``draws`` label draws, the learner adapts to ``k_shot`` images per class drawn from
    ``train`` and predicts every image of ``test`` (e.g. PneumoniaMNIST's official 624). The draws
    depend only on ``seed`` and the train labels, so every learner sees the same support sets.
    Predictions are inductive unless ``transductive=True`` (then test images are normalised with the
    statistics of their chunk of ``batch_size``, and the result says so).

    Args:
        learner: a :class:`~medmeta_lib.learners.base.Learner` (its ``n_way`` is set to the classes).
        train: the pool the K labelled images per class are drawn from.
        test: every image of it is scored.
        k_shot: labelled images per class.
        draws: label draws.
        steps: adaptation steps (``None``: the learner's default).
        seed: seed of the draws.
        batch_size: test images per forward pass (memory only, unless transductive).
        transductive: ``None`` keeps the learner's setting; ``True``/``False`` overrides it for this call.
        n_boot: bootstrap replicates for the intervals that include test-set sampling.
        keep_predictions: also return ``"correct"`` and ``"score"`` ``(draws, N)`` arrays (for
            :func:`compare_full_test_split`'s paired differences).

    Returns:
        ``{"learner", "k_shot", "draws", "test_images", "transductive", "majority_rate",
        "acc_mean", "acc_ci95", "acc_ci95_total", "acc_lo95", "acc_hi95", the same for "bal_acc" and (two
        classes) "auc", "per_draw_acc"}``: ``ci95`` is over the label draws (``1.96·sd/√draws``);
        ``ci95_total``/``lo95``/``hi95`` come from a bootstrap over draws *and* test images.

    Example:
        >>> r = evaluate_full_test_split(learner, train, test, k_shot=10, draws=100)  # doctest: +SKIP
        >>> r["acc_mean"], r["bal_acc_mean"], r["majority_rate"]  # doctest: +SKIP
        (0.83, 0.80, 0.625)
    """
    if isinstance(k_shot, bool) or not isinstance(k_shot, int) or k_shot < 1:
        raise ValueError(f"k_shot must be an int >= 1, got {k_shot!r}")
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be an int >= 1, got {draws!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n_way = train.num_classes
    if test.num_classes != n_way:
        raise ValueError(f"train has {n_way} classes but test has {test.num_classes}; they must match")
    if learner.n_way != n_way:
        learner.set_n_way(n_way)
    supports = _draw_supports(train, n_way, k_shot, draws, seed)
    ty = test.labels.numpy()
    correct = np.zeros((draws, len(test)), dtype=bool)
    score = np.zeros((draws, len(test))) if n_way == 2 else None
    with _inference_mode(learner, transductive):
        for d, idx in enumerate(supports):
            sx = train.images[torch.from_numpy(idx)]
            sy = torch.arange(n_way).repeat_interleave(k_shot)
            predictor, _ = learner.adapt(sx, sy, steps=steps)
            with torch.no_grad():
                probs = torch.cat(
                    [predictor(test.images[i : i + batch_size]).softmax(-1) for i in range(0, len(test), batch_size)]
                ).numpy()
            correct[d] = probs.argmax(-1) == ty
            if score is not None:
                score[d] = probs[:, 1]
        mode = bool(learner.transductive)
    stats = two_level_bootstrap(correct, ty, score, n_boot=n_boot, seed=seed)
    out: dict[str, Any] = {
        "learner": learner.name,
        "k_shot": k_shot,
        "draws": draws,
        "test_images": len(test),
        "transductive": mode,
        "majority_rate": majority_rate(ty),
    }
    for metric, st in stats.items():
        for key, value in st.items():
            out[f"{metric}_{key}"] = value
    out["per_draw_acc"] = correct.mean(1).tolist()
    if keep_predictions:
        out["correct"], out["score"] = correct, score
    return out


def compare_full_test_split(
    learners: Mapping[str, Any],
    train: ImageCollection,
    test: ImageCollection,
    *,
    k_shot: int,
    draws: int = 100,
    seed: int = 0,
    n_boot: int = 1000,
    **kw: Any,
) -> dict[str, Any]:
    """:func:`evaluate_full_test_split` for several learners on the same draws, with paired differences.

    The best learner (highest mean balanced accuracy) is compared with every other one: ``A − B`` for
    accuracy, balanced accuracy and AUC over the same draws and test images, with both intervals.

    Returns:
        ``{"results": {name: result}, "best": name, "paired_vs_best": {name: {metric: {...}}}}``.

    Example:
        >>> out = compare_full_test_split({"protonet": p, "baseline": b}, train, test, k_shot=5)  # doctest: +SKIP
        >>> out["paired_vs_best"]["baseline"]["acc"]["lo95"] > 0  # doctest: +SKIP
    """
    if not learners:
        raise ValueError("compare_full_test_split: give at least one learner")
    raw = {
        name: evaluate_full_test_split(
            lr, train, test, k_shot=k_shot, draws=draws, seed=seed, n_boot=n_boot, keep_predictions=True, **kw
        )
        for name, lr in learners.items()
    }
    best = max(raw, key=lambda n: raw[n]["bal_acc_mean"])
    ty = test.labels.numpy()
    paired = {
        name: paired_difference(raw[best], r, ty, n_boot=n_boot, seed=seed) for name, r in raw.items() if name != best
    }
    results = {name: {k: v for k, v in r.items() if k not in ("correct", "score")} for name, r in raw.items()}
    return {"results": results, "best": best, "paired_vs_best": paired}
