"""Site studies: what a new hospital costs (leave-one-site-out) and how learning carries between sites.

Both meta-train with :func:`~medmeta_lib.studies.experiment.train_learners` on a ``"sites"`` split and score
fixed episodes of new patients. Two deployments of a few-shot model at a new hospital are measured:

* **labels at the new hospital**: the support set (the few labelled images) and the queries both come
  from the new hospital, so adaptation sees its acquisition style before it is scored;
* **labels from the training hospitals**: the support set comes from the hospitals the model was
  trained at and only the queries from the new one (no one labels images at the new site), which is
  where a site shift costs accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.evaluation.episodic import EvalResult, evaluate_learners
from medmeta_lib.studies.experiment import train_learners
from medmeta_lib.studies.experiment_split import make_split
from medmeta_lib.training.meta_training import MetaTrainConfig

__all__ = ["leave_one_site_out", "site_transfer_matrix"]


def _site_eval(
    learner: Any,
    col: ImageCollection,
    sites: Sequence[int],
    *,
    n_way: int,
    k_shot: int,
    q_query: int,
    episodes: int,
    seed: int,
    query_sites: Sequence[int] | None = None,
) -> EvalResult:
    multi_mod = col.class_modalities is not None and len(col.modalities) > 1
    s = EpisodeSampler(
        col, n_way, k_shot, q_query, sites=sites, same_modality=multi_mod, query_sites=query_sites, seed=seed
    )
    return evaluate_learners({"x": learner}, s.fixed(episodes, seed=seed))["x"]


def leave_one_site_out(
    learner: str,
    train: ImageCollection,
    test: ImageCollection,
    *,
    n_way: int = 5,
    k_shot: int = 5,
    q_query: int = 15,
    config: MetaTrainConfig | None = None,
    episodes: int = 150,
    seed: int = 0,
    **build: Any,
) -> dict[str, dict[str, float]]:
    """For each site: meta-train at the other sites, test on new patients there and at the held-out site.

    Returns ``{site: {"held_out_acc", "held_out_ci95", "held_out_remote_labels_acc",
    "held_out_remote_labels_ci95", "training_sites_acc", "training_sites_ci95"}}``: ``held_out`` has
    support and queries at the held-out hospital, ``held_out_remote_labels`` the support from the
    training hospitals and the queries at the held-out one, ``training_sites`` both at the training
    hospitals (new patients). The gaps to ``training_sites`` are the cost of meeting a new hospital.

    Args:
        learner: learner name.
        train: meta-training images.
        test: new patients (all sites).
        n_way: classes per task.
        k_shot: support images per class.
        q_query: query images per class.
        config: outer-loop settings (validation is skipped).
        episodes: test episodes per cell.
        seed: seed.
        **build: passed to :func:`train_learners` (backbone, backbone_kwargs, encoder...).
    """
    cfg = config or MetaTrainConfig(steps=200, val_every=0, seed=seed)
    out: dict[str, dict[str, float]] = {}
    names = train.site_names or ()
    for s, site in enumerate(names):
        sp = make_split(
            train, test, split="sites", held_out_sites=[s], n_way=n_way, k_shot=k_shot, q_query=q_query, seed=seed
        )
        res = train_learners([learner], sp, config=cfg, val_episodes=0, progress=False, **build)[learner]
        kw: dict[str, Any] = dict(n_way=n_way, k_shot=k_shot, q_query=q_query, episodes=episodes, seed=seed + 7)
        others = [i for i in range(len(names)) if i != s]
        held = _site_eval(res.learner, test, [s], **kw)
        remote = _site_eval(res.learner, test, others, query_sites=[s], **kw)
        seen = _site_eval(res.learner, test, others, **kw)
        out[site] = {
            "held_out_acc": held.acc_mean,
            "held_out_ci95": held.acc_ci95,
            "held_out_remote_labels_acc": remote.acc_mean,
            "held_out_remote_labels_ci95": remote.acc_ci95,
            "training_sites_acc": seen.acc_mean,
            "training_sites_ci95": seen.acc_ci95,
        }
    return out


def site_transfer_matrix(
    learner: str,
    train: ImageCollection,
    test: ImageCollection,
    *,
    n_way: int = 5,
    k_shot: int = 5,
    q_query: int = 15,
    config: MetaTrainConfig | None = None,
    episodes: int = 100,
    seed: int = 0,
    **build: Any,
) -> dict[str, Any]:
    """Meta-train at ONE site, test at every site: ``{"rows", "cols", "acc", "ci95"}`` (train site × test site).

    The diagonal is in-site accuracy (new patients, same hospital); off-diagonal cells show how
    well what was learnt at one hospital carries to another.

    Args:
        learner: learner name.
        train: meta-training images.
        test: new patients (all sites).
        n_way: classes per task.
        k_shot: support images per class.
        q_query: query images per class.
        config: outer-loop settings (validation is skipped).
        episodes: test episodes per cell.
        seed: seed.
        **build: passed to :func:`train_learners`.
    """
    cfg = config or MetaTrainConfig(steps=200, val_every=0, seed=seed)
    names = list(train.site_names or ())
    acc: list[list[float]] = []
    ci: list[list[float]] = []
    for s in range(len(names)):
        others = [i for i in range(len(names)) if i != s]
        sp = make_split(
            train, test, split="sites", held_out_sites=others, n_way=n_way, k_shot=k_shot, q_query=q_query, seed=seed
        )
        res = train_learners([learner], sp, config=cfg, val_episodes=0, progress=False, **build)[learner]
        kw: dict[str, Any] = dict(n_way=n_way, k_shot=k_shot, q_query=q_query, episodes=episodes, seed=seed + 7)
        cells = [_site_eval(res.learner, test, [t], **kw) for t in range(len(names))]
        acc.append([c.acc_mean for c in cells])
        ci.append([c.acc_ci95 for c in cells])
    return {"rows": names, "cols": names, "acc": acc, "ci95": ci, "learner": learner}
