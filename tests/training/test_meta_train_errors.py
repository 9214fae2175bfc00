"""Meta-training refuses bad settings with clear errors (``medmeta_lib.training.meta_training``): too many ways, an
encoder of another architecture, unknown learners or arguments, mismatched samplers, another learner's directory and
bad config values. The rest of meta-training is tested in ``test_meta_train.py``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.models import create_backbone
from medmeta_lib.training.checkpoint import load_checkpoint, save_backbone
from medmeta_lib.training.learner_io import build_learner
from medmeta_lib.training.meta_training import MetaTrainConfig, meta_train
from tests.training.meta_setup import (
    FAST,
    HIDDEN,
    K_SHOT,
    N_WAY,
    Q_QUERY,
    same_state,
    state_of,
    task_sampler,
    tiny_learner,
)

pytestmark = pytest.mark.usefixtures("one_thread_module")


# ------------------------------------------------------------------ bad settings → clear errors


@pytest.mark.parametrize(("same_modality", "available"), [(True, 6), (False, 12)])
def test_n_way_larger_than_the_available_classes(same_modality: bool, available: int, cols) -> None:
    n = available + 1
    with pytest.raises(ValueError, match=rf"cannot draw {n}-way .*only {available} class\(es\).*Lower n_way"):
        EpisodeSampler(cols["train"], n, K_SHOT, Q_QUERY, same_modality=same_modality)


def test_encoder_with_other_backbone_arguments_is_refused(tmp_path: Path) -> None:
    path = save_backbone(tmp_path / "encoder.safetensors", create_backbone("conv4", hidden=HIDDEN))
    with pytest.raises(ValueError, match=r"hidden: checkpoint 8, expected 16.*use matching ones"):
        build_learner("protonet", backbone_kwargs={"hidden": 16}, encoder=path)


def test_encoder_of_another_backbone_is_refused(tmp_path: Path) -> None:
    path = save_backbone(tmp_path / "encoder.safetensors", create_backbone("conv4", hidden=HIDDEN))
    with pytest.raises(ValueError, match=r"holds backbone 'conv4'.*expected 'resnet12'.*matching backbone"):
        build_learner("protonet", backbone="resnet12", backbone_kwargs={"widths": (8, 8, 8, 8)}, encoder=path)


def test_unknown_learner_name() -> None:
    with pytest.raises(ValueError, match=r"unknown learner 'mamll'; choose one of \[.*'maml'"):
        build_learner("mamll", backbone_kwargs={"hidden": HIDDEN})


def test_unknown_learner_argument() -> None:
    with pytest.raises(ValueError, match=r"'maml' does not take \['inner_step'\]; it accepts"):
        build_learner("maml", backbone_kwargs={"hidden": HIDDEN}, learner_kwargs={"inner_step": 1})


def test_sampler_n_way_differs_from_learner_n_way(cols, tmp_path: Path) -> None:
    learner = tiny_learner("protonet", cols["train"], n_way=5)
    before = state_of(learner)
    with pytest.raises(ValueError, match=r"3-way.*5-way"):
        meta_train(
            learner,
            task_sampler(cols["train"], n_way=3),
            config=MetaTrainConfig(steps=1),
            out=tmp_path / "o",
            progress=False,
        )
    assert same_state(before, state_of(learner))  # refused before any step
    assert not (tmp_path / "o").exists()


def test_sampler_n_way_mismatch_message_names_the_setting_and_the_fix(cols) -> None:
    learner = tiny_learner("protonet", cols["train"], n_way=5)
    with pytest.raises(ValueError, match=r"draws 3-way episodes but the learner has n_way=5") as info:
        meta_train(learner, task_sampler(cols["train"], n_way=3), config=MetaTrainConfig(steps=1), progress=False)
    msg = str(info.value)  # both fixes, each with the value that would make them agree
    assert "build the learner with n_way=3" in msg and "EpisodeSampler(..., n_way=5)" in msg


@pytest.mark.parametrize(
    ("other", "field"),
    [
        ({"name": "maml"}, "learner"),
        ({"name": "protonet", "n_way": 3}, "n_way"),
        ({"name": "protonet", "hidden": 16}, "backbone"),
    ],
)
def test_resuming_into_a_directory_of_another_learner(other: dict, field: str, cols, tmp_path: Path) -> None:
    cfg = MetaTrainConfig(steps=1, meta_batch=1, val_every=0)
    meta_train(
        tiny_learner("protonet", cols["train"]), task_sampler(cols["train"]), config=cfg, out=tmp_path, progress=False
    )
    saved = load_checkpoint(tmp_path / "last.safetensors")
    n_way = other.get("n_way", N_WAY)
    kw = dict(FAST[other["name"]])
    learner = build_learner(
        other["name"], backbone_kwargs={"hidden": other.get("hidden", HIDDEN)}, n_way=n_way, learner_kwargs=kw
    )
    with pytest.raises(ValueError, match=rf"cannot resume: checkpoint {field} is .*another --out directory"):
        meta_train(learner, task_sampler(cols["train"], n_way=n_way), config=cfg, out=tmp_path, progress=False)
    after = load_checkpoint(tmp_path / "last.safetensors")  # the other run's checkpoint is left alone
    assert after.metadata["spec"]["learner"] == "protonet"
    assert all(torch.equal(saved.tensors[k], after.tensors[k]) for k in saved.tensors)


def test_scratch_into_a_directory_of_another_learner_is_refused(cols, tmp_path: Path) -> None:
    cfg = MetaTrainConfig(steps=1, meta_batch=1, val_every=0)
    meta_train(
        tiny_learner("protonet", cols["train"]), task_sampler(cols["train"]), config=cfg, out=tmp_path, progress=False
    )
    saved = load_checkpoint(tmp_path / "last.safetensors")
    with pytest.raises(
        ValueError, match=r"will not overwrite: checkpoint learner is 'protonet', this run's is 'scratch'"
    ):
        meta_train(
            tiny_learner("scratch", cols["train"]),
            task_sampler(cols["train"]),
            config=cfg,
            out=tmp_path,
            progress=False,
        )
    after = load_checkpoint(tmp_path / "last.safetensors")  # the protonet checkpoint is left as it was
    assert after.metadata["spec"]["learner"] == "protonet"
    assert all(torch.equal(saved.tensors[k], after.tensors[k]) for k in saved.tensors)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"meta_batch": 0}, "meta_batch"),
        ({"lr": 0.0}, "lr"),
        ({"val_every": -1}, "val_every"),
        ({"grad_clip": 0.0}, "grad_clip"),
    ],
)
def test_bad_config_values(kw: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"MetaTrainConfig\.{field} must be"):
        MetaTrainConfig(**kw)
