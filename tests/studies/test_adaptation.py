"""Core computations behind the adaptation views: curves, data efficiency, trajectories (adaptation_study),
and saliency before/after adaptation (saliency), which share these fixtures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.learners import Predictor, create_learner
from medmeta_lib.learners.trace import AdaptationTrace
from medmeta_lib.models import create_backbone
from medmeta_lib.studies.adaptation import (
    adaptation_curves,
    data_efficiency,
    embedding_trajectory,
    prototype_alignment,
)
from medmeta_lib.studies.saliency import _InContext, gradient_x_input, occlusion_map, saliency_before_after
from tests.conftest import make_collection

pytestmark = pytest.mark.usefixtures("one_thread_module")


def learner(name: str, n_way: int = 3, norm: str = "batch", seed: int = 0):
    torch.manual_seed(seed)
    kw = {"num_train_classes": 4} if name.startswith("baseline") else {}
    return create_learner(name, create_backbone("conv4", hidden=8, norm=norm), n_way=n_way, **kw)


@pytest.fixture(scope="module")
def col():
    return make_collection(n_classes=4, per_class=12, n_sites=2, size=16)


@pytest.fixture(scope="module")
def sampler(col):
    return EpisodeSampler(col, 3, 2, 3, seed=0)


def test_adaptation_curves_average_the_traces(sampler):
    eps = sampler.fixed(3, seed=1)
    maml, proto = learner("maml"), learner("protonet")
    curves = adaptation_curves({"maml": maml, "protonet": proto}, eps, steps=3)
    c = curves["maml"]
    assert c["steps"] == [0, 1, 2, 3] and c["native_steps"] == 3 and c["episodes"] == 3 and c["n_way"] == 3
    accs = []
    for ep in eps:
        _, tr = maml.adapt(ep.support_x, ep.support_y, steps=3, query_x=ep.query_x, query_y=ep.query_y)
        accs.append(tr.query_acc)
    np.testing.assert_allclose(c["query_acc_mean"], np.mean(accs, axis=0), rtol=1e-6)
    sd = np.std(accs, axis=0, ddof=1)
    np.testing.assert_allclose(c["query_acc_ci95"], 1.96 * sd / math.sqrt(3), rtol=1e-6, atol=1e-12)
    assert all(np.isfinite(c["query_loss_ci95"]))
    # ProtoNet: step 0 = no prototypes (uniform, loss log N), step 1 = class means, then carried flat
    p = curves["protonet"]
    assert p["native_steps"] == 1
    assert p["query_loss_mean"][0] == pytest.approx(math.log(3), abs=1e-5)
    assert p["query_acc_mean"][1:] == [p["query_acc_mean"][1]] * 3


def test_adaptation_curves_validates(sampler):
    with pytest.raises(ValueError, match="steps"):
        adaptation_curves({"m": learner("maml")}, sampler.fixed(1), steps=-1)
    with pytest.raises(ValueError, match="learners is empty"):
        adaptation_curves({}, sampler.fixed(1), steps=1)
    fixed_way = create_learner("maml", create_backbone("conv4", hidden=8), n_way=2, head_init="learned")
    with pytest.raises(ValueError, match="n_way"):
        adaptation_curves({"m": fixed_way}, sampler.fixed(1), steps=1)


def test_data_efficiency_same_episodes_and_skips_impossible_k(col):
    a, b = learner("protonet"), learner("protonet")  # identical learners -> identical rows
    with pytest.warns(UserWarning, match="K=20 skipped"):
        rows = data_efficiency({"a": a, "b": b}, col, shots=(1, 2, 20), episodes=3, n_way=3, q_query=3)
    assert [(r["learner"], r["k_shot"]) for r in rows] == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    for ra, rb in zip(rows[:2], rows[2:]):
        assert ra["acc_mean"] == rb["acc_mean"] and ra["episodes"] == 3
    assert all(0 <= r["acc_mean"] <= 1 for r in rows)
    two = data_efficiency({"a": a}, col, shots=(1,), episodes=3, n_way=2, q_query=2)
    assert "auc_mean" in two[0]
    custom = data_efficiency({"a": a}, lambda k: EpisodeSampler(col, 2, k, 2, classes=[0, 1]), shots=[1], episodes=2)
    assert custom[0]["k_shot"] == 1
    with pytest.raises(ValueError, match="no K"):
        with pytest.warns(UserWarning):
            data_efficiency({"a": a}, col, shots=(50,), episodes=1, n_way=3, q_query=3)
    with pytest.raises(ValueError, match="shots"):
        data_efficiency({"a": a}, col, shots=(0,), episodes=1)


def test_data_efficiency_nests_the_tasks_so_the_gain_from_labels_is_paired(col, monkeypatch):
    """Every K scores the same classes and queries; a smaller K keeps a prefix of each class's support."""
    from medmeta_lib.studies import adaptation

    seen: dict[int, list] = {}
    real = adaptation.evaluate_learner

    def spy(learner, episodes, **kw):
        seen.setdefault(len(episodes[0].support_y) // 3, list(episodes))
        return real(learner, episodes, **kw)

    monkeypatch.setattr(adaptation, "evaluate_learner", spy)
    rows = data_efficiency({"p": learner("protonet")}, col, shots=(1, 2, 4), episodes=4, n_way=3, q_query=3)
    assert sorted(seen) == [1, 2, 4]
    for e1, e2, e4 in zip(seen[1], seen[2], seen[4], strict=True):
        assert e1.classes == e2.classes == e4.classes
        assert torch.equal(e1.query_idx, e4.query_idx) and torch.equal(e2.query_x, e4.query_x)
        for c in range(3):
            full = e4.support_idx[e4.support_y == c]
            assert torch.equal(e1.support_idx[e1.support_y == c], full[:1])
            assert torch.equal(e2.support_idx[e2.support_y == c], full[:2])
    first = rows[0]
    assert first["gain_mean"] == 0.0 and first["gain_ci95"] == 0.0
    for r in rows[1:]:  # paired over the same tasks: the mean gain is the difference of the means
        assert r["gain_mean"] == pytest.approx(r["acc_mean"] - first["acc_mean"], abs=1e-9)


def test_data_efficiency_draws_new_classes_within_one_modality(monkeypatch):
    """The meta-test classes of MedSynth's fine taxonomy span every modality; a task must not mix two."""
    from medmeta_lib.data.synthetic import MedSynth
    from medmeta_lib.studies import adaptation

    col = MedSynth(modalities=["fundus", "histology"], taxonomy="fine").generate(image_size=16, n_per_class_site=1)
    test_classes = [*col.classes_of_modality("fundus")[:4], *col.classes_of_modality("histology")[:4]]
    seen: list[set[str]] = []

    class Spy(EpisodeSampler):
        def fixed(self, n_episodes, *, seed=None):
            out = super().fixed(n_episodes, seed=seed)
            seen.extend({col.class_modalities[c] for c in ep.classes} for ep in out)
            return out

    monkeypatch.setattr(adaptation, "EpisodeSampler", Spy)
    data_efficiency({"p": learner("protonet")}, col, shots=(1,), episodes=6, n_way=3, q_query=1, classes=test_classes)
    assert len(seen) == 6 and all(len(m) == 1 for m in seen)


def test_embedding_trajectory_one_projection(sampler):
    ep = sampler.sample()
    maml = learner("maml")
    _, tr = maml.adapt(
        ep.support_x, ep.support_y, steps=3, query_x=ep.query_x, query_y=ep.query_y, record_embeddings=True
    )
    t = embedding_trajectory(tr, ep.support_y, ep.query_y)
    assert t["support"].shape == (4, 6, 2) and t["query"].shape == (4, 9, 2) and t["prototypes"].shape == (4, 3, 2)
    # PCA is linear: each prototype (mean support embedding) projects to the mean of its projected points
    for s in range(4):
        for c in range(3):
            np.testing.assert_allclose(t["prototypes"][s, c], t["support"][s][t["support_y"] == c].mean(0), atol=1e-4)
    # the zero head's first step changes only the head: same embeddings -> same 2-D points (one projection)
    np.testing.assert_allclose(t["support"][0], t["support"][1], atol=1e-5)
    assert t["query_pred"].shape == (4, 9) and t["explained_variance"][0] >= t["explained_variance"][1]
    assert embedding_trajectory(tr, ep.support_y, ep.query_y, method="tsne")["support"].shape == (4, 6, 2)
    _, no_emb = maml.adapt(ep.support_x, ep.support_y, steps=1)
    with pytest.raises(ValueError, match="record_embeddings"):
        embedding_trajectory(no_emb, ep.support_y)
    with pytest.raises(ValueError, match="method"):
        embedding_trajectory(tr, ep.support_y, method="umap")


def test_prototype_alignment_measures_queries_moving_to_their_own_prototype() -> None:
    sy, qy = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1])
    support = torch.tensor([[0.0, 0.0], [0.0, 0.0], [10.0, 0.0], [10.0, 0.0]])
    before = torch.tensor([[6.0, 0.0], [4.0, 0.0]])  # each query nearer the other class's prototype
    after = torch.tensor([[1.0, 0.0], [9.0, 0.0]])  # each moved to its own
    tr = AdaptationTrace(steps=[0, 1], support_emb=[support, support], query_emb=[before, after], learner="x")
    out = prototype_alignment(tr, sy, qy)
    assert out["steps"] == [0, 1] and out["nearest_prototype_acc"] == [0.0, 1.0]
    assert out["distance_ratio"] == pytest.approx([1.5, 1 / 9])  # own / other: (6/4 + 6/4) / 2, then 1/9
    with pytest.raises(ValueError, match="record_embeddings"):
        prototype_alignment(AdaptationTrace(learner="x"), sy, qy)


def region_predictor() -> Predictor:
    """Two classes; the evidence is the mean of the top-left 6x6 corner only."""

    def embed(x):
        return x[:, :, :6, :6].mean((1, 2, 3))[:, None]

    return Predictor(embed, lambda h: torch.cat([8 * h, -8 * h], 1), n_way=2)


def test_saliency_maps_find_the_evidence():
    torch.manual_seed(0)
    x = torch.rand(3, 1, 16, 16) * 0.5 + 0.25
    x[:, :, 2, 2] = 0.0  # gradient x input is zero where the input is zero
    pred = region_predictor()
    g = gradient_x_input(pred, x, target=0)
    assert g.shape == x.shape and torch.isfinite(g).all()
    assert (g[:, :, 2, 2] == 0).all()
    assert (g[:, :, 8:, :] == 0).all() and (g[:, :, :6, :6] != 0).sum() > 30
    sg = gradient_x_input(pred, x, target=0, samples=4, noise=0.1)
    assert sg.shape == x.shape and (sg[:, :, 8:, :] == 0).all()
    occ = occlusion_map(pred, x, target=0, mask_size=4)
    assert occ.shape == x.shape and torch.isfinite(occ).all()
    assert occ[:, 0, :5, :5].mean() > 10 * occ[:, 0, 10:, 10:].abs().mean()
    assert occlusion_map(pred, x, target=0, rows=[1]).shape == (1, 1, 16, 16)


def test_in_context_gradient_matches_finite_differences(sampler):
    """With batch statistics each image's map is the derivative of ITS prediction inside the batch."""
    ep = sampler.sample()
    pred, _ = learner("maml").adapt(ep.support_x, ep.support_y, steps=3)
    x = ep.query_x.double()
    pred_d = Predictor(lambda z: pred.embed(z.float()).double(), lambda h: pred.classify(h.float()).double(), n_way=3)
    y = ep.query_y
    g = gradient_x_input(pred_d, x, target=y, rows=[4])
    eps = 1e-3
    i, (h, w) = 4, (7, 9)
    xp, xm = x.clone(), x.clone()
    xp[i, 0, h, w] += eps
    xm[i, 0, h, w] -= eps
    with torch.no_grad():
        lp = torch.log_softmax(pred_d(xp), -1)[i, y[i]]
        lm = torch.log_softmax(pred_d(xm), -1)[i, y[i]]
    fd = float((lp - lm) / (2 * eps)) * float(x[i, 0, h, w])
    assert float(g[0, 0, h, w]) == pytest.approx(fd, rel=0.05, abs=1e-5)


def test_in_context_occlusion_scores_each_copy_inside_the_batch(sampler):
    ep = sampler.sample()
    pred, _ = learner("protonet").adapt(ep.support_x, ep.support_y)
    ctx = ep.query_x
    copies = ctx[2:3].repeat(2, 1, 1, 1) * torch.tensor([1.0, 0.5])[:, None, None, None]
    out = _InContext(pred, ctx, 2, independent=False)(copies)
    for r in range(2):
        batch = ctx.clone()
        batch[2] = copies[r]
        torch.testing.assert_close(out[r], pred(batch)[2])


def test_saliency_before_after(sampler):
    ep = sampler.sample()
    for method in ("gradient", "occlusion"):
        d = saliency_before_after(learner("maml"), ep, method=method, steps_after=3, max_images=4)
        assert d["images"].shape == (4, 1, 16, 16) == d["before_maps"].shape == d["after_maps"].shape
        assert torch.isfinite(d["after_maps"]).all() and d["steps_after"] == 3 and d["n_way"] == 3
        # zero-initialised head before any step: uniform prediction, no evidence for any class
        assert d["before_maps"].abs().max() < 1e-6 and d["after_maps"].abs().max() > 1e-6
        assert torch.allclose(d["conf_before"], torch.full((4,), 1 / 3))
        assert sorted(d["labels"].tolist()) == [0, 0, 1, 2]  # spread over the classes
    with pytest.raises(ValueError, match="method"):
        saliency_before_after(learner("maml"), ep, method="gradcam")
    with pytest.raises(ValueError, match="mask_size"):
        occlusion_map(region_predictor(), torch.rand(1, 1, 8, 8), mask_size=9)
