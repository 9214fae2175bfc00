"""Experiment assembly shared by the CLI and the notebooks: splits → samplers → learners → results.

Split protocols (``split=``):

* ``"modality"`` — held-out modalities: meta-train on the other modalities' classes, validate on
  one modality and test on another (new classes *and* a new imaging domain; tasks stay within one
  modality). The default for MedSynth.
* ``"classes"`` — a random disjoint class split (60/20/20 per modality).
* ``"sites"`` — leave sites out: meta-train at some hospitals, test on new patients at another.
* ``"none"`` — all classes and sites; train/val/test differ only by patients (e.g. PneumoniaMNIST,
  which has two classes: its "new task" is the held-out dataset, see ``held_out_dataset``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import EpisodeSampler, split_classes, split_modalities, split_sites
from medmeta_lib.evaluation import EvalResult, evaluate_learners
from medmeta_lib.training import MetaTrainConfig, MetaTrainResult, build_learner, meta_train

__all__ = [
    "SPLITS",
    "ExperimentSplit",
    "evaluate_split",
    "learner_defaults",
    "leave_one_site_out",
    "make_split",
    "obtain_learners",
    "site_transfer_matrix",
    "train_learners",
]

SPLITS = ("auto", "modality", "classes", "sites", "none")


@dataclass
class ExperimentSplit:
    """Episode samplers for meta-training, validation and testing under one split protocol."""

    kind: str
    train: EpisodeSampler
    val: EpisodeSampler | None
    test: EpisodeSampler
    description: str


def make_split(
    train: ImageCollection,
    test: ImageCollection,
    *,
    val: ImageCollection | None = None,
    split: str = "auto",
    n_way: int = 5,
    k_shot: int = 5,
    q_query: int = 15,
    held_out_sites: Sequence[int | str] = (),
    val_modalities: Sequence[str] = (),
    test_modalities: Sequence[str] = (),
    seed: int = 0,
) -> ExperimentSplit:
    """Build train/val/test episode samplers for a split protocol (see the module docstring).

    Args:
        train: meta-training images (``split="train"`` patients).
        test: meta-test images (other patients, ``split="test"``).
        val: validation images (default: ``train``).
        split: protocol name; ``"auto"`` = ``"modality"`` with ≥ 3 modalities, else ``"none"``.
        n_way: classes per task.
        k_shot: support images per class.
        q_query: query images per class.
        held_out_sites: for ``"sites"``: site names or ids (default: the last site).
        val_modalities: for ``"modality"`` (default: the second-to-last modality).
        test_modalities: for ``"modality"`` (default: the last modality).
        seed: seed of the episode streams and of the class split.

    Example:
        >>> sp = make_split(train_col, test_col, split="sites", n_way=5, k_shot=1)  # doctest: +SKIP
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    val = val if val is not None else train
    if split == "auto":
        split = "modality" if train.class_modalities is not None and len(train.modalities) >= 3 else "none"
    multi_mod = train.class_modalities is not None and len(train.modalities) > 1
    common: dict[str, Any] = {"same_modality": multi_mod}

    def sampler(col: ImageCollection, q: int, s: int, **kw: Any) -> EpisodeSampler:
        return EpisodeSampler(col, n_way, k_shot, q, seed=s, **{**common, **kw})

    if split in ("modality", "classes"):
        if split == "modality":
            mods = train.modalities
            vm = list(val_modalities) or ([mods[-2]] if len(mods) >= 3 else [])
            tm = list(test_modalities) or [mods[-1]]
            cs = split_modalities(train, val=vm, test=tm)
            desc = f"held-out modalities: train {[m for m in mods if m not in vm + tm]}, val {vm}, test {tm}"
        else:
            cs = split_classes(train, seed=seed)
            common["same_modality"] = False
            desc = f"class split: {len(cs.train)} train / {len(cs.val)} val / {len(cs.test)} test classes"
        tr = sampler(train, q_query, seed, classes=cs.train)
        va = sampler(val, q_query, seed + 1, classes=cs.val) if len(cs.val) >= n_way else None
        te = sampler(test, q_query, seed + 2, classes=cs.test)
        return ExperimentSplit(split, tr, va, te, desc)
    if split == "sites":
        held = list(held_out_sites) or [train.num_sites - 1]
        tr_sites, te_sites = split_sites(train, held)
        names = train.site_names or ()
        desc = f"leave-site-out: train at {[names[s] for s in tr_sites]}, test at {[names[s] for s in te_sites]}"
        tr = sampler(train, q_query, seed, sites=tr_sites)
        va = sampler(val, q_query, seed + 1, sites=tr_sites)
        te = sampler(test, q_query, seed + 2, sites=te_sites, one_site=True)
        return ExperimentSplit("sites", tr, va, te, desc)
    tr = sampler(train, q_query, seed)
    va = sampler(val, q_query, seed + 1)
    te = sampler(test, q_query, seed + 2)
    return ExperimentSplit("none", tr, va, te, "all classes and sites; new patients at test time")


def learner_defaults(name: str, collection: ImageCollection) -> dict[str, Any]:
    """Keyword arguments a learner needs from the data (``num_train_classes`` for the baselines)."""
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
    learners: Mapping[str, Any], split: ExperimentSplit, *, episodes: int = 600, seed: int = 12345
) -> dict[str, EvalResult]:
    """Evaluate every learner on the same fixed test episodes of ``split``."""
    test_set = split.test.fixed(episodes, seed=seed)
    settings = {
        "n_way": split.test.n_way,
        "k_shot": split.test.k_shot,
        "q_query": split.test.q_query,
        "episodes": episodes,
        "split": split.description,
        "episode_seed": seed,
    }
    return evaluate_learners(learners, test_set, site_names=split.test.collection.site_names, settings=settings)


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
) -> EvalResult:
    multi_mod = col.class_modalities is not None and len(col.modalities) > 1
    s = EpisodeSampler(col, n_way, k_shot, q_query, sites=sites, same_modality=multi_mod, seed=seed)
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

    Returns ``{site: {"held_out_acc", "held_out_ci95", "training_sites_acc", "training_sites_ci95"}}``;
    the gap between the two accuracies is the cost of meeting a new hospital.

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
        kw = {"n_way": n_way, "k_shot": k_shot, "q_query": q_query, "episodes": episodes, "seed": seed + 7}
        held = _site_eval(res.learner, test, [s], **kw)
        seen = _site_eval(res.learner, test, [i for i in range(len(names)) if i != s], **kw)
        out[site] = {
            "held_out_acc": held.acc_mean,
            "held_out_ci95": held.acc_ci95,
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
        kw = {"n_way": n_way, "k_shot": k_shot, "q_query": q_query, "episodes": episodes, "seed": seed + 7}
        cells = [_site_eval(res.learner, test, [t], **kw) for t in range(len(names))]
        acc.append([c.acc_mean for c in cells])
        ci.append([c.acc_ci95 for c in cells])
    return {"rows": names, "cols": names, "acc": acc, "ci95": ci, "learner": learner}


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
    """
    from medmeta_lib.runio import read_metrics
    from medmeta_lib.training import load_learner

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
        parts.append(f"built here (no meta-training needed): {built}")
    return {n: learners[n] for n in names}, " ".join(parts)
