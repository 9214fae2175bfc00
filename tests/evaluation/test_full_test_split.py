"""evaluate_full_test_split / compare_full_test_split against independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.evaluation.full_test_split import (
    compare_full_test_split,
    evaluate_full_test_split,
    learner_predictor,
    score_full_test_split,
)
from medmeta_lib.learners import create_learner
from medmeta_lib.models import create_backbone
from medmeta_lib.ssl.heads import ensemble_predictor


def _cols(seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def make(n0: int, n1: int) -> ImageCollection:
        y = torch.cat([torch.zeros(n0), torch.ones(n1)]).long()
        x = (0.35 + 0.2 * y.float()[:, None, None, None] + 0.2 * torch.randn(len(y), 1, 16, 16, generator=g)).clamp(
            0, 1
        )
        return ImageCollection(images=x, labels=y, class_names=("normal", "pneumonia"))

    return make(12, 20), make(15, 25)  # imbalanced test split: majority 25/40


def _protonet():
    torch.manual_seed(0)
    return create_learner("protonet", create_backbone("conv4", hidden=8), n_way=2)


def test_metrics_equal_an_independent_loop_with_sklearn() -> None:
    train, test = _cols()
    learner = _protonet()
    r = evaluate_full_test_split(learner, train, test, k_shot=3, draws=4, seed=7, n_boot=100, keep_predictions=True)
    # reference: the documented draw rule, images predicted one at a time, scikit-learn metrics
    rng = np.random.default_rng(7)
    labels = train.labels.numpy()
    pools = [np.nonzero(labels == c)[0] for c in range(2)]
    accs, bals, aucs, recalls = [], [], [], []
    for _ in range(4):
        idx = np.concatenate([rng.choice(p, size=3, replace=False) for p in pools])
        pred, _ = learner.adapt(train.images[torch.from_numpy(idx)], torch.tensor([0, 0, 0, 1, 1, 1]))
        with torch.no_grad():
            probs = torch.cat([pred(test.images[i : i + 1]).softmax(-1) for i in range(len(test))]).numpy()
        y = test.labels.numpy()
        accs.append(float((probs.argmax(1) == y).mean()))
        bals.append(balanced_accuracy_score(y, probs.argmax(1)))
        aucs.append(roc_auc_score(y, probs[:, 1]))
        recalls.append(recall_score(y, probs.argmax(1), average=None))
    assert r["acc_mean"] == pytest.approx(np.mean(accs), abs=1e-12)
    assert r["bal_acc_mean"] == pytest.approx(np.mean(bals), abs=1e-12)
    assert r["auc_mean"] == pytest.approx(np.mean(aucs), abs=1e-6)
    assert r["per_draw_acc"] == pytest.approx(accs, abs=1e-12)
    assert r["majority_rate"] == pytest.approx(25 / 40)
    assert r["transductive"] is False and r["test_images"] == 40 and r["draws"] == 4
    for m in ("acc", "bal_acc", "auc"):
        assert r[f"{m}_lo95"] <= r[f"{m}_mean"] <= r[f"{m}_hi95"]
        assert r[f"{m}_ci95_total"] > 0 and r[f"{m}_ci95"] > 0
    # each class's recall under its name, its mean over draws the two halves of balanced accuracy
    rc = r["recall_per_class"]
    assert list(rc) == ["normal", "pneumonia"]
    assert [rc[c]["mean"] for c in rc] == pytest.approx(np.mean(recalls, axis=0), abs=1e-12)
    assert np.mean([rc[c]["mean"] for c in rc]) == pytest.approx(r["bal_acc_mean"], abs=1e-12)
    assert all(st["lo95"] <= st["mean"] <= st["hi95"] for st in rc.values())


def test_inductive_result_does_not_depend_on_the_batch_size_transductive_does() -> None:
    train, test = _cols(1)
    learner = _protonet()
    kw = {"k_shot": 2, "draws": 3, "n_boot": 50}
    a = evaluate_full_test_split(learner, train, test, batch_size=1, **kw)
    b = evaluate_full_test_split(learner, train, test, batch_size=512, **kw)
    assert a["per_draw_acc"] == b["per_draw_acc"] and a["auc_mean"] == pytest.approx(b["auc_mean"], abs=1e-6)
    t1 = evaluate_full_test_split(learner, train, test, batch_size=2, transductive=True, keep_predictions=True, **kw)
    t2 = evaluate_full_test_split(learner, train, test, batch_size=512, transductive=True, keep_predictions=True, **kw)
    assert t1["transductive"] is True and not np.allclose(t1["score"], t2["score"])
    assert learner.transductive is False  # the override is for the call only


def test_predictions_never_read_the_test_labels() -> None:
    train, test = _cols(2)
    shuffled = ImageCollection(
        images=test.images, labels=test.labels[torch.randperm(len(test))], class_names=test.class_names
    )
    kw = {"k_shot": 2, "draws": 2, "n_boot": 20, "keep_predictions": True}
    a = evaluate_full_test_split(_protonet(), train, test, **kw)
    b = evaluate_full_test_split(_protonet(), train, shuffled, **kw)
    np.testing.assert_array_equal(a["score"], b["score"])  # same predictions whatever the test labels say


def test_compare_uses_the_same_draws_and_gives_paired_differences() -> None:
    train, test = _cols(3)
    seen: dict[str, list] = {}

    class Recording:
        def __init__(self, learner, name):
            self.learner, self.name = learner, name
            self.n_way, self.transductive = learner.n_way, False

        def set_n_way(self, n):
            self.learner.set_n_way(n)

        def adapt(self, sx, sy, steps=None):
            seen.setdefault(self.name, []).append(sx.clone())
            return self.learner.adapt(sx, sy, steps=steps)

    torch.manual_seed(0)
    scratch = create_learner("scratch", create_backbone("conv4", hidden=8), n_way=2, eval_steps=2)
    out = compare_full_test_split(
        {"protonet": Recording(_protonet(), "protonet"), "scratch": Recording(scratch, "scratch")},
        train,
        test,
        k_shot=2,
        draws=3,
        n_boot=50,
    )
    assert all(torch.equal(a, b) for a, b in zip(seen["protonet"], seen["scratch"]))
    other = next(n for n in ("protonet", "scratch") if n != out["best"])
    diff = out["paired_vs_best"][other]
    res = out["results"]
    expected = np.mean(res[out["best"]]["per_draw_acc"]) - np.mean(res[other]["per_draw_acc"])
    assert diff["acc"]["mean"] == pytest.approx(expected, abs=1e-12)
    assert set(diff) == {"acc", "bal_acc", "auc"} and "correct" not in res[other]


def test_learner_predictor_adapts_to_the_support_indices_and_predicts_each_test_image_alone() -> None:
    train, test = _cols(4)
    learner = _protonet()
    predict = learner_predictor(learner, train, test, k_shot=2, batch_size=7)
    idx = np.array([0, 3, 12, 15])  # class-major: two normal, two pneumonia train images
    pred, _ = learner.adapt(train.images[torch.from_numpy(idx)], torch.tensor([0, 0, 1, 1]))
    with torch.no_grad():
        alone = torch.cat([pred(test.images[i : i + 1]).softmax(-1) for i in range(len(test))]).numpy()
    np.testing.assert_allclose(predict(idx), alone, atol=1e-6)
    # scored through score_full_test_split it gives what evaluate_full_test_split gives
    kw = {"k_shot": 2, "draws": 3, "n_boot": 20, "seed": 5}
    via = score_full_test_split("protonet", predict, train, test, **kw)
    assert via["per_draw_acc"] == evaluate_full_test_split(learner, train, test, **kw)["per_draw_acc"]


def test_an_ensemble_of_learners_is_the_mean_of_their_probabilities() -> None:
    train, test = _cols(5)
    torch.manual_seed(1)
    other = create_learner("protonet", create_backbone("conv4", hidden=8), n_way=2)
    members = [learner_predictor(lr, train, test, k_shot=2) for lr in (_protonet(), other)]
    idx = np.array([1, 2, 14, 19])
    mean = (members[0](idx) + members[1](idx)) / 2
    np.testing.assert_allclose(ensemble_predictor(members)(idx), mean, atol=1e-12)
    assert not np.allclose(members[0](idx), members[1](idx))  # two different networks


def test_errors_name_the_problem() -> None:
    train, test = _cols()
    with pytest.raises(ValueError, match="fewer than k_shot=13"):
        evaluate_full_test_split(_protonet(), train, test, k_shot=13, draws=1)
    with pytest.raises(ValueError, match="k_shot"):
        evaluate_full_test_split(_protonet(), train, test, k_shot=0)
    three = ImageCollection(images=test.images, labels=torch.arange(len(test)) % 3, class_names=("a", "b", "c"))
    with pytest.raises(ValueError, match="train has 2 classes but test has 3"):
        learner_predictor(_protonet(), train, three, k_shot=1)
    with pytest.raises(ValueError, match="batch_size"):
        learner_predictor(_protonet(), train, test, k_shot=1, batch_size=0)


def test_support_free_features_embed_the_test_split_once_and_give_the_same_probabilities() -> None:
    train, test = _cols(6)
    torch.manual_seed(0)
    learner = create_learner("protonet", create_backbone("conv4", hidden=8, norm="group"), n_way=2)
    assert learner.support_free_features and not _protonet().support_free_features  # GroupNorm vs batch norm
    assert not create_learner("maml", create_backbone("conv4", hidden=8, norm="group"), n_way=2).support_free_features
    calls = []
    forward = learner.backbone.forward
    learner.backbone.forward = lambda x: calls.append(len(x)) or forward(x)
    predict = learner_predictor(learner, train, test, k_shot=2, batch_size=16)
    draws = [np.array([0, 3, 12, 15]), np.array([1, 2, 20, 31])]
    for idx in draws:  # against the learner's own predictor, one test image at a time
        pred, _ = learner.adapt(train.images[torch.from_numpy(idx)], torch.tensor([0, 0, 1, 1]))
        with torch.no_grad():
            alone = torch.cat([pred(test.images[i : i + 1]).softmax(-1) for i in range(len(test))]).numpy()
        calls.clear()
        np.testing.assert_allclose(predict(idx), alone, atol=1e-5)  # 1e-6 apart: conv sums in another order
        # the support set is embedded every draw; the 40 test images (chunks of 16) only on the first call
        assert calls == ([4, 16, 16, 8] if idx is draws[0] else [4])
    before = predict(draws[1])
    with torch.no_grad():  # an in-place update (an optimiser step) drops the stored test features
        next(learner.parameters()).neg_()
    pred, _ = learner.adapt(train.images[torch.from_numpy(draws[1])], torch.tensor([0, 0, 1, 1]))
    with torch.no_grad():
        fresh = pred(test.images).softmax(-1).numpy()
    np.testing.assert_allclose(predict(draws[1]), fresh, atol=1e-5)
    assert np.abs(fresh - before).max() > 1e-2  # stale features would have kept the old probabilities
    conv = learner.backbone.features[0]
    predict(draws[1])
    replaced = torch.nn.Parameter(conv.weight.detach().flip(0).clone())
    with torch.no_grad():  # the same version count as the old weight: only its identity tells them apart
        for _ in range(conv.weight._version):
            replaced.mul_(1.0)
    assert replaced._version == conv.weight._version
    conv.weight = replaced
    pred, _ = learner.adapt(train.images[torch.from_numpy(draws[1])], torch.tensor([0, 0, 1, 1]))
    with torch.no_grad():
        np.testing.assert_allclose(predict(draws[1]), pred(test.images).softmax(-1).numpy(), atol=1e-5)
