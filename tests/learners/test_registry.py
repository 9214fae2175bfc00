"""The learner registry and bad settings: every mistake is a ValueError that names the field."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.learners import (
    FOMAML,
    MAML,
    Learner,
    MetaSGD,
    create_learner,
    learner_kwargs,
    list_learners,
    register_learner,
)
from medmeta_lib.models.task_norm import TaskBatchNorm2d
from tests.conftest import make_collection

GRADIENT = ["maml", "fomaml", "metasgd", "anil"]


class Net(nn.Module):
    def __init__(self, running_stats: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4) if running_stats else TaskBatchNorm2d(4)
        self.out_features = 4

    def forward(self, x):
        return torch.relu(self.bn(self.conv(x))).mean((2, 3))


def make(name, n_way=2, **kw):
    if name.startswith("baseline"):
        kw.setdefault("num_train_classes", 4)
    return create_learner(name, Net(), n_way=n_way, **kw)


@pytest.fixture(scope="module")
def episode():
    col = make_collection(n_classes=4, per_class=8, size=6)
    return EpisodeSampler(col, n_way=3, k_shot=2, q_query=2, seed=0).sample()


def test_names_and_aliases():
    names = list_learners()
    assert {"maml", "fomaml", "metasgd", "anil", "protonet", "baseline", "baseline++", "scratch"} <= set(names)
    assert type(make("maml")) is MAML and make("maml").first_order is False
    fo = make("fomaml")
    assert isinstance(fo, FOMAML) and fo.first_order is True
    assert isinstance(make("metasgd"), MetaSGD)
    assert learner_kwargs("maml") == {
        "inner_steps": 5,
        "inner_lr": 0.01,
        "first_order": False,
        "eval_steps": 10,
        "head_init": "zero",
    }
    for name in names:
        assert isinstance(make(name), Learner)
        assert make(name).name == name


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ValueError, match=r"unknown learner 'mamll'.*'maml'"):
        create_learner("mamll", Net(), n_way=2)


def test_unknown_keyword_lists_the_accepted_ones():
    with pytest.raises(ValueError, match=r"does not take \['inner_lrr'\].*inner_lr"):
        make("maml", inner_lrr=0.1)
    with pytest.raises(ValueError, match="inner_lr"):
        make("protonet", inner_lr=0.1)


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_learner("maml")(type("Other", (MAML,), {}))


@pytest.mark.parametrize("name", GRADIENT)
@pytest.mark.parametrize("lr", [0.0, -0.1, float("nan"), float("inf")])
def test_inner_lr_must_be_positive(name, lr):
    with pytest.raises(ValueError, match="inner_lr"):
        make(name, inner_lr=lr)


@pytest.mark.parametrize("name", GRADIENT)
def test_bad_gradient_learner_settings(name):
    with pytest.raises(ValueError, match="inner_steps"):
        make(name, inner_steps=-1)
    with pytest.raises(ValueError, match="inner_steps"):
        make(name, inner_steps=1.5)
    with pytest.raises(ValueError, match="eval_steps"):
        make(name, eval_steps=-2)
    with pytest.raises(ValueError, match="head_init"):
        make(name, head_init="random")


@pytest.mark.parametrize("name", ["baseline", "baseline++", "scratch"])
def test_bad_finetune_settings(name):
    with pytest.raises(ValueError, match="adapt_lr"):
        make(name, adapt_lr=0)
    with pytest.raises(ValueError, match="adapt_weight_decay"):
        make(name, adapt_weight_decay=-1)


def test_baseline_needs_the_number_of_training_classes(episode):
    with pytest.raises(ValueError, match="num_train_classes"):
        create_learner("baseline", Net(), n_way=3)
    small = make("baseline", n_way=3, num_train_classes=2)
    with pytest.raises(ValueError, match="num_train_classes"):
        small.meta_loss([episode])
    with pytest.raises(ValueError, match="scale"):
        make("baseline++", scale=0)


def test_fomaml_cannot_be_second_order():
    with pytest.raises(ValueError, match="first_order"):
        make("fomaml", first_order=False)


@pytest.mark.parametrize("name", list_learners())
def test_n_way_mismatch_and_negative_steps(name, episode):
    learner = make(name, n_way=2)  # the episode is 3-way
    if learner.meta_trainable and name not in ("baseline", "baseline++"):
        with pytest.raises(ValueError, match="n_way"):
            learner.meta_loss([episode])
    with pytest.raises(ValueError, match="n_way"):
        learner.evaluate_episode(episode)
    with pytest.raises(ValueError, match="n_way"):
        learner.adapt(episode.support_x, episode.support_y)
    right = make(name, n_way=3)
    with pytest.raises(ValueError, match="steps"):
        right.adapt(episode.support_x, episode.support_y, steps=-1)
    with pytest.raises(ValueError, match="query"):
        right.adapt(episode.support_x, episode.support_y, query_x=episode.query_x)
    with pytest.raises(ValueError, match="n_way"):
        make(name, n_way=1)
    if right.meta_trainable:
        with pytest.raises(ValueError, match="empty"):
            right.meta_loss([])


@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd"])
def test_batchnorm_with_running_stats_is_rejected(name):
    with pytest.raises(ValueError, match="track_running_stats"):
        create_learner(name, Net(running_stats=True), n_way=2)


def test_backbone_needs_out_features():
    with pytest.raises(ValueError, match="out_features"):
        create_learner("protonet", nn.Conv2d(1, 2, 3), n_way=2)


@pytest.mark.parametrize("name", list_learners())
def test_images_the_backbone_cannot_read_are_refused_by_name(name):
    """RGB to a greyscale backbone, or images without the batch axis: a ValueError, not a torch shape error."""
    from medmeta_lib.models import create_backbone

    episode = EpisodeSampler(make_collection(n_classes=3, per_class=4, size=28), n_way=3, k_shot=2, q_query=2).sample()
    kw = {"num_train_classes": 4} if name.startswith("baseline") else {}
    learner = create_learner(name, create_backbone("conv4", in_channels=1, hidden=8), n_way=3, **kw)
    sx, sy = episode.support_x, episode.support_y
    with pytest.raises(
        ValueError, match=rf"{re.escape(name)}: support_x must be \(N, 1, H, W\) images .*\(6, 3, 28, 28\)"
    ):
        learner.adapt(sx.expand(-1, 3, -1, -1), sy)
    with pytest.raises(ValueError, match=r"support_x must be \(N, 1, H, W\) images .*got \(6, 28, 28\)"):
        learner.adapt(sx[:, 0], sy)
    with pytest.raises(ValueError, match=r"query_x must be \(N, 1, H, W\) images"):
        learner.adapt(sx, sy, query_x=episode.query_x.expand(-1, 3, -1, -1), query_y=episode.query_y)
    learner.adapt(sx, sy, steps=1)  # the right images still adapt
