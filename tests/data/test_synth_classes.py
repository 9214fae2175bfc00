"""MedSynth's fine taxonomy: findings split by side and size; variants pin only their named draws."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import torch

from medmeta_lib.data.sources import load_collection
from medmeta_lib.data.synth_anatomy import FINDINGS, RENDERERS
from medmeta_lib.data.synth_classes import FINE, fine_classes
from medmeta_lib.data.synth_fields import Draw
from medmeta_lib.data.synthetic import MedSynth

KEYS = torch.arange(1, 17, dtype=torch.int64) * 7919


def test_every_modality_has_enough_fine_classes_for_disjoint_5_way_splits() -> None:
    for mod in MedSynth.MODALITIES:
        names = [n for n, _, _ in fine_classes(mod)]
        assert len(names) >= 16 and len(set(names)) == len(names)  # >= 5 test + 5 val + 6 meta-train classes
        assert {f for _, f, _ in fine_classes(mod)} == set(range(len(FINDINGS[mod])))  # every finding is used
    synth = MedSynth(taxonomy="fine")
    assert len(synth.class_names) == sum(len(v) for v in FINE.values()) == 96
    assert synth.class_names[5] == "chest_xray/nodule-right-small" and synth.class_modalities[5] == "chest_xray"
    with pytest.raises(ValueError, match="taxonomy must be one of"):
        MedSynth(taxonomy="medium")
    with pytest.raises(ValueError, match="no modality"):
        fine_classes("ultrasound")


def test_a_variant_pins_its_named_draws_and_leaves_every_other_draw_alone() -> None:
    free, pinned = Draw(KEYS, stream=3), Draw(KEYS, stream=3, variant={"side": -1.0, "extent": (0.5, 1.0)})
    assert torch.equal(free.u(0.0, 2.0), pinned.u(0.0, 2.0))  # unnamed: identical
    assert (pinned.sign("side") == -1).all() and not (free.sign("side") == -1).all()
    big, any_size = pinned.u(0.2, 0.4, "extent"), free.u(0.2, 0.4, "extent")
    assert ((big >= 0.3) & (big < 0.4)).all() and (any_size < 0.3).any()
    assert torch.equal(free.u(), pinned.u())  # the draws after a pinned one are still aligned
    assert (Draw(KEYS, stream=3, variant={"both": 0.0}).coin(0.99, "both") == 0).all()


def test_sides_follow_the_radiological_convention() -> None:
    """The same patients with and without the finding: the patient's left is on the image's right.

    Checked on chest radiographs, where a finding adds opacity in place; in the brain a mass also shifts the
    midline and the ventricles (mass effect), so there the side was checked by eye on rendered grids.
    """
    render = RENDERERS["chest_xray"]
    normal, _ = render(KEYS, 0, 32, None)
    sided = [(n, f, v) for n, f, v in fine_classes("chest_xray") if "-left-" in n or "-right-" in n]
    assert len(sided) == 16
    for name, finding, variant in sided:
        diff = (render(KEYS, finding, 32, variant)[0] - normal).abs()
        image_right = diff[:, :, 16:].sum((1, 2)) > diff[:, :, :16].sum((1, 2))
        assert bool(image_right.all()) if "-left-" in name else not bool(image_right.any()), name


@pytest.mark.parametrize(
    ("modality", "finding", "small", "large"),
    [
        ("chest_xray", 2, "nodule-left-small", "nodule-left-large"),
        ("brain_mri", 1, "glioma-right-small", "glioma-right-large"),
    ],
)
def test_large_findings_are_larger(modality: str, finding: int, small: str, large: str) -> None:
    variants = {n: v for n, f, v in fine_classes(modality)}
    render = RENDERERS[modality]
    normal, _ = render(KEYS, 0, 32, None)
    size = {n: (render(KEYS, finding, 32, variants[n])[0] - normal).abs().sum((1, 2)) for n in (small, large)}
    assert (size[large] > size[small]).float().mean() >= 0.9


def test_fine_collections_are_deterministic_restylable_and_come_through_load_collection() -> None:
    synth = MedSynth(taxonomy="fine", modalities=["fundus", "histology"])
    col = synth.generate(image_size=16, seed=2, n_per_class_site=1)
    assert col.num_classes == 36 and col.meta["medsynth"]["taxonomy"] == "fine"
    via = load_collection(
        "synthetic", image_size=16, seed=2, n_per_class_site=1, modalities=["fundus", "histology"], taxonomy="fine"
    )
    assert torch.equal(via.images, col.images) and via.class_names == col.class_names
    idx = list(range(0, len(col), 5))
    assert torch.equal(synth.restyle(col, idx, col.sites[idx]), col.images[idx])
    coarse = MedSynth(modalities=["fundus", "histology"]).generate(image_size=16, seed=2, n_per_class_site=1)
    # own patients, except a fine class named like its coarse finding ("histology/adipose": no grades)
    same = [c for c, n in enumerate(col.class_names) if n in coarse.class_names]
    assert [col.class_names[c] for c in same] == ["histology/adipose"]
    own = col.meta["medsynth_key"][~torch.isin(col.labels, torch.tensor(same))]
    assert not set(own.tolist()) & set(coarse.meta["medsynth_key"].tolist())


def test_grades_of_a_finding_are_apart_not_adjacent() -> None:
    """Adjacent halves made "small" vs "large" a coin toss at the boundary; every pair of grades has a gap."""
    for modality in FINE:
        ranges: dict[tuple[int, str, tuple[tuple[str, Any], ...]], set[tuple[float, float]]] = {}
        for _, finding, variant in fine_classes(modality):
            fixed = tuple(sorted((k, v) for k, v in variant.items() if not isinstance(v, tuple)))
            for name, value in variant.items():
                if isinstance(value, tuple):
                    ranges.setdefault((finding, name, fixed), set()).add(value)
        for key, found in ranges.items():
            ordered = sorted(found)
            for (_, hi), (lo, _) in itertools.pairwise(ordered):
                assert lo - hi >= 0.2, (modality, key, ordered)


def test_histology_grades_mean_more_nuclei_on_the_same_patients() -> None:
    """ "dense" means more nuclei in every graded tissue (the renderer's density draw points both ways)."""
    render = RENDERERS["histology"]
    graded: dict[int, dict[str, dict[str, Any]]] = {}
    for name, finding, variant in fine_classes("histology"):
        if "-" in name:
            graded.setdefault(finding, {})[name.rsplit("-", 1)[1]] = variant
    assert sorted(graded) == [1, 2, 3, 4, 5]
    for finding, grades in graded.items():
        # ch0 is brightness minus haematoxylin: more nuclei make a darker patch, for every patient
        mean = {g: render(KEYS, finding, 32, grades[g])[0].mean((1, 2)) for g in ("sparse", "moderate", "dense")}
        assert bool((mean["sparse"] > mean["moderate"]).all()) and bool((mean["moderate"] > mean["dense"]).all())
