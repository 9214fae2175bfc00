"""Inductive by default: an adapted learner's prediction for an image depends on the support set and that
image alone (alone, among 63 others, inside the whole test set, in any order); ``transductive=True`` is a
real switch (predictions then move with the batch)."""

from __future__ import annotations

import pytest
import torch

from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.learners import create_learner, list_learners
from medmeta_lib.models import create_backbone
from tests.conftest import make_collection

TOL = 1e-5


def _learner(name: str, *, transductive: bool):
    torch.manual_seed(0)
    kw = {"num_train_classes": 4} if name.startswith("baseline") else {}
    learner = create_learner(name, create_backbone("conv4", hidden=8), n_way=2, transductive=transductive, **kw)
    if learner.meta_trainable:  # one outer step, so the weights are not the initial ones
        col = make_collection(n_classes=4, per_class=10, size=16, seed=3)
        eps = [EpisodeSampler(col, n_way=2, k_shot=2, q_query=3, seed=1).sample() for _ in range(2)]
        learner.meta_step(eps, torch.optim.Adam(learner.parameters(), lr=1e-2))
    return learner


def _probs(predictor, x: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([predictor(x[i : i + batch]).softmax(-1) for i in range(0, len(x), batch)])


def _task():
    g = torch.Generator().manual_seed(0)
    support_x = torch.rand(10, 1, 16, 16, generator=g)
    support_x[5:] += 0.3  # two visibly different classes
    support_y = torch.arange(2).repeat_interleave(5)
    test_x = torch.rand(150, 1, 16, 16, generator=g)
    test_x[75:] += 0.3
    return support_x.clamp(0, 1), support_y, test_x.clamp(0, 1)


@pytest.mark.parametrize("name", list_learners())
def test_default_predictions_do_not_depend_on_the_batch(name: str) -> None:
    learner = _learner(name, transductive=False)
    assert learner.transductive is False
    sx, sy, x = _task()
    predictor, _ = learner.adapt(sx, sy, steps=3 if name != "protonet" else None)
    whole = _probs(predictor, x, len(x))
    for batch in (1, 64):
        torch.testing.assert_close(_probs(predictor, x, batch), whole, atol=TOL, rtol=0)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(_probs(predictor, x[perm], 64)[perm.argsort()], whole, atol=TOL, rtol=0)
    # and the trace scores queries the same way: step-by-step query probabilities equal the predictor's
    _, trace = learner.adapt(
        sx, sy, steps=3 if name != "protonet" else None, query_x=x[:7], query_y=torch.zeros(7).long()
    )
    assert trace.query_probs is not None
    torch.testing.assert_close(trace.query_probs[-1], whole[:7], atol=TOL, rtol=0)


@pytest.mark.parametrize("name", list_learners())
def test_transductive_option_is_a_real_switch(name: str) -> None:
    learner = _learner(name, transductive=True)
    sx, sy, x = _task()
    predictor, _ = learner.adapt(sx, sy, steps=3 if name != "protonet" else None)
    pairs, whole = _probs(predictor, x, 2), _probs(predictor, x, len(x))  # two images per batch vs all
    assert float((pairs - whole).abs().max()) > 1e-3


def test_transductive_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="transductive"):
        create_learner("protonet", create_backbone("conv4", hidden=8), n_way=2, transductive="yes")  # type: ignore[arg-type]


def test_a_plain_batchnorm_backbone_is_refused_with_a_fix() -> None:
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)
            self.out_features = 4

        def forward(self, x):
            return self.bn(self.conv(x)).mean((2, 3))

    with pytest.raises(ValueError, match="replace_norm"):
        create_learner("protonet", Net(), n_way=2)


def test_the_mode_travels_with_a_checkpoint(tmp_path) -> None:
    from medmeta_lib.training.learner_io import build_learner, load_learner, save_learner

    for transductive in (False, True):
        learner = build_learner(
            "protonet", backbone_kwargs={"hidden": 8}, n_way=2, learner_kwargs={"transductive": transductive}
        )
        path = save_learner(tmp_path / f"{transductive}.safetensors", learner, None, {})
        assert load_learner(path).transductive is transductive
