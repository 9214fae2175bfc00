"""WeightGen: a second network writes the task head; properties the issue names, against independent references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.learners import create_learner
from medmeta_lib.learners.weightgen import supervised_contrastive_loss
from medmeta_lib.models import create_backbone
from medmeta_lib.models.task_norm import context_forward
from tests.conftest import make_collection


def _wg(**kw):
    torch.manual_seed(0)
    return create_learner("weightgen", create_backbone("conv4", hidden=8), n_way=3, **kw)


def _episode(seed=0, n_way=3):
    col = make_collection(n_classes=5, per_class=12, size=16, seed=seed)
    return EpisodeSampler(col, n_way=n_way, k_shot=3, q_query=4, seed=seed).sample()


def _trained_generator(learner):
    # non-zero residual branches and gate, so the properties are tested on a generator that does something
    with torch.no_grad():
        for p in learner.generator.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return learner


def test_generated_head_is_invariant_to_support_order_and_permutes_with_labels() -> None:
    learner = _trained_generator(_wg())
    ep = _episode()
    emb = learner.backbone(ep.support_x)
    w, b = learner.generate(emb, ep.support_y)
    order = torch.randperm(len(ep.support_y))
    w2, b2 = learner.generate(emb[order], ep.support_y[order])
    torch.testing.assert_close(w2, w, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(b2, b, atol=1e-6, rtol=1e-6)
    perm = torch.tensor([2, 0, 1])  # class c is relabelled perm[c]
    w3, b3 = learner.generate(emb, perm[ep.support_y])
    torch.testing.assert_close(w3[perm], w, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(b3[perm], b, atol=1e-6, rtol=1e-6)


def test_identity_generator_is_the_cosine_prototype_classifier_exactly() -> None:
    learner = _wg(generator="identity", scale=7.0)
    ep = _episode(1)
    pred, _ = learner.adapt(ep.support_x, ep.support_y)
    with torch.no_grad():
        # reference written out by hand: class means with the support's statistics, cosine to each, times τ

        s, q = context_forward(learner.backbone, ep.support_x, ep.query_x)
        means = torch.stack([s[ep.support_y == c].mean(0) for c in range(3)])
        cos = torch.stack([F.cosine_similarity(q, m[None, :], dim=1) for m in means], 1)
        torch.testing.assert_close(pred(ep.query_x), 7.0 * cos, atol=1e-5, rtol=1e-5)
    assert torch.equal(pred.params["generated_weights"], pred.params["prototypes"])
    assert learner.generator is None and not any("generator" in n for n, _ in learner.named_parameters())


def test_training_loss_is_infonce_against_the_generated_weights_and_reaches_the_generator() -> None:
    learner = _trained_generator(_wg())
    ep = _episode(2)
    loss, _ = learner.task_loss(ep)

    s, q = context_forward(learner.backbone, ep.support_x, ep.query_x)
    w, b = learner.generate(s, ep.support_y)
    sim = F.normalize(q, dim=1) @ F.normalize(w, dim=1).T * learner.log_scale.exp() + b
    # InfoNCE: -log( exp(s_pos) / Σ_c exp(s_c) ), own class's generated weight as the positive
    ref = -(sim.gather(1, ep.query_y[:, None]).squeeze(1) - torch.logsumexp(sim, 1)).mean()
    torch.testing.assert_close(loss, ref, atol=1e-6, rtol=1e-6)
    grads = torch.autograd.grad(loss, list(learner.generator.parameters()), allow_unused=True)
    assert all(g is not None and bool(g.abs().sum() > 0) for g in grads)


def test_supervised_contrastive_term_matches_a_loop_reference() -> None:
    torch.manual_seed(3)
    e, y = torch.randn(7, 5), torch.tensor([0, 0, 1, 1, 1, 2, 2])
    z = F.normalize(e, dim=1)
    total, n = 0.0, 0
    for i in range(7):
        others = [j for j in range(7) if j != i]
        denom = torch.logsumexp(torch.stack([z[i] @ z[j] / 0.1 for j in others]), 0)
        pos = [j for j in others if y[j] == y[i]]
        total += -sum(float(z[i] @ z[j] / 0.1 - denom) for j in pos) / len(pos)
        n += 1
    assert float(supervised_contrastive_loss(e, y, 0.1)) == pytest.approx(total / n, rel=1e-5)
    # in the learner: the InfoNCE loss plus 0.5 x this term over the episode's support and query embeddings
    learner, ep = _wg(supcon_weight=0.5), _episode()
    with torch.no_grad():
        with_term = learner.task_loss(ep)[0]
        learner.supcon_weight = 0.0
        without = learner.task_loss(ep)[0]
        s, q = context_forward(learner.backbone, ep.support_x, ep.query_x)
        term = supervised_contrastive_loss(torch.cat([s, q]), torch.cat([ep.support_y, ep.query_y]))
    torch.testing.assert_close(with_term - without, 0.5 * term, atol=1e-5, rtol=1e-5)
    assert float(term) > 0


def test_generated_then_refined_and_any_number_of_classes() -> None:
    learner = _wg(refine_steps=3, refine_lr=0.5)
    ep = _episode(4)
    _, trace = learner.adapt(ep.support_x, ep.support_y, query_x=ep.query_x, query_y=ep.query_y)
    assert trace.steps == [0, 1, 2, 3, 4]
    assert trace.query_acc[0] is not None and trace.support_loss[0] == pytest.approx(
        float(torch.log(torch.tensor(3.0)))
    )
    assert trace.support_loss[-1] < trace.support_loss[1]  # refinement lowers the support loss
    _, only = learner.adapt(ep.support_x, ep.support_y, steps=1)
    assert only.steps == [0, 1]
    learner.set_n_way(5)  # the generator has no per-class parameters
    ep5 = _episode(5, n_way=5)
    pred5, _ = learner.adapt(ep5.support_x, ep5.support_y)
    assert pred5(ep5.query_x).shape == (len(ep5.query_y), 5)


def test_frozen_backbone_trains_only_the_generator_and_bad_settings_are_refused(tmp_path) -> None:
    learner = _wg(freeze_backbone=True)
    before = {k: v.clone() for k, v in learner.backbone.state_dict().items()}
    learner.meta_step([_episode(6)], torch.optim.Adam(learner.parameters(), lr=1e-2))
    assert all(torch.equal(v, learner.backbone.state_dict()[k]) for k, v in before.items())
    for bad, match in (({"generator": "mlp"}, "generator must be one of"), ({"supcon_weight": -1}, "supcon_weight")):
        with pytest.raises(ValueError, match=match):
            _wg(**bad)
    from medmeta_lib.training.checkpoint import save_backbone
    from medmeta_lib.training.learner_io import build_learner

    enc = save_backbone(tmp_path / "enc.safetensors", create_backbone("resnet12", widths=(4, 4, 8, 8)))
    with pytest.raises(ValueError, match="resnet12"):
        build_learner("weightgen", backbone="conv4", encoder=enc, n_way=3)
