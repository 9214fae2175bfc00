"""The meta-training stage: a learner meta-trained on MedSynth from a saved encoder, for grey and RGB targets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.models.backbones import create_backbone
from medmeta_lib.studies import medsynth_metatrain
from medmeta_lib.studies.medsynth_metatrain import (
    MEDSYNTH_TASKS,
    medsynth_train_split,
    metatrain_on_medsynth,
    metatrain_on_tasks,
)
from medmeta_lib.training.checkpoint import save_backbone

SMALL = {"steps": 2, "n_per_class_site": 5, "image_size": 16}


def _encoder(tmp_path: Path, channels: int) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    net = create_backbone("conv4", in_channels=channels, hidden=8, norm="group")
    return save_backbone(tmp_path / f"enc{channels}.safetensors", net), net


@pytest.mark.parametrize(("channels", "n_way"), [(1, 2), (3, 4)])
def test_the_learner_starts_from_the_encoder_trains_and_predicts_the_target_classes(
    tmp_path: Path, channels: int, n_way: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, start = _encoder(tmp_path, channels)
    at_start: list[dict[str, torch.Tensor]] = []
    real = medsynth_metatrain.meta_train

    def spy(learner: Any, *args: Any, **kw: Any) -> Any:
        at_start.append({k: v.clone() for k, v in learner.backbone.state_dict().items()})
        return real(learner, *args, **kw)

    monkeypatch.setattr(medsynth_metatrain, "meta_train", spy)
    learner, info = metatrain_on_medsynth(path, n_way=n_way, channels=channels, **SMALL)
    assert len(at_start) == 1 and at_start[0].keys() == start.state_dict().keys()
    assert all(
        torch.equal(at_start[0][k], v) for k, v in start.state_dict().items()
    )  # meta-training began at the encoder
    assert learner.n_way == n_way and learner.spec["encoder"] == str(path)
    assert info["steps"] == 2 and info["tasks"] == MEDSYNTH_TASKS and info["final_loss"] > 0
    moved = [not torch.equal(a, b) for a, b in zip(start.state_dict().values(), learner.backbone.state_dict().values())]
    assert any(moved)  # meta-training changed the encoder's weights
    sx = torch.rand(n_way * 2, channels, 16, 16)
    pred, _ = learner.adapt(sx, torch.arange(n_way).repeat_interleave(2))
    with torch.no_grad():
        assert pred(torch.rand(5, channels, 16, 16)).shape == (5, n_way)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    path, _ = _encoder(tmp_path, 1)
    with pytest.raises(ValueError, match="n_way must be an integer >= 2"):
        metatrain_on_medsynth(path, n_way=1)
    with pytest.raises(ValueError, match="channels must be 1"):
        metatrain_on_medsynth(path, n_way=2, channels=2)
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        metatrain_on_medsynth(path, n_way=2, steps=0)
    with pytest.raises(ValueError, match="in_channels"):  # a greyscale encoder cannot read the RGB copies
        metatrain_on_medsynth(path, n_way=2, channels=3, **SMALL)


def test_the_medsynth_images_match_the_target_size_and_channels() -> None:
    grey = medsynth_train_split(image_size=16, n_per_class_site=1, seed=3)
    rgb = medsynth_train_split(image_size=16, channels=3, n_per_class_site=1, seed=3)
    assert grey.images.shape == (120, 1, 16, 16) and rgb.images.shape == (120, 3, 16, 16)
    assert all(torch.equal(rgb.images[:, c], grey.images[:, 0]) for c in range(3))  # the grey image, repeated
    assert torch.equal(rgb.labels, grey.labels) and grey.split == "train"
    with pytest.raises(ValueError, match="channels must be 1"):
        medsynth_train_split(channels=2)
    with pytest.raises(ValueError, match="n_per_class_site must be an integer >= 1"):
        medsynth_train_split(n_per_class_site=0)


def test_the_fine_taxonomy_splits_each_finding_and_keeps_the_modalities(tmp_path: Path) -> None:
    coarse = medsynth_train_split(image_size=16, n_per_class_site=1, seed=3)
    fine = medsynth_train_split(image_size=16, n_per_class_site=1, seed=3, taxonomy="fine")
    assert (coarse.num_classes, fine.num_classes) == (30, 96) and len(fine) == 96 * 4
    assert set(fine.class_modalities or ()) == set(coarse.class_modalities or ())  # tasks stay within a modality
    assert any(n.startswith("chest_xray/pneumonia-") for n in fine.class_names)
    with pytest.raises(ValueError, match="taxonomy must be one of"):
        medsynth_train_split(taxonomy="finest")
    path, _ = _encoder(tmp_path, 1)
    _, info = metatrain_on_medsynth(path, n_way=2, taxonomy="fine", **SMALL)
    assert info["data"] == f"MedSynth train, {96 * 4 * SMALL['n_per_class_site']} images, 96 classes, 4 sites"


def test_meta_training_on_any_grouped_collection_draws_its_tasks_and_returns_the_target_ways(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, start = _encoder(tmp_path, 1)
    samplers: list[EpisodeSampler] = []

    def recorded(*args: Any, **kwargs: Any) -> EpisodeSampler:
        samplers.append(EpisodeSampler(*args, **kwargs))
        return samplers[-1]

    monkeypatch.setattr(medsynth_metatrain, "EpisodeSampler", recorded)
    torch.manual_seed(0)
    tasks = ImageCollection(
        images=torch.rand(240, 1, 16, 16),
        labels=torch.arange(12).repeat_interleave(20),
        class_names=tuple(f"c{i}" for i in range(12)),
        class_modalities=("a",) * 6 + ("b",) * 6,  # two groups of six classes: each task's five come from one
        source="clusters",
    )
    learner, info = metatrain_on_tasks(path, tasks, n_way=3, steps=2)
    assert [s.same_modality for s in samplers] == [True]  # a task's classes come from one group
    groups = tasks.class_modalities or ()
    assert all(len({groups[c] for c in samplers[0].sample().classes}) == 1 for _ in range(20))
    assert learner.n_way == 3 and info["data"] == "clusters train, 240 images, 12 classes" and info["steps"] == 2
    assert any(
        not torch.equal(a, b) for a, b in zip(start.state_dict().values(), learner.backbone.state_dict().values())
    )
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        metatrain_on_tasks(path, tasks, n_way=2, steps=0)
    two = ImageCollection(
        images=torch.rand(60, 1, 16, 16),
        labels=torch.arange(2).repeat_interleave(30),
        class_names=("a", "b"),
        source="mine.csv",
    )
    with pytest.raises(
        ValueError,
        match=r"mine.csv: cannot draw 5-way 5-shot 15-query episodes: only 2 class\(es\) have at least K\+Q=20 .*"
        r"metatrain_on_tasks fixes that task shape",
    ):
        metatrain_on_tasks(path, two, n_way=2, steps=1)
    split = replace(tasks, class_modalities=("a", "b", "c") * 4)  # twelve classes, but four per group
    with pytest.raises(ValueError, match=r"only 4 class\(es\) of one modality .* metatrain_on_tasks fixes"):
        metatrain_on_tasks(path, split, n_way=2, steps=1)
