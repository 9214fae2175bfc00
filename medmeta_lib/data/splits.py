"""Partitions of a collection for meta-learning: disjoint classes, held-out hospitals, held-out modalities.

A few-shot result means something only if the test tasks are new: :func:`split_classes` gives
meta-train / val / test classes that never overlap (within each modality, so that a task is never
solved by recognising the modality), :func:`split_sites` holds hospitals out and
:func:`split_modalities` holds whole imaging domains out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medmeta_lib.data.collection import ImageCollection

__all__ = ["ClassSplit", "split_classes", "split_modalities", "split_sites"]


@dataclass(frozen=True)
class ClassSplit:
    """Disjoint class ids for meta-training, meta-validation and meta-testing."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]


def split_classes(
    collection: ImageCollection,
    *,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    by_modality: bool = True,
    min_val_test: int = 1,
    seed: int = 0,
) -> ClassSplit:
    """Split class ids into disjoint meta-train / meta-val / meta-test sets.

    Args:
        collection: the collection whose classes are split.
        fractions: shares of train, val and test classes (normalised to sum to 1).
        by_modality: split within each modality, so each set holds classes of every modality
            that has at least three classes.
        min_val_test: at least this many validation and test classes in every group that has at least
            ``2 · min_val_test + 1`` classes (``n_way``: so that N-way tasks fit within a modality);
            smaller groups keep at least one of each.
        seed: shuffling seed.

    Example:
        >>> import torch
        >>> from medmeta_lib.data.collection import ImageCollection
        >>> c = ImageCollection(images=torch.rand(10, 1, 4, 4), labels=torch.arange(10),
        ...                     class_names=[str(i) for i in range(10)])
        >>> s = split_classes(c, seed=0)
        >>> len(s.train), len(s.val), len(s.test)
        (6, 2, 2)
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"fractions must be three non-negative numbers, got {fractions!r}")
    total = float(sum(fractions))
    fr = [f / total for f in fractions]
    rng = np.random.default_rng(seed)
    if by_modality and collection.class_modalities is not None:
        groups = [collection.classes_of_modality(m) for m in collection.modalities]
    else:
        groups = [list(range(collection.num_classes))]
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for g in groups:
        g = [g[i] for i in rng.permutation(len(g))]
        n = len(g)
        n_val = round(fr[1] * n)
        n_test = round(fr[2] * n)
        least = min_val_test if n >= 2 * min_val_test + 1 else 1
        if fr[1] > 0 and n >= 3:
            n_val = max(n_val, least)
        if fr[2] > 0 and n >= 3:
            n_test = max(n_test, least)
        n_train = n - n_val - n_test
        if n_train < 0:
            raise ValueError(f"{collection.source}: fractions {fractions} leave no training classes")
        train += g[:n_train]
        val += g[n_train : n_train + n_val]
        test += g[n_train + n_val :]
    if not train or not test:
        raise ValueError(
            f"{collection.source}: {collection.num_classes} classes are too few for a train/val/test class split; "
            "use a site or dataset hold-out instead"
        )
    return ClassSplit(tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test)))


def split_sites(collection: ImageCollection, held_out: Sequence[int | str]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Return ``(train_sites, held_out_sites)`` for a leave-sites-out experiment.

    ``held_out`` holds site ids or names. Example:
        >>> import torch
        >>> from medmeta_lib.data.collection import ImageCollection
        >>> c = ImageCollection(images=torch.rand(4, 1, 4, 4), labels=torch.tensor([0, 1, 0, 1]),
        ...                     class_names=("a", "b"), sites=torch.tensor([0, 0, 1, 1]), site_names=("A", "B"))
        >>> split_sites(c, ["B"])
        ((0,), (1,))
    """
    names = list(collection.site_names or ())
    out: list[int] = []
    for s in held_out:
        if isinstance(s, str):
            if s not in names:
                raise ValueError(f"{collection.source}: unknown site {s!r}; sites are {names}")
            out.append(names.index(s))
        else:
            if not 0 <= int(s) < len(names):
                raise ValueError(f"{collection.source}: site id {s} out of range 0..{len(names) - 1}")
            out.append(int(s))
    held = tuple(sorted(set(out)))
    train = tuple(i for i in range(len(names)) if i not in held)
    if not held or not train:
        raise ValueError(f"{collection.source}: a site hold-out needs at least one held-out and one training site")
    return train, held


def split_modalities(
    collection: ImageCollection,
    *,
    val: Sequence[str] = (),
    test: Sequence[str] = (),
) -> ClassSplit:
    """Hold out whole modalities: meta-train on the rest, validate and test on new classes of new modalities.

    With MedSynth's six classes per modality this is the held-out-class protocol that keeps 5-way
    tasks within one modality (a task mixing chest radiographs with fundus photographs is trivially
    easy), and it is also a cross-domain test: the test classes come from an imaging modality never
    seen in meta-training.

    Example:
        >>> import torch
        >>> from medmeta_lib.data.collection import ImageCollection
        >>> c = ImageCollection(images=torch.rand(6, 1, 4, 4), labels=torch.arange(6), class_names=list("abcdef"),
        ...                     class_modalities=("x", "x", "y", "y", "z", "z"))
        >>> split_modalities(c, val=["y"], test=["z"])
        ClassSplit(train=(0, 1), val=(2, 3), test=(4, 5))
    """
    mods = collection.modalities
    for m in (*val, *test):
        if m not in mods:
            raise ValueError(f"{collection.source}: unknown modality {m!r}; modalities are {list(mods)}")
    if set(val) & set(test):
        raise ValueError(f"modalities {sorted(set(val) & set(test))} are in both val and test; give disjoint sets")
    train_m = [m for m in mods if m not in (*val, *test)]
    if not train_m or not test:
        raise ValueError(f"{collection.source}: a modality split needs at least one test and one training modality")

    def ids(ms: Sequence[str]) -> tuple[int, ...]:
        return tuple(sorted(c for m in ms for c in collection.classes_of_modality(m)))

    return ClassSplit(ids(train_m), ids(val), ids(test))
