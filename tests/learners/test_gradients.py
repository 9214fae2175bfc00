"""Gradient correctness of the gradient-based learners, in float64 on tiny nets and episodes.

The references here are written independently of the library: a hand-written functional forward
of the tiny net (F.conv2d / F.batch_norm / F.linear on a list of tensors; queries normalised with the
support set's batch statistics, written out by hand, or with their own in transductive mode) and a
plain ``torch.autograd.grad(create_graph=True)`` loop, plus central finite differences of the
library's own meta-loss along random directions.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.learners import create_learner
from medmeta_lib.learners.protonet import prototype_logits
from medmeta_lib.models.task_norm import TaskBatchNorm2d, context_forward
from tests.conftest import make_collection

RTOL = 1e-6


class TinyNet(nn.Module):
    """conv-BN-ReLU-maxpool, conv-BN-ReLU, global average pool; BN without running statistics."""

    def __init__(self, c: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c, 3, padding=1)
        self.bn1 = TaskBatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = TaskBatchNorm2d(c)
        self.out_features = c

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        return F.relu(self.bn2(self.conv2(h))).mean((2, 3))


NAMES = ["conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "conv2.weight", "conv2.bias", "bn2.weight", "bn2.bias"]


def _ref_bn(h: torch.Tensor, g: torch.Tensor, b: torch.Tensor, stats) -> torch.Tensor:
    if stats is None:
        return F.batch_norm(h, None, None, g, b, training=True)
    m, v = stats
    return (h - m[None, :, None, None]) / torch.sqrt(v[None, :, None, None] + 1e-5) * g[None, :, None, None] + b[
        None, :, None, None
    ]


def _stats(h: torch.Tensor):
    return h.mean((0, 2, 3)), ((h - h.mean((0, 2, 3), keepdim=True)) ** 2).mean((0, 2, 3))


def ref_body(w: list[torch.Tensor], x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """TinyNet written out by hand; with ``context``, both BN layers use the context's batch statistics."""
    s1 = s2 = None
    if context is not None:
        h = F.conv2d(context, w[0], w[1], padding=1)
        s1 = _stats(h)
        h = F.max_pool2d(F.relu(_ref_bn(h, w[2], w[3], None)), 2)
        s2 = _stats(F.conv2d(h, w[4], w[5], padding=1))
    h = F.conv2d(x, w[0], w[1], padding=1)
    h = F.max_pool2d(F.relu(_ref_bn(h, w[2], w[3], s1)), 2)
    h = F.conv2d(h, w[4], w[5], padding=1)
    return F.relu(_ref_bn(h, w[6], w[7], s2)).mean((2, 3))


def ref_forward(w: list[torch.Tensor], x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
    """TinyNet + linear head written out by hand; w = 8 body tensors + head W, b."""
    return F.linear(ref_body(w, x, context), w[8], w[9])


def ref_meta_loss(theta, episodes, steps, lr, *, first_order=False, n_way=2, body_lr=None, transductive=False):
    """Plain autograd reference of the MAML outer loss.

    theta = 8 body tensors + head W (n_way, D), b (n_way,); or only the 8 body tensors for a zero head.
    """
    total = 0.0
    for ep in episodes:
        if len(theta) == 10:
            head = theta[8:]
        else:
            head = [torch.zeros(n_way, theta[6].shape[0], dtype=theta[0].dtype, requires_grad=True)]
            head.append(torch.zeros(n_way, dtype=theta[0].dtype, requires_grad=True))
        fast = [*theta[:8], *head]
        for _ in range(steps):
            loss = F.cross_entropy(ref_forward(fast, ep.support_x), ep.support_y)
            grads = torch.autograd.grad(loss, fast, create_graph=not first_order)
            lrs = [lr if body_lr is None else body_lr] * 8 + [lr, lr]
            fast = [f - a * g for f, g, a in zip(fast, grads, lrs)]
        context = None if transductive else ep.support_x
        total = total + F.cross_entropy(ref_forward(fast, ep.query_x, context), ep.query_y)
    return total / len(episodes)


def episodes(n=2, n_way=2, k=2, q=2, seed=0):
    col = make_collection(n_classes=3, per_class=8, size=6, seed=seed)
    s = EpisodeSampler(col, n_way=n_way, k_shot=k, q_query=q, seed=seed)
    return [
        dataclasses.replace(e, support_x=e.support_x.double(), query_x=e.query_x.double())
        for e in (s.sample() for _ in range(n))
    ]


def make(name, seed=0, **kw):
    if name != "protonet":
        kw.setdefault("head_init", "learned")
        kw.setdefault("inner_lr", 0.3)
    torch.manual_seed(seed)
    learner = create_learner(name, TinyNet(), n_way=2, **kw).double()
    with torch.no_grad():
        for n, p in learner.named_parameters():
            if n.startswith("head_"):  # a larger learned head than the default init, for stronger signals
                p.copy_(0.5 * torch.randn_like(p))
            if n.startswith("inner_lrs."):  # exactly the float64 value (created in float32)
                p.fill_(kw["inner_lr"])
    return learner


def params_of(learner):
    return [p for _, p in learner.named_parameters()]


def theta_of(learner):
    body = dict(learner.backbone.named_parameters())
    head = [learner.head_weight, learner.head_bias] if learner.head_init == "learned" else []
    return [body[n] for n in NAMES] + head


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def directional_fd(learner, eps_list, v, h=1e-6) -> float:
    # h small enough that no ReLU/max-pool switches inside ±h (conv4 has activations within 1e-5 of a kink),
    # large enough that float64 round-off (~1e-16/h) stays far below the 1e-6 tolerance
    ps = params_of(learner)
    with torch.no_grad():
        base = [p.clone() for p in ps]
    out = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for p, p0, vi in zip(ps, base, v):
                p.copy_(p0 + sign * h * vi)
        out.append(float(learner.meta_loss(eps_list)[0].detach()))
    with torch.no_grad():
        for p, p0 in zip(ps, base):
            p.copy_(p0)
    return (out[0] - out[1]) / (2 * h)


def check_fd(learner, eps_list, n_dirs=3, seed=0):
    loss, _ = learner.meta_loss(eps_list)
    grads = torch.autograd.grad(loss, params_of(learner))
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_dirs):
        v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params_of(learner)]
        analytic = float(sum((gi * vi).sum() for gi, vi in zip(grads, v)))
        fd = directional_fd(learner, eps_list, v)
        assert abs(fd - analytic) <= RTOL * abs(analytic), (fd, analytic)


@pytest.mark.parametrize("transductive", [False, True])
@pytest.mark.parametrize("head_init", ["learned", "zero"])
def test_maml_second_order_matches_plain_autograd_reference(head_init, transductive):
    learner = make("maml", inner_steps=3, inner_lr=0.3, head_init=head_init, transductive=transductive)
    eps_list = episodes()
    loss, stats = learner.meta_loss(eps_list)
    theta = theta_of(learner)
    ref = ref_meta_loss(theta, eps_list, 3, 0.3, transductive=transductive)
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    assert stats["loss"] == pytest.approx(float(ref.detach()), rel=1e-12)
    g = flat(torch.autograd.grad(loss, theta))
    g_ref = flat(torch.autograd.grad(ref, theta))
    assert rel_err(g, g_ref) <= RTOL
    assert g.abs().sum() > 0


@pytest.mark.parametrize("head_init", ["learned", "zero"])
def test_maml_second_order_matches_finite_differences(head_init):
    learner = make("maml", inner_steps=2, inner_lr=0.3, head_init=head_init)
    assert any(n.startswith("head_") for n, _ in learner.named_parameters()) == (head_init == "learned")
    check_fd(learner, episodes())


def test_meta_step_gradient_equals_meta_loss_gradient():
    learner = make("maml", inner_steps=2, inner_lr=0.3)
    eps_list = episodes(n=3)
    loss, _ = learner.meta_loss(eps_list)
    g = flat(torch.autograd.grad(loss, params_of(learner)))
    stats = learner.meta_step(eps_list, torch.optim.SGD(learner.parameters(), lr=0.0))
    g_step = flat([p.grad for p in params_of(learner)])
    assert rel_err(g_step, g) <= 1e-12
    assert stats["loss"] == pytest.approx(float(loss.detach()), rel=1e-12)


def test_fomaml_gradient_is_query_gradient_at_adapted_weights_and_differs_from_maml():
    eps_list = episodes()
    fo = make("fomaml", inner_steps=3, inner_lr=0.3, head_init="learned")
    loss, _ = fo.meta_loss(eps_list)
    theta = theta_of(fo)
    g_fo = flat(torch.autograd.grad(loss, theta))
    # reference: adapt with detached gradient steps, then the query-loss gradient at φ
    expected = [torch.zeros_like(t) for t in theta]
    for ep in eps_list:
        fast = [t.detach().clone().requires_grad_() for t in theta]
        for _ in range(3):
            gr = torch.autograd.grad(F.cross_entropy(ref_forward(fast, ep.support_x), ep.support_y), fast)
            fast = [(f - 0.3 * gi).detach().requires_grad_() for f, gi in zip(fast, gr)]
        gq = torch.autograd.grad(F.cross_entropy(ref_forward(fast, ep.query_x, ep.support_x), ep.query_y), fast)
        expected = [e + gi / len(eps_list) for e, gi in zip(expected, gq)]
    assert rel_err(g_fo, flat(expected)) <= RTOL
    # and it is not the second-order gradient
    so = make("maml", inner_steps=3, inner_lr=0.3, head_init="learned")
    g_so = flat(torch.autograd.grad(so.meta_loss(eps_list)[0], theta_of(so)))
    assert torch.equal(flat(theta_of(so)).detach(), flat(theta).detach())
    assert rel_err(g_fo, g_so) > 1e-3


def test_metasgd_learning_rates_are_parameters_with_gradients():
    learner = make("metasgd", inner_steps=2, inner_lr=0.3)
    lr_params = [p for n, p in learner.named_parameters() if n.startswith("inner_lrs.")]
    assert len(lr_params) == len(NAMES) + 2
    ids = {id(p) for p in learner.parameters()}
    assert all(id(p) in ids for p in lr_params)
    body = dict(learner.backbone.named_parameters())
    for n in NAMES:
        assert learner.inner_lrs["backbone-" + n.replace(".", "-")].shape == body[n].shape
    loss, _ = learner.meta_loss(episodes())
    grads = torch.autograd.grad(loss, lr_params)
    assert all(bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0 for g in grads)
    check_fd(learner, episodes())


def test_metasgd_with_constant_rates_equals_maml():
    eps_list = episodes()
    msgd = make("metasgd", inner_steps=2, inner_lr=0.3)
    maml = make("maml", inner_steps=2, inner_lr=0.3)
    g1 = torch.autograd.grad(msgd.meta_loss(eps_list)[0], theta_of(msgd))
    g2 = torch.autograd.grad(maml.meta_loss(eps_list)[0], theta_of(maml))
    assert rel_err(flat(g1), flat(g2)) <= 1e-12


def test_anil_equals_maml_with_frozen_backbone_in_the_inner_loop_and_finite_differences():
    eps_list = episodes()
    anil = make("anil", inner_steps=3, inner_lr=0.3)
    loss, _ = anil.meta_loss(eps_list)
    theta = theta_of(anil)
    g = flat(torch.autograd.grad(loss, theta))
    # reference: the plain loop with a zero inner step size on the backbone (inner loop on the head only);
    # the backbone still gets its gradient through the outer loop (the features)
    ref = ref_meta_loss(theta, eps_list, 3, 0.3, body_lr=0.0)
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    g_ref = flat(torch.autograd.grad(ref, theta))
    assert rel_err(g, g_ref) <= RTOL
    n_body = sum(p.numel() for p in theta[:8])
    assert float(g[:n_body].abs().sum()) > 0
    check_fd(anil, eps_list)
    # the adapted predictor leaves the backbone untouched: only the head is in its params
    ep = eps_list[0]
    pred, trace = anil.adapt(ep.support_x, ep.support_y, steps=3, record_params=True)
    assert set(pred.params) == {"head.weight", "head.bias"}
    assert trace.params is not None and all(set(p) == {"head.weight", "head.bias"} for p in trace.params)
    with torch.no_grad():
        expected = ref_body(theta[:8], ep.query_x, ep.support_x)
        assert torch.allclose(pred.embed(ep.query_x), expected, rtol=0, atol=1e-12)
        assert torch.allclose(pred.embed(ep.query_x[:1]), expected[:1], rtol=0, atol=1e-12)


def test_anil_first_order_differs_from_second_order():
    eps_list = episodes()
    a2 = make("anil", inner_steps=3, inner_lr=0.3)
    a1 = make("anil", inner_steps=3, inner_lr=0.3, first_order=True)
    g2 = flat(torch.autograd.grad(a2.meta_loss(eps_list)[0], params_of(a2)))
    g1 = flat(torch.autograd.grad(a1.meta_loss(eps_list)[0], params_of(a1)))
    assert rel_err(g1, g2) > 1e-3


def protonet_by_hand(**kw):
    """A 3-way ProtoNet adapted to one episode, with its query embeddings and class means computed by hand."""
    eps_list = episodes(n_way=3, k=2, q=3)
    torch.manual_seed(0)
    net = create_learner("protonet", TinyNet(), n_way=3, **kw).double()
    ep = eps_list[0]
    pred, _ = net.adapt(ep.support_x, ep.support_y)
    with torch.no_grad():
        body = dict(net.backbone.named_parameters())
        w = [body[n] for n in NAMES]
        es, eq = ref_body(w, ep.support_x), ref_body(w, ep.query_x, ep.support_x)
    centroids = torch.stack([es[ep.support_y == c].mean(0) for c in range(3)])
    return net, eps_list, pred, eq, centroids


def test_protonet_is_nearest_centroid_and_its_gradient_is_finite():
    net, eps_list, pred, eq, centroids = protonet_by_hand()
    ep = eps_list[0]
    dist = torch.stack([((eq - c) ** 2).sum(1) for c in centroids], 1)  # by hand, one centroid at a time
    logits = pred(ep.query_x)
    assert torch.allclose(logits, -dist, rtol=1e-10, atol=1e-12)
    assert torch.equal(logits.argmax(1), dist.argmin(1))
    assert torch.allclose(pred.params["prototypes"], centroids, atol=1e-12)
    assert torch.allclose(prototype_logits(eq, centroids), -dist, atol=1e-12)
    loss, _ = net.meta_loss(eps_list)
    grads = torch.autograd.grad(loss, params_of(net))
    assert all(bool(torch.isfinite(g).all()) for g in grads)
    assert float(flat(grads).abs().sum()) > 0
    check_fd(net, eps_list)


def test_cosine_protonet_is_scaled_cosine_to_the_centroids_and_learns_its_scale():
    """Meta-Baseline's classifier: τ · cos(query, class mean), τ a parameter with a correct gradient."""
    net, eps_list, pred, eq, centroids = protonet_by_hand(metric="cosine")
    ep = eps_list[0]
    cos = torch.stack([(eq * c).sum(1) / (eq.norm(dim=1) * c.norm()) for c in centroids], 1)
    assert torch.allclose(pred(ep.query_x), 10.0 * cos, rtol=1e-10, atol=1e-12)
    assert [n for n, _ in net.named_parameters() if not n.startswith("backbone.")] == ["scale"]
    loss, _ = net.meta_loss(eps_list)
    (g_scale,) = torch.autograd.grad(loss, [net.scale])
    assert float(g_scale) != 0.0
    check_fd(net, eps_list)
    with pytest.raises(ValueError, match="metric must be one of"):
        create_learner("protonet", TinyNet(), n_way=3, metric="manhattan")


@pytest.mark.parametrize("name", ["maml", "fomaml", "metasgd", "anil", "protonet"])
def test_same_seed_gives_identical_meta_gradients(name):
    eps_list = episodes()
    grads = []
    for _ in range(2):
        learner = make(name)
        loss, _ = learner.meta_loss(eps_list)
        grads.append(flat(torch.autograd.grad(loss, params_of(learner))))
    assert torch.equal(grads[0], grads[1])


def clone_with(module: nn.Module, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """learn2learn-style clone: the same modules with the given (non-leaf) tensors as their parameters."""
    import copy

    clone = copy.copy(module)
    clone._parameters = {k: tensors[k] for k in module._parameters}  # type: ignore[assignment]
    clone._modules = {
        name: clone_with(child, {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")})
        for name, child in module._modules.items()
    }
    return clone


def test_maml_on_conv4_matches_a_module_clone_reference_and_finite_differences():
    from medmeta_lib.models.backbones import create_backbone

    torch.manual_seed(0)
    learner = create_learner("maml", create_backbone("conv4", hidden=4), n_way=2, inner_steps=2, inner_lr=0.3)
    learner = learner.double()
    col = make_collection(n_classes=3, per_class=6, size=32, seed=2)
    s = EpisodeSampler(col, n_way=2, k_shot=2, q_query=2, seed=0)
    eps_list = [
        dataclasses.replace(e, support_x=e.support_x.double(), query_x=e.query_x.double())
        for e in (s.sample() for _ in range(2))
    ]
    loss, _ = learner.meta_loss(eps_list)
    body = dict(learner.backbone.named_parameters())
    g = flat(torch.autograd.grad(loss, list(body.values())))
    ref = 0.0
    for ep in eps_list:
        fast = dict(body)
        w = torch.zeros(2, 4, dtype=torch.float64, requires_grad=True)
        b = torch.zeros(2, dtype=torch.float64, requires_grad=True)
        for _ in range(2):
            inner = F.cross_entropy(F.linear(clone_with(learner.backbone, fast)(ep.support_x), w, b), ep.support_y)
            grads = torch.autograd.grad(inner, [*fast.values(), w, b], create_graph=True)
            fast = {k: v - 0.3 * gi for (k, v), gi in zip(fast.items(), grads)}
            w, b = w - 0.3 * grads[-2], b - 0.3 * grads[-1]
        _, query = context_forward(clone_with(learner.backbone, fast), ep.support_x, ep.query_x)
        ref = ref + F.cross_entropy(F.linear(query, w, b), ep.query_y) / 2
    assert float(loss.detach()) == pytest.approx(float(ref.detach()), rel=1e-12)
    assert rel_err(g, flat(torch.autograd.grad(ref, list(body.values())))) <= RTOL
    check_fd(learner, eps_list, n_dirs=2)
