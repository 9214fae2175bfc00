"""Test-time adaptation of every learner: it helps on an easy task, is deterministic, never mutates
the meta-parameters, and its trace/predictor follow the contract."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.learners import AdaptationTrace, create_learner, list_learners
from medmeta_lib.models.task_norm import TaskBatchNorm2d
from tests.conftest import make_collection

ALL = ["maml", "fomaml", "metasgd", "anil", "protonet", "baseline", "baseline++", "scratch", "weightgen"]
N_CLASSES = 6


class SmallNet(nn.Module):
    """Two conv-BN-ReLU-pool blocks and global average pooling (a miniature Conv4)."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        blocks = []
        for cin in (1, c):
            blocks += [nn.Conv2d(cin, c, 3, padding=1), TaskBatchNorm2d(c), nn.ReLU()]
            blocks.append(nn.MaxPool2d(2))
        self.net = nn.Sequential(*blocks)
        self.out_features = c

    def forward(self, x):
        return self.net(x).mean((2, 3))


def backbone(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return SmallNet()


def make(name: str, n_way: int = 3, seed: int = 0, **kw):
    if name.startswith("baseline"):
        kw.setdefault("num_train_classes", N_CLASSES)
    return create_learner(name, backbone(seed), n_way=n_way, **kw)


@pytest.fixture(scope="module")
def easy():
    """Classes differ by mean intensity: easy for any encoder, even a random one."""
    col = make_collection(n_classes=N_CLASSES, per_class=20, size=8, seed=1)
    return EpisodeSampler(col, n_way=3, k_shot=5, q_query=8, seed=3)


def snapshot(learner):
    return {k: v.detach().clone() for k, v in learner.state_dict().items()}


def test_registry_lists_every_learner():
    assert list_learners() == sorted(ALL)


@pytest.mark.parametrize("name", ALL)
def test_adaptation_raises_query_accuracy_on_an_easy_task(name, easy):
    # an untrained 8-channel encoder has small features: the gradient-based learners need a larger step
    # than their default (0.01, tuned for meta-trained Conv4-64 features) to fit within eval_steps=10
    kw = {"inner_lr": 0.5} if name in ("maml", "fomaml", "metasgd", "anil") else {}
    learner = make(name, **kw)
    ep = easy.sample()
    _, trace = learner.adapt(ep.support_x, ep.support_y, query_x=ep.query_x, query_y=ep.query_y)
    assert trace.query_acc[0] is not None and trace.query_acc[-1] is not None
    assert trace.query_acc[-1] > trace.query_acc[0] + 0.3
    assert trace.query_acc[-1] >= 0.8
    assert trace.support_loss[-1] < trace.support_loss[0]


@pytest.mark.parametrize("name", ALL)
def test_adapt_and_evaluate_never_change_the_meta_parameters(name, easy):
    learner = make(name)
    before = snapshot(learner)
    ep = easy.sample()
    learner.adapt(ep.support_x, ep.support_y, query_x=ep.query_x, query_y=ep.query_y, record_params=True)
    learner.evaluate_episode(ep)
    after = snapshot(learner)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in learner.parameters())


@pytest.mark.parametrize("name", ALL)
def test_trace_predictor_and_evaluation_follow_the_contract(name, easy):
    learner = make(name)
    ep = easy.sample()
    steps = 1 if name == "protonet" else 3
    pred, trace = learner.adapt(
        ep.support_x,
        ep.support_y,
        steps=steps,
        query_x=ep.query_x,
        query_y=ep.query_y,
        record_params=True,
        record_embeddings=True,
    )
    assert isinstance(trace, AdaptationTrace)
    n = steps + 1
    assert trace.steps == list(range(n))
    for field in ("support_loss", "support_acc", "query_loss", "query_acc"):
        assert len(getattr(trace, field)) == n
    assert trace.params is not None and len(trace.params) == n
    assert all(isinstance(v, torch.Tensor) and not v.requires_grad for p in trace.params for v in p.values())
    assert trace.support_emb is not None and len(trace.support_emb) == n
    assert trace.support_emb[0].shape == (len(ep.support_y), learner.feature_dim)
    assert trace.query_emb is not None and trace.query_emb[-1].shape == (len(ep.query_y), learner.feature_dim)
    assert trace.query_probs is not None and trace.query_probs[-1].shape == (len(ep.query_y), 3)
    assert torch.allclose(trace.query_probs[-1].sum(1), torch.ones(len(ep.query_y)))
    json.dumps(trace.to_dict(include_probs=True))
    logits = pred(ep.query_x)
    assert logits.shape == (len(ep.query_y), 3)
    assert torch.allclose(pred.classify(pred.embed(ep.query_x)), logits)
    # the predictor is the adapted model of the last trace step
    assert float(F.cross_entropy(logits, ep.query_y)) == pytest.approx(trace.query_loss[-1], rel=1e-5)
    assert torch.allclose(logits.softmax(1), trace.query_probs[-1], atol=1e-6)
    # input gradients (saliency) are available and do not reach the meta-parameters
    x = ep.query_x[:2].clone().requires_grad_()
    pred(x).sum().backward()
    assert x.grad is not None and all(p.grad is None for p in learner.parameters())
    # evaluate_episode = adapt on the support (no query in the loop), score the query
    res = learner.evaluate_episode(ep, steps=steps)
    assert set(res) >= {"acc", "loss", "probs"}
    assert res["acc"] == pytest.approx(trace.query_acc[-1])
    assert res["loss"] == pytest.approx(trace.query_loss[-1], rel=1e-5)
    assert res["probs"].shape == (len(ep.query_y), 3)
    # without a query the trace has None entries for it
    _, t2 = learner.adapt(ep.support_x, ep.support_y, steps=steps)
    assert t2.query_acc == [None] * n and t2.query_probs is None
    assert t2.support_loss == pytest.approx(trace.support_loss)


@pytest.mark.parametrize("name", ALL)
def test_adaptation_is_deterministic(name, easy):
    ep = easy.sample()
    out = []
    for _ in range(2):
        learner = make(name, seed=5)
        pred, trace = learner.adapt(ep.support_x, ep.support_y, steps=2, query_x=ep.query_x, query_y=ep.query_y)
        out.append((pred(ep.query_x).detach(), trace.to_dict()))
    assert torch.equal(out[0][0], out[1][0])
    assert out[0][1] == out[1][1]


@pytest.mark.parametrize("name", [n for n in ALL if n != "scratch"])
def test_meta_training_lowers_the_loss_on_easy_tasks(name, easy):
    learner = make(name)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-2)
    batch = [easy.sample() for _ in range(2)]
    first = learner.meta_loss(batch)[1]["loss"]
    for _ in range(8):
        stats = learner.meta_step(batch, opt)
        assert set(stats) >= {"loss", "acc"}
    assert learner.meta_loss(batch)[1]["loss"] < first


def test_baseline_meta_loss_uses_global_class_ids(easy):
    learner = make("baseline")
    eps = [easy.sample(), easy.sample()]
    loss, stats = learner.meta_loss(eps)
    x = torch.cat([t for e in eps for t in (e.support_x, e.query_x)])
    y = torch.cat([torch.tensor(e.classes)[t] for e in eps for t in (e.support_y, e.query_y)])
    logits = learner.classifier(learner.backbone(x))
    assert logits.shape == (len(y), N_CLASSES)
    assert float(loss.detach()) == pytest.approx(float(F.cross_entropy(logits, y).detach()), rel=1e-6)
    assert 0.0 <= stats["acc"] <= 1.0


def test_scratch_is_not_meta_trainable_and_trains_a_copy(easy):
    learner = make("scratch")
    assert learner.meta_trainable is False
    with pytest.raises(RuntimeError, match="not meta-trainable"):
        learner.meta_step([easy.sample()], torch.optim.SGD(learner.parameters(), lr=0.1))
    ep = easy.sample()
    pred, _ = learner.adapt(ep.support_x, ep.support_y, steps=3)
    assert not torch.equal(pred.params["backbone.net.0.weight"], learner.backbone.net[0].weight)


def test_zero_head_learners_evaluate_with_another_n_way(easy):
    col = make_collection(n_classes=N_CLASSES, per_class=20, size=8, seed=1)
    ep2 = EpisodeSampler(col, n_way=2, k_shot=3, q_query=4, seed=0).sample()
    for name in ALL:
        learner = make(name)
        learner.set_n_way(2)
        assert learner.evaluate_episode(ep2, steps=2)["probs"].shape == (8, 2)
    learned = make("maml", head_init="learned")
    with pytest.raises(ValueError, match="n_way"):
        learned.set_n_way(2)


@pytest.mark.parametrize("name", [n for n in ALL if n != "scratch"])
def test_meta_loss_works_under_no_grad_for_validation(name, easy):
    learner = make(name)
    batch = [easy.sample(), easy.sample()]
    loss, stats = learner.meta_loss(batch)
    with torch.no_grad():
        loss_ng, stats_ng = learner.meta_loss(batch)
    assert not loss_ng.requires_grad
    assert float(loss_ng) == pytest.approx(float(loss.detach()), rel=1e-5)
    assert stats_ng["acc"] == pytest.approx(stats["acc"])
