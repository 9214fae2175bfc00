"""The meta-training stage: a learner meta-trained on MedSynth from a saved encoder, for grey and RGB targets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medmeta_lib.models.backbones import create_backbone
from medmeta_lib.studies.medsynth_metatrain import MEDSYNTH_TASKS, medsynth_train_split, metatrain_on_medsynth
from medmeta_lib.training.checkpoint import save_backbone

SMALL = {"steps": 2, "n_per_class_site": 5, "image_size": 16}


def _encoder(tmp_path: Path, channels: int) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    net = create_backbone("conv4", in_channels=channels, hidden=8, norm="group")
    return save_backbone(tmp_path / f"enc{channels}.safetensors", net), net


@pytest.mark.parametrize(("channels", "n_way"), [(1, 2), (3, 4)])
def test_the_learner_starts_from_the_encoder_trains_and_predicts_the_target_classes(
    tmp_path: Path, channels: int, n_way: int
) -> None:
    path, start = _encoder(tmp_path, channels)
    learner, info = metatrain_on_medsynth(path, n_way=n_way, channels=channels, **SMALL)
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
