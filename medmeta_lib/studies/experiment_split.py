"""Experiment splits: which classes, modalities or hospitals a run meta-trains, validates and tests on.

:func:`make_split` turns a protocol name into an :class:`ExperimentSplit`; :func:`obtain_split` rebuilds
the split an earlier run recorded and :func:`check_split_matches` refuses to test a checkpoint on
classes it was trained on.

Split protocols (``split=``):

* ``"modality"`` — held-out modalities: meta-train on the other modalities' classes, validate on
  one modality and test on another (new classes *and* a new imaging domain; tasks stay within one
  modality). The default for MedSynth's coarse taxonomy (six classes per modality).
* ``"classes"`` — a random disjoint class split within every modality (60/20/20, with at least
  ``n_way`` validation and test classes where the modality has room): new classes within seen
  modalities, the standard few-shot setting. Tasks stay within one modality, so every part needs at
  least ``n_way`` classes of one modality (refused otherwise: a 5-way task with one class from each of
  five modalities measures modality recognition). The default for MedSynth's fine taxonomy.
* ``"sites"`` — leave sites out: meta-train at some hospitals, test on new patients at another.
* ``"none"`` — all classes and sites; train/val/test differ only by patients (e.g. PneumoniaMNIST,
  which has two classes: its "new task" is the held-out dataset, see ``held_out_dataset``).

``exclude_modalities`` removes whole modalities from meta-training and validation under any protocol:
to hold a target dataset out *at the task level* (e.g. no synthetic chest radiographs when the target
is PneumoniaMNIST), exclude the modalities of its kind.

Validation never reads the training data: under ``"sites"`` and ``"none"`` the validation episodes
need their own collection (``val=``, other patients); without one the split has no validation sampler
and :func:`~medmeta_lib.studies.experiment.train_learners` refuses a configuration that validates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.data.splits import split_classes, split_modalities, split_sites

__all__ = ["SPLITS", "ExperimentSplit", "check_split_matches", "make_split", "obtain_split"]


SPLITS = ("auto", "modality", "classes", "sites", "none")


@dataclass
class ExperimentSplit:
    """Episode samplers for meta-training, validation and testing under one split protocol."""

    kind: str
    train: EpisodeSampler
    val: EpisodeSampler | None
    test: EpisodeSampler
    description: str
    spec: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """What a later notebook needs to rebuild and check this split (protocol, arguments, class ids).

        Example:
            >>> sp.to_json()["test_classes"]  # doctest: +SKIP
            [24, 25, 26, 27, 28, 29]
        """
        return {
            **self.spec,
            "kind": self.kind,
            "description": self.description,
            "train_classes": list(self.train.classes),
            "val_classes": None if self.val is None else list(self.val.classes),
            "test_classes": list(self.test.classes),
        }


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
    exclude_modalities: Sequence[str] = (),
    seed: int = 0,
) -> ExperimentSplit:
    """Build train/val/test episode samplers for a split protocol (see the module docstring).

    Args:
        train: meta-training images (``split="train"`` patients).
        test: meta-test images (other patients, ``split="test"``).
        val: validation images (other patients). Under ``"modality"``/``"classes"`` the validation
            classes are disjoint from the training ones, so ``train``'s images of them are used when
            ``val`` is missing; under ``"sites"``/``"none"`` a missing ``val`` means no validation.
        split: protocol name; ``"auto"`` = ``"classes"`` when every modality has at least ``3 · n_way``
            classes (MedSynth's fine taxonomy), else ``"modality"`` with ≥ 3 modalities, else ``"none"``.
        n_way: classes per task.
        k_shot: support images per class.
        q_query: query images per class.
        held_out_sites: for ``"sites"``: site names or ids (default: the last site).
        val_modalities: for ``"modality"`` (default: the second-to-last modality).
        test_modalities: for ``"modality"`` (default: the last modality).
        exclude_modalities: modalities left out of meta-training and validation (a target held out
            at the task level, e.g. ``["chest_xray"]`` for PneumoniaMNIST).
        seed: seed of the episode streams and of the class split.

    Example:
        >>> sp = make_split(train_col, test_col, split="sites", n_way=5, k_shot=1)  # doctest: +SKIP
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    spec: dict[str, Any] = {
        "protocol": split,
        "n_way": n_way,
        "k_shot": k_shot,
        "q_query": q_query,
        "held_out_sites": list(held_out_sites),
        "val_modalities": list(val_modalities),
        "test_modalities": list(test_modalities),
        "exclude_modalities": list(exclude_modalities),
        "seed": seed,
        "separate_val": val is not None,
    }
    excluded = _excluded_classes(train, exclude_modalities)
    own_val = val is not None
    val = val if val is not None else train
    if split == "auto":
        split = _auto_protocol(train, n_way)
    multi_mod = train.class_modalities is not None and len(train.modalities) > 1
    common: dict[str, Any] = {"same_modality": multi_mod}
    # only restrict the class pool when something is excluded (the unrestricted stream stays as it was)
    keep: dict[str, Any] = {"classes": [c for c in range(train.num_classes) if c not in excluded]} if excluded else {}
    note = f"; excluded from meta-training: {list(exclude_modalities)}" if exclude_modalities else ""

    def sampler(col: ImageCollection, q: int, s: int, **kw: Any) -> EpisodeSampler:
        return EpisodeSampler(col, n_way, k_shot, q, seed=s, **{**common, **kw})

    def drop(ids: Sequence[int]) -> tuple[int, ...]:
        return tuple(c for c in ids if c not in excluded)

    if split in ("modality", "classes"):
        if split == "modality":
            mods = [m for m in train.modalities if m not in exclude_modalities]
            vm = list(val_modalities) or ([mods[-2]] if len(mods) >= 3 else [])
            tm = list(test_modalities) or [mods[-1]]
            cs = split_modalities(train, val=vm, test=tm)
            desc = f"held-out modalities: train {[m for m in mods if m not in vm + tm]}, val {vm}, test {tm}"
        else:
            cs = split_classes(train, seed=seed, min_val_test=n_way)
            _check_within_modality(train, cs.train, cs.test, n_way=n_way, excluded=excluded)
            desc = f"class split: {len(drop(cs.train))} train / {len(drop(cs.val))} val / {len(cs.test)} test classes"
        tr = sampler(train, q_query, seed, classes=drop(cs.train))
        val_ids = drop(cs.val)
        va = sampler(val, q_query, seed + 1, classes=val_ids) if _enough(train, val_ids, n_way, multi_mod) else None
        te = sampler(test, q_query, seed + 2, classes=cs.test)
        return ExperimentSplit(split, tr, va, te, desc + note, spec)
    if split == "sites":
        held = list(held_out_sites) or [train.num_sites - 1]
        tr_sites, te_sites = split_sites(train, held)
        names = train.site_names or ()
        desc = f"leave-site-out: train at {[names[s] for s in tr_sites]}, test at {[names[s] for s in te_sites]}"
        tr = sampler(train, q_query, seed, sites=tr_sites, **keep)
        va = sampler(val, q_query, seed + 1, sites=tr_sites, **keep) if own_val else None
        te = sampler(test, q_query, seed + 2, sites=te_sites, one_site=True)
        return ExperimentSplit("sites", tr, va, te, desc + note + _no_val(own_val), spec)
    tr = sampler(train, q_query, seed, **keep)
    va = sampler(val, q_query, seed + 1, **keep) if own_val else None
    te = sampler(test, q_query, seed + 2)
    return ExperimentSplit(
        "none", tr, va, te, "all classes and sites; new patients at test time" + note + _no_val(own_val), spec
    )


def _auto_protocol(train: ImageCollection, n_way: int) -> str:
    """New classes within seen modalities when every modality has room for them, else held-out modalities."""
    if train.class_modalities is None:
        return "none"
    sizes = [len(train.classes_of_modality(m)) for m in train.modalities]
    if min(sizes) >= 3 * n_way:  # enough for n_way validation, n_way test and n_way meta-train classes
        return "classes"
    return "modality" if len(train.modalities) >= 3 else "none"


def _no_val(own_val: bool) -> str:
    return "" if own_val else " (no validation collection: no validation)"


def _excluded_classes(col: ImageCollection, modalities: Sequence[str]) -> set[int]:
    if not modalities:
        return set()
    if col.class_modalities is None:
        raise ValueError(f"{col.source}: exclude_modalities needs a collection with modalities (e.g. MedSynth)")
    unknown = [m for m in modalities if m not in col.modalities]
    if unknown:
        raise ValueError(f"{col.source}: unknown modality {unknown}; modalities are {list(col.modalities)}")
    return {c for m in modalities for c in col.classes_of_modality(m)}


def _enough(col: ImageCollection, ids: Sequence[int], n_way: int, within_modality: bool) -> bool:
    """Whether ``n_way``-way tasks can be drawn from classes ``ids`` (within one modality if asked)."""
    if not within_modality or col.class_modalities is None:
        return len(ids) >= n_way
    counts: dict[str, int] = {}
    for c in ids:
        counts[col.class_modalities[c]] = counts.get(col.class_modalities[c], 0) + 1
    return max(counts.values(), default=0) >= n_way


def _check_within_modality(
    col: ImageCollection,
    train: Sequence[int],
    test: Sequence[int],
    *,
    n_way: int,
    excluded: set[int],
) -> None:
    within = col.class_modalities is not None and len(col.modalities) > 1
    for part, ids in (("train", [c for c in train if c not in excluded]), ("test", test)):
        if not _enough(col, ids, n_way, within):
            per = "of one modality " if within else ""
            raise ValueError(
                f"{col.source}: the 'classes' protocol leaves fewer than n_way={n_way} {part} classes {per}"
                f"(60/20/20 of each modality's classes); {n_way}-way tasks mixing modalities would measure modality "
                "recognition, not few-shot learning. Use protocol='modality', a smaller n_way, or data with more "
                "classes per modality"
            )


def check_split_matches(split: ExperimentSplit, recorded: Mapping[str, Any], *, where: str) -> None:
    """Refuse a split whose test classes differ from ``recorded`` (another notebook's ``split.to_json()``).

    Under class hold-out protocols (``"modality"``, ``"classes"``) test classes that were meta-training or
    validation classes are refused as well; ``"none"`` and ``"sites"`` share the classes by design.

    Raises:
        ValueError: naming ``where`` and both class lists.

    Example:
        >>> check_split_matches(sp, read_metrics(meta_dir)["split_spec"], where=meta_dir)  # doctest: +SKIP
    """
    want = list(recorded.get("test_classes", []))
    have = list(split.test.classes)
    trained_on = set(recorded.get("train_classes", [])) | set(recorded.get("val_classes") or [])
    # "none" and "sites" hold out patients (and hospitals), not classes: there the classes are shared by design
    if recorded.get("kind", split.kind) in ("none", "sites"):
        trained_on = set()
    if want != have or trained_on & set(have):
        raise ValueError(
            f"{where}: notebook 03 tested on classes {want} (protocol {recorded.get('protocol')!r}) but this split "
            f"tests on {have}; its learners were meta-trained on {sorted(trained_on & set(have)) or 'other'} of them. "
            "Use the same data_source, seed and protocol as notebook 03 (the split is read from its metrics.json)"
        )


def obtain_split(
    meta_dir: str | Path | None,
    train: ImageCollection,
    test: ImageCollection,
    *,
    val: ImageCollection | None = None,
    n_way: int = 5,
    k_shot: int = 5,
    q_query: int = 15,
    seed: int = 0,
) -> tuple[ExperimentSplit, str]:
    """The split to visualise: notebook 03's (read from its ``metrics.json``), or the default protocol.

    With notebook 03's outputs, its protocol and hold-out arguments are reused and the rebuilt test
    classes are checked against the recorded ones (:func:`check_split_matches`), so learners loaded
    from notebook 03 are never shown tasks from classes they were meta-trained on. ``n_way``,
    ``k_shot`` and ``q_query`` are this notebook's own (any N up to the number of test classes).

    Returns:
        ``(split, note)``: the note says where the split came from.

    Example:
        >>> split, note = obtain_split("runs/x/03", train_col, test_col, n_way=5)  # doctest: +SKIP
    """
    from medmeta_lib.runio import read_metrics

    recorded = None
    if meta_dir and (Path(meta_dir) / "metrics.json").exists():
        recorded = read_metrics(meta_dir).get("split_spec")
        if recorded is None:
            raise ValueError(
                f"{meta_dir}/metrics.json has no split_spec (written by notebook 03 since the inductive-evaluation "
                "change); re-run notebook 03 so that this notebook can test on its held-out classes"
            )
    if recorded is None:
        split = make_split(train, test, val=val, n_way=n_way, k_shot=k_shot, q_query=q_query, seed=seed)
        return split, f"default protocol ({split.description})"
    split = make_split(
        train,
        test,
        val=val,
        split=recorded["protocol"],
        n_way=n_way,
        k_shot=k_shot,
        q_query=q_query,
        held_out_sites=recorded.get("held_out_sites", []),
        val_modalities=recorded.get("val_modalities", []),
        test_modalities=recorded.get("test_modalities", []),
        exclude_modalities=recorded.get("exclude_modalities", []),
        seed=recorded.get("seed", seed),
    )
    check_split_matches(split, recorded, where=str(meta_dir))
    return split, f"notebook 03's split ({split.description})"
