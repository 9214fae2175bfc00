"""Site studies: what a new hospital costs (leave-one-site-out) and how learning carries between sites.

Both meta-train with :func:`~medmeta_lib.studies.experiment.train_learners` on a ``"sites"`` split and score
fixed episodes of new patients. Two deployments of a few-shot model at a new hospital are measured:

* **labels at the new hospital**: the support set (the few labelled images) and the queries both come
  from the new hospital, so adaptation sees its acquisition style before it is scored;
* **labels from the training hospitals**: the support set comes from the hospitals the model was
  trained at and only the queries from the new one (no one labels images at the new site), which is
  where a site shift costs accuracy.

:func:`site_invariance_remedy` tests the remedy for the second deployment: contrastive pretraining
whose positive pairs are one patient seen by two scanners.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.data.splits import split_sites
from medmeta_lib.evaluation.episodic import EvalResult, evaluate_learners, paired_episode_difference
from medmeta_lib.ssl.simclr import pretrain_simclr
from medmeta_lib.ssl.simclr_config import SimCLRConfig
from medmeta_lib.studies.experiment import train_learners
from medmeta_lib.studies.experiment_split import make_split
from medmeta_lib.training.learner_io import build_learner
from medmeta_lib.training.meta_training import MetaTrainConfig

__all__ = ["leave_one_site_out", "site_invariance_remedy", "site_remedy_summary", "site_transfer_matrix"]


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

    Example:
        >>> c = ImageCollection(torch.rand(48, 1, 28, 28), torch.arange(48) % 4, tuple("abcd"),
        ...                     sites=torch.arange(48) // 24, site_names=("A", "B"))
        >>> out = leave_one_site_out("protonet", c, c, n_way=3, k_shot=1, q_query=2, episodes=2,
        ...                          config=MetaTrainConfig(steps=1, val_every=0), backbone_kwargs={"hidden": 8})
        >>> sorted(out), sorted(out["A"])[:2]
        (['A', 'B'], ['held_out_acc', 'held_out_ci95'])
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

    Example:
        >>> c = ImageCollection(torch.rand(48, 1, 28, 28), torch.arange(48) % 4, tuple("abcd"),
        ...                     sites=torch.arange(48) // 24, site_names=("A", "B"))
        >>> m = site_transfer_matrix("protonet", c, c, n_way=3, k_shot=1, q_query=2, episodes=2,
        ...                          config=MetaTrainConfig(steps=1, val_every=0), backbone_kwargs={"hidden": 8})
        >>> m["rows"], m["cols"], [len(row) for row in m["acc"]]
        (['A', 'B'], ['A', 'B'], [2, 2])
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


def site_invariance_remedy(
    train: ImageCollection,
    test: ImageCollection,
    *,
    held_out_site: int | str | None = None,
    learner: str = "protonet",
    simclr: SimCLRConfig | None = None,
    meta_config: MetaTrainConfig | None = None,
    n_way: int = 5,
    k_shot: int = 5,
    q_query: int = 15,
    episodes: int = 150,
    seed: int = 0,
    backbone: str = "conv4",
    backbone_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Plain against site-invariant contrastive pretraining, judged at a hospital neither encoder saw.

    Both encoders are pretrained with SimCLR on the same unlabelled images of the *training* hospitals
    (every site but ``held_out_site``), from the same seed; they differ only in their positive pairs
    (``SimCLRConfig.site_invariance``). Each becomes ``learner`` (meta-trained on the training hospitals
    when ``meta_config`` is given, else used as it is, e.g. ProtoNet on frozen features) and is scored on
    the same fixed episodes of new patients under three protocols: ``training_sites`` (support and
    queries at the training hospitals), ``held_out`` (both at the new hospital: labels there) and
    ``held_out_remote_labels`` (support from the training hospitals, queries at the new one). The
    differences are paired over those episodes.

    Args:
        train: meta-training images (MedSynth: site-invariant positives re-render the patient, which
            reads its class; elsewhere a simulated scanner shift is used).
        test: new patients at every site.
        held_out_site: the new hospital, a site name or id (``None``: the last site).
        learner: learner built on each encoder.
        simclr: pretraining settings shared by both encoders (``site_invariance`` is overridden).
        meta_config: outer-loop settings for meta-training on the training hospitals (``None``: none).
        n_way: classes per task.
        k_shot: support images per class.
        q_query: query images per class.
        episodes: test episodes per protocol.
        seed: seed of the pretraining, the meta-training and the episodes.
        backbone: backbone name.
        backbone_kwargs: its keyword arguments.

    Returns:
        ``{"held_out_site", "learner", "encoders": {"plain" | "site_invariant": {protocol: {"acc",
        "ci95"}}}, "difference": {protocol: {"mean", "ci95", "episodes"}}, "settings"}``, where a
        difference is site-invariant minus plain.

    Raises:
        ValueError: fewer than three sites (site-invariant positives need two training hospitals), an
            unknown ``held_out_site`` or a bad setting.

    Example:
        >>> r = site_invariance_remedy(train, test, simclr=SimCLRConfig(epochs=5))  # doctest: +SKIP
        >>> r["difference"]["held_out_remote_labels"]["mean"]  # doctest: +SKIP
    """
    names = list(train.site_names or ())
    if len(names) < 3:
        raise ValueError(
            f"site_invariance_remedy needs at least 3 sites (two training hospitals and a new one); "
            f"{train.source!r} has {len(names)}"
        )
    try:
        others, (s,) = split_sites(train, [len(names) - 1 if held_out_site is None else held_out_site])
    except ValueError as err:
        raise ValueError(f"held_out_site={held_out_site!r}: {err}") from None
    if episodes < 2:
        raise ValueError(f"episodes must be >= 2 (intervals), got {episodes}")
    assert train.sites is not None
    pool = train.subset(torch.nonzero(train.sites != s).flatten(), split=train.split)
    base = simclr or SimCLRConfig(seed=seed)
    kw: dict[str, Any] = dict(n_way=n_way, k_shot=k_shot, q_query=q_query, episodes=episodes, seed=seed + 7)
    build: dict[str, Any] = {"backbone": backbone, "backbone_kwargs": dict(backbone_kwargs or {})}
    evals: dict[str, dict[str, EvalResult]] = {}
    sp = None
    if meta_config is not None:
        sp = make_split(
            train, test, split="sites", held_out_sites=[s], n_way=n_way, k_shot=k_shot, q_query=q_query, seed=seed
        )
    with tempfile.TemporaryDirectory(prefix="medmeta-remedy-") as tmp:
        for variant, invariant in (("plain", False), ("site_invariant", True)):
            path = Path(tmp) / f"{variant}.safetensors"
            cfg = dataclasses.replace(base, site_invariance=invariant)
            pretrain_simclr(pool, config=cfg, out=path, resume=False, progress=False, **build)
            if sp is not None:
                res = train_learners(
                    [learner], sp, config=meta_config, val_episodes=0, progress=False, encoder=path, **build
                )
                model = res[learner].learner
            else:
                model = build_learner(
                    learner, n_way=n_way, in_channels=train.channels, encoder=path, seed=seed, **build
                )
            evals[variant] = {
                "training_sites": _site_eval(model, test, others, **kw),
                "held_out": _site_eval(model, test, [s], **kw),
                "held_out_remote_labels": _site_eval(model, test, others, query_sites=[s], **kw),
            }
    return {
        "held_out_site": names[s],
        "learner": learner,
        "encoders": {
            v: {p: {"acc": r.acc_mean, "ci95": r.acc_ci95} for p, r in per.items()} for v, per in evals.items()
        },
        "difference": {p: paired_episode_difference(r, evals["plain"][p]) for p, r in evals["site_invariant"].items()},
        "settings": {
            "simclr_epochs": base.epochs,
            "meta_steps": meta_config.steps if meta_config is not None else 0,
            "episodes": episodes,
            "n_way": n_way,
            "k_shot": k_shot,
        },
    }


def site_remedy_summary(result: Mapping[str, Any]) -> str:
    """One sentence on what :func:`site_invariance_remedy`'s result means for deploying at a new hospital.

    A difference counts only when its paired 95% interval excludes 0.

    Example:
        >>> d = {"mean": 0.04, "ci95": 0.01, "episodes": 100}
        >>> site_remedy_summary({"held_out_site": "D", "difference": {"held_out_remote_labels": d}})[:44]
        'With labels only from the training hospitals'
    """
    d = result["difference"]["held_out_remote_labels"]
    site = result.get("held_out_site", "the new hospital")
    effect = f"{d['mean']:+.3f} ± {d['ci95']:.3f}, paired over {d['episodes']} tasks"
    if d["mean"] - d["ci95"] > 0:
        verdict = "site-invariant pretraining raises accuracy"
        advice = "pretrain on several hospitals with cross-scanner positives before deploying without local labels"
    elif d["mean"] + d["ci95"] < 0:
        verdict = "site-invariant pretraining lowers accuracy"
        advice = "do not rely on it here: label a few images at the new hospital instead"
    else:
        verdict = "site-invariant pretraining makes no clear difference"
        advice = "a few labels at the new hospital remain the dependable remedy"
    text = f"With labels only from the training hospitals, at {site} {verdict} ({effect}): {advice}"
    enc = result.get("encoders", {})
    local, remote = enc.get("plain", {}).get("held_out"), enc.get("site_invariant", {}).get("held_out_remote_labels")
    if local and remote and local["acc"] - local["ci95"] > remote["acc"] + remote["ci95"]:
        text += (
            f"; yet a few labels taken at {site} are worth more ({local['acc']:.3f} with plain pretraining against "
            f"{remote['acc']:.3f} with the remedy)"
        )
    return text + "."
