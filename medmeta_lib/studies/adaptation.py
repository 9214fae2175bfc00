"""What the adaptation views need computed: curves over episodes, data efficiency, trajectories.

Core module (no plotting): every function returns numbers, arrays or tensors that the plots in
``medmeta_lib.viz.adaptation_plots`` and ``viz.embeddings`` draw.

* :func:`adaptation_curves` — query accuracy/loss after each inner step, mean ± 95% CI over episodes.
* :func:`data_efficiency` — accuracy against shots per class ``K`` on the same episodes for every learner.
* :func:`embedding_trajectory` — support/query embeddings and class prototypes of an
  :class:`~medmeta_lib.learners.trace.AdaptationTrace` in 2-D, one projection for all steps.

Saliency maps before and after adaptation are computed by :mod:`medmeta_lib.studies.saliency`.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import Episode, EpisodeSampler
from medmeta_lib.evaluation.episodic import evaluate_learner
from medmeta_lib.evaluation.intervals import mean_ci
from medmeta_lib.learners.base import Learner, check_int
from medmeta_lib.learners.trace import AdaptationTrace

__all__ = ["adaptation_curves", "data_efficiency", "embedding_trajectory", "prototype_alignment"]


def _ci(values: np.ndarray) -> tuple[list[float], list[float]]:
    stats = [mean_ci(values[:, s]) for s in range(values.shape[1])]
    return [m for m, _ in stats], [h for _, h in stats]


# ------------------------------------------------------------------ curves over episodes
def adaptation_curves(
    learners: Mapping[str, Learner], episodes: Sequence[Episode], *, steps: int = 10, progress: bool = False
) -> dict[str, dict[str, Any]]:
    """Query (and support) accuracy and loss after each inner step, mean and 95% CI over episodes.

    Every learner adapts to the *same* episodes with ``steps`` steps. Learners whose adaptation has
    fewer steps than asked record what they have and are carried flat to ``steps``: ProtoNet's
    trace is step 0 (no prototypes, a uniform guess) and step 1 (the class means), so its curve is
    chance at 0 and its accuracy from step 1 on; ``"native_steps"`` says where the real data ends.

    Args:
        learners: ``name -> learner`` (e.g. a meta-learned MAML, a contrastive-init Baseline, Scratch).
        episodes: the episodes, e.g. ``sampler.fixed(100, seed=1)``.
        steps: inner steps to run (``>= 0``).
        progress: show a tqdm bar per learner.

    Returns:
        ``{name: {"steps", "query_acc_mean", "query_acc_ci95", "query_loss_mean", "query_loss_ci95",
        "support_acc_mean", "support_loss_mean", "native_steps", "episodes", "n_way"}}``; the CI is
        NaN with a single episode.

    Example:
        >>> curves = adaptation_curves({"maml": maml, "scratch": scratch}, test_set, steps=10)  # doctest: +SKIP
        >>> curves["maml"]["query_acc_mean"][-1]  # doctest: +SKIP
        0.71
    """
    from tqdm.auto import tqdm

    steps = check_int("steps", steps, 0)
    if not learners:
        raise ValueError("learners is empty: pass a mapping name -> Learner")
    if len(episodes) == 0:
        raise ValueError("episodes is empty: pass e.g. sampler.fixed(100, seed=1)")
    out: dict[str, dict[str, Any]] = {}
    for name, learner in learners.items():
        rows: dict[str, list[list[float]]] = {k: [] for k in ("qa", "ql", "sa", "sl")}
        native = 0
        n_way = 0
        for ep in tqdm(episodes, desc=f"adapt {name}", disable=not progress, leave=False):
            learner.set_n_way(ep.n_way)  # ValueError with advice for learners tied to one n_way
            n_way = ep.n_way
            _, tr = learner.adapt(ep.support_x, ep.support_y, steps=steps, query_x=ep.query_x, query_y=ep.query_y)
            native = max(native, len(tr.steps) - 1)
            for key, seq in (
                ("qa", tr.query_acc),
                ("ql", tr.query_loss),
                ("sa", tr.support_acc),
                ("sl", tr.support_loss),
            ):
                vals = [float(v) for v in seq if v is not None]
                rows[key].append(vals + [vals[-1]] * (steps + 1 - len(vals)))
        arr = {k: np.asarray(v, dtype=np.float64) for k, v in rows.items()}
        qa_m, qa_h = _ci(arr["qa"])
        ql_m, ql_h = _ci(arr["ql"])
        out[name] = {
            "steps": list(range(steps + 1)),
            "query_acc_mean": qa_m,
            "query_acc_ci95": qa_h,
            "query_loss_mean": ql_m,
            "query_loss_ci95": ql_h,
            "support_acc_mean": arr["sa"].mean(0).tolist(),
            "support_loss_mean": arr["sl"].mean(0).tolist(),
            "native_steps": native,
            "episodes": len(episodes),
            "n_way": n_way,
        }
    return out


def _first_k_shots(ep: Episode, k: int) -> Episode:
    """The same task with the first ``k`` support images of each class (queries unchanged)."""
    keep = torch.cat([torch.nonzero(ep.support_y == c).flatten()[:k] for c in range(len(ep.classes))])
    sites = torch.unique(torch.cat([ep.support_sites[keep], ep.query_sites]))
    return dataclasses.replace(
        ep,
        support_x=ep.support_x[keep],
        support_y=ep.support_y[keep],
        support_sites=ep.support_sites[keep],
        support_idx=ep.support_idx[keep],
        site=int(sites[0]) if len(sites) == 1 else None,
    )


class _FirstKShots(Sequence[Episode]):
    """Episodes cut to ``k`` shots, cut on access (a fixed episode set stays lazy: low memory)."""

    def __init__(self, episodes: Sequence[Episode], k: int) -> None:
        self.episodes, self.k = episodes, k

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return _first_k_shots(self.episodes[i], self.k)


def data_efficiency(
    learners: Mapping[str, Learner],
    source: ImageCollection | Callable[[int], EpisodeSampler],
    *,
    shots: Sequence[int] = (1, 2, 5, 10, 20),
    episodes: int = 100,
    n_way: int = 5,
    q_query: int = 15,
    classes: Sequence[int] | None = None,
    sites: Sequence[int] | None = None,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Accuracy against the number of labelled images per class, on the same episodes for every learner.

    The tasks are **nested**: ``episodes`` tasks are drawn once at the largest ``K`` the data can supply,
    and the task at a smaller ``K`` keeps the same classes and queries with the first ``K`` support images
    of each class. So every point of the curve is scored on the same queries by every learner, and the
    gain from more labels is a paired difference over the same tasks (``gain_mean`` / ``gain_ci95``
    against the smallest ``K``). A ``K`` the data cannot supply (a class with fewer than ``K + q_query``
    images) is skipped with a warning.

    Args:
        learners: ``name -> learner``.
        source: a collection (episodes drawn with ``n_way``, ``q_query``, ``classes``, ``sites``), or
            a factory ``k_shot -> EpisodeSampler`` for full control (e.g. ``split.test`` settings).
        shots: the ``K`` values (positive integers).
        episodes: test episodes per ``K``.
        n_way: classes per task (with a collection).
        q_query: query images per class (with a collection).
        classes: class ids allowed in the tasks, e.g. the meta-test classes (with a collection).
        sites: site ids allowed (with a collection).
        steps: adaptation steps (``None``: each learner's default).
        seed: episode seed.
        progress: show progress bars.

    Returns:
        Rows ``{"learner", "k_shot", "acc_mean", "acc_ci95", "episodes", "gain_mean", "gain_ci95"}``
        (plus ``"auc_mean"``, ``"auc_ci95"`` for 2-way tasks), ordered by learner then ``K``; the gain is
        the paired accuracy difference to the smallest ``K`` on the same tasks (0 for that ``K``).

    Example:
        >>> rows = data_efficiency({"protonet": proto}, test_col, shots=(1, 5), episodes=50)  # doctest: +SKIP
        >>> [(r["k_shot"], round(r["acc_mean"], 2)) for r in rows]  # doctest: +SKIP
        [(1, 0.45), (5, 0.62)]
    """
    episodes = check_int("episodes", episodes, 1)
    shots = sorted({check_int("shots", k, 1) for k in shots})
    if not shots:
        raise ValueError("shots is empty: give the K values, e.g. shots=(1, 5, 10)")
    if not learners:
        raise ValueError("learners is empty: pass a mapping name -> Learner")
    factory: Callable[[int], EpisodeSampler]
    if isinstance(source, ImageCollection):
        col = source
        allowed = range(col.num_classes) if classes is None else classes
        # tasks within one modality whenever the allowed classes span several (MedSynth's new-classes protocol)
        multi_mod = col.class_modalities is not None and len({col.class_modalities[c] for c in allowed}) > 1

        def from_collection(k: int) -> EpisodeSampler:
            return EpisodeSampler(
                col, n_way, k, q_query, classes=classes, sites=sites, same_modality=multi_mod, seed=seed
            )

        factory = from_collection
    elif callable(source):
        factory = source
    else:
        raise ValueError("source must be an ImageCollection or a callable k_shot -> EpisodeSampler")
    largest: Sequence[Episode] | None = None
    for k in sorted(shots, reverse=True):  # the largest K the data can supply; the others nest inside it
        try:
            largest = factory(k).fixed(episodes, seed=seed + 1000 * k)
            break
        except ValueError as err:
            warnings.warn(f"data_efficiency: K={k} skipped: {err}", stacklevel=2)
            shots = [s for s in shots if s != k]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in learners}
    first: dict[str, np.ndarray] = {}
    for k in shots:  # empty when no K could be sampled: every failed K was dropped above
        assert largest is not None
        test_set = _FirstKShots(largest, k)
        for name, learner in learners.items():
            res = evaluate_learner(learner, test_set, steps=steps, progress=progress)
            accs = np.asarray(res.per_episode_acc)
            gain = mean_ci(accs - first.setdefault(name, accs))
            row: dict[str, Any] = {
                "learner": name,
                "k_shot": k,
                "acc_mean": res.acc_mean,
                "acc_ci95": res.acc_ci95,
                "episodes": res.episodes,
                "gain_mean": gain[0],
                "gain_ci95": gain[1],
            }
            if res.auc_mean is not None:
                row["auc_mean"], row["auc_ci95"] = res.auc_mean, res.auc_ci95
            results[name].append(row)
    rows = [r for name in learners for r in results[name]]
    if not rows:
        raise ValueError(f"data_efficiency: no K in {shots} can be sampled; lower n_way, q_query or the shots")
    return rows


# ------------------------------------------------------------------ embedding trajectory
def embedding_trajectory(
    trace: AdaptationTrace,
    support_y: Tensor,
    query_y: Tensor | None = None,
    *,
    method: str = "pca",
    seed: int = 0,
) -> dict[str, Any]:
    """Project a trace's embeddings at every step to 2-D with ONE projection fitted on all steps.

    The support (and query) embeddings of every step are stacked and a single PCA (or t-SNE) is
    fitted on them, so the points move only because the *model* moved. Prototypes are the class
    means of the support embeddings per step; with PCA they are projected with the same linear map
    (so a prototype sits at the centre of its projected support points), with t-SNE (which has no
    ``transform``) they are included in the fit.

    Args:
        trace: from ``learner.adapt(..., record_embeddings=True)`` (with a query for query points).
        support_y: support labels ``0..N-1``.
        query_y: query labels (colours the query points; ``None`` for none).
        method: ``"pca"`` or ``"tsne"``.
        seed: projection seed.

    Returns:
        ``{"steps", "support" (S+1, Ns, 2), "query" (S+1, Nq, 2) or None, "prototypes" (S+1, N, 2),
        "support_y", "query_y", "query_pred" (S+1, Nq) or None, "query_conf", "query_acc",
        "n_way", "method", "explained_variance" (PCA) or None, "learner"}`` as numpy arrays.

    Example:
        >>> _, tr = learner.adapt(ep.support_x, ep.support_y, query_x=ep.query_x, query_y=ep.query_y,
        ...                       record_embeddings=True)  # doctest: +SKIP
        >>> embedding_trajectory(tr, ep.support_y, ep.query_y)["support"].shape  # doctest: +SKIP
        (11, 25, 2)
    """
    if method not in ("pca", "tsne"):
        raise ValueError(f"method must be 'pca' or 'tsne', got {method!r}")
    if not trace.support_emb:
        raise ValueError("the trace has no embeddings: adapt with record_embeddings=True")
    sy = np.asarray(support_y.cpu() if isinstance(support_y, Tensor) else support_y, dtype=np.int64)
    n_way = int(sy.max()) + 1
    n_steps = len(trace.support_emb)
    sup = np.stack([e.float().numpy() for e in trace.support_emb])  # (S+1, Ns, D)
    if len(sy) != sup.shape[1]:
        raise ValueError(f"support_y has {len(sy)} labels but the trace has {sup.shape[1]} support embeddings")
    qry = np.stack([e.float().numpy() for e in trace.query_emb]) if trace.query_emb and query_y is not None else None
    onehot = np.eye(n_way)[sy]
    protos = np.einsum("sbd,bn->snd", sup, onehot) / onehot.sum(0)[None, :, None]  # (S+1, N, D)
    parts = [sup.reshape(-1, sup.shape[-1])] + ([qry.reshape(-1, qry.shape[-1])] if qry is not None else [])
    fit = np.concatenate(parts)
    explained = None
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(fit)
        explained = pca.explained_variance_ratio_.tolist()
        xy = pca.transform(fit)
        p2 = pca.transform(protos.reshape(-1, protos.shape[-1]))
    else:
        from medmeta_lib.data.stats import project_2d

        both = project_2d(np.concatenate([fit, protos.reshape(-1, protos.shape[-1])]), method="tsne", seed=seed)
        xy, p2 = both[: len(fit)], both[len(fit) :]
    ns = sup.shape[0] * sup.shape[1]
    out: dict[str, Any] = {
        "steps": list(trace.steps[:n_steps]),
        "support": xy[:ns].reshape(n_steps, -1, 2),
        "query": xy[ns:].reshape(n_steps, -1, 2) if qry is not None else None,
        "prototypes": p2.reshape(n_steps, n_way, 2),
        "support_y": sy,
        "query_y": None if query_y is None else np.asarray(query_y.cpu(), dtype=np.int64),
        "query_pred": None,
        "query_conf": None,
        "query_acc": [None if a is None else float(a) for a in trace.query_acc[:n_steps]],
        "n_way": n_way,
        "method": method,
        "explained_variance": explained,
        "learner": trace.learner,
    }
    if trace.query_probs and qry is not None:
        probs = torch.stack(trace.query_probs[:n_steps]).numpy()
        out["query_pred"], out["query_conf"] = probs.argmax(-1), probs.max(-1)
    return out


def prototype_alignment(trace: AdaptationTrace, support_y: Tensor, query_y: Tensor) -> dict[str, list[float]]:
    """Do the queries move to their own class prototype while a learner adapts? Measured per step.

    In the full embedding space (no projection): ``nearest_prototype_acc`` is the share of queries whose
    nearest support-class mean is their own class, and ``distance_ratio`` the mean, over queries, of the
    distance to the own prototype divided by the mean distance to the others (below 1: closer to their
    own). A rising accuracy with flat values here means the head learnt to read features that did not
    move (feature reuse, Raghu et al. 2020).

    Example:
        >>> prototype_alignment(trace, ep.support_y, ep.query_y)["nearest_prototype_acc"][:2]  # doctest: +SKIP
        [0.44, 0.44]
    """
    if not trace.support_emb or not trace.query_emb:
        raise ValueError("the trace has no query embeddings: adapt with query_x and record_embeddings=True")
    sy, qy = torch.as_tensor(support_y).long().cpu(), torch.as_tensor(query_y).long().cpu()
    n_way = int(sy.max()) + 1
    acc: list[float] = []
    ratio: list[float] = []
    for s_emb, q_emb in zip(trace.support_emb, trace.query_emb, strict=True):
        protos = torch.stack([s_emb[sy == c].float().mean(0) for c in range(n_way)])
        d = torch.cdist(q_emb.float(), protos)
        own = d[torch.arange(len(qy)), qy]
        other = (d.sum(1) - own) / max(n_way - 1, 1)
        acc.append(float((d.argmin(1) == qy).float().mean()))
        ratio.append(float((own / other.clamp_min(1e-12)).mean()))
    return {"steps": list(trace.steps[: len(acc)]), "nearest_prototype_acc": acc, "distance_ratio": ratio}
