from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import medmeta_lib.studies.fewshot as fewshot_mod
from medmeta_lib.data import load_collection
from medmeta_lib.ssl.features import CONV4_BLOCKS_2_4, PooledLayers, extract_features
from medmeta_lib.ssl.self_training import pseudo_label
from medmeta_lib.ssl.views import ContrastiveViews
from medmeta_lib.studies.fewshot import (
    HEADS,
    PROBE_RECIPE,
    RECIPE,
    SELF_TRAIN,
    SELF_TRAIN_MAX_K,
    check_fewshot_data,
    fewshot_study,
)
from medmeta_lib.studies.fewshot_recipe import RECIPE_FILE, FewShotRecipe
from medmeta_lib.training.checkpoint import load_checkpoint
from medmeta_lib.training.learner_io import load_learner
from tests.conftest import write_medmnist_npz

TINY = {
    "epochs": 1,
    "draws": 3,
    "batch_size": 16,
    "hidden": 8,
    "meta_members": 2,
    "self_train": 0,  # the plain recipe (auto would self-train at these K <= 2): its own test below
    "progress": False,
    "log": lambda s: None,
}
NO_META = {**TINY, "meta_steps": 0}
ALL = {RECIPE, PROBE_RECIPE, "random_init_probe", "raw_pixels_probe"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple:
    npz = write_medmnist_npz(tmp_path_factory.mktemp("fs") / "tiny.npz", n_classes=2, per_class=10)
    return load_collection(str(npz), split="train"), load_collection(str(npz), split="test")


def test_the_recipe_and_its_baselines_on_the_same_draws(pair) -> None:
    train, test = pair
    out = fewshot_study(train, test, k_shot=2, scratch=False, meta_steps=2, **TINY)
    assert out["recipe"] == RECIPE and set(out["results"]) == ALL
    meta = out["meta_train"]
    assert meta["steps"] == 2 and meta["learner"] == "protonet" and out["settings"]["meta_steps"] == 2
    assert meta["seeds"] == [0, 1] and [m["seed"] for m in meta["members"]] == [0, 1]
    assert all(m["final_loss"] > 0 for m in meta["members"]) and out["settings"]["meta_members"] == 2
    assert meta["seconds"] == pytest.approx(sum(m["seconds"] for m in meta["members"]), abs=0.11)
    assert meta["members"][0]["final_loss"] != meta["members"][1]["final_loss"]  # two seeds, two trainings
    labels = test.labels.numpy()
    assert out["majority_rate"] == pytest.approx(np.bincount(labels).max() / len(labels))
    for r in out["results"].values():
        assert r["draws"] == 3 and len(r["per_draw_acc"]) == 3 and r["test_images"] == len(test)
        for metric in ("acc", "bal_acc", "auc"):
            assert r[f"{metric}_lo95"] <= r[f"{metric}_mean"] <= r[f"{metric}_hi95"]
    best = max(out["results"], key=lambda n: out["results"][n]["bal_acc_mean"])
    assert out["results"][out["best"]]["bal_acc_mean"] == out["results"][best]["bal_acc_mean"]
    assert set(out["paired_vs_best"]) == set(out["results"]) - {out["best"]}
    assert out["pretrain"]["steps"] >= 1 and out["settings"]["probe_layers"]


def test_no_test_label_is_read_before_scoring(pair, monkeypatch) -> None:
    """Pretraining, meta-training, features and probes give the same predictions whatever the test labels say."""
    train, test = pair
    seen: list[dict[str, np.ndarray]] = []

    def predictions(m, idx: np.ndarray, train_, test_) -> np.ndarray:
        if not hasattr(m, "adapt"):  # a support predictor: support indices in, test probabilities out
            return m(idx)
        pred, _ = m.adapt(train_.images[idx], train_.labels[idx])  # a learner: adapted to the same support set
        with torch.no_grad():
            return pred(test_.images).numpy()

    def spy(methods, train_, test_, *, k_shot, draws, seed, **kw):
        idx = np.concatenate([np.nonzero(train_.labels.numpy() == c)[0][:k_shot] for c in range(2)])
        seen.append({n: predictions(m, idx, train_, test_) for n, m in methods.items()})
        return real(methods, train_, test_, k_shot=k_shot, draws=draws, seed=seed, **kw)

    real = fewshot_mod.compare_full_test_split
    monkeypatch.setattr(fewshot_mod, "compare_full_test_split", spy)
    scrambled = test.subset(torch.arange(len(test)))
    scrambled.labels = 1 - test.labels  # every test label wrong
    default = {**TINY, "self_train": None}  # the default path at K = 2: self-training on the train images too
    a = fewshot_study(train, test, k_shot=2, scratch=False, meta_steps=2, **default)
    b = fewshot_study(train, scrambled, k_shot=2, scratch=False, meta_steps=2, **default)
    assert set(seen[0]) == ALL and a["settings"]["self_train"] == 100
    for name in seen[0]:
        np.testing.assert_array_equal(seen[0][name], seen[1][name])
        assert a["results"][name]["acc_mean"] == pytest.approx(1 - b["results"][name]["acc_mean"])


def test_data_the_protocol_cannot_score_is_refused(pair, tmp_path: Path) -> None:
    train, test = pair
    with pytest.raises(ValueError, match=r"fewer than k_shot=20 train images; lower --k-shot"):
        check_fewshot_data(train, test, 20)
    one = train.subset(torch.nonzero(train.labels == 0).flatten())
    one.class_names = ("class0",)
    with pytest.raises(ValueError, match="at least 2 classes"):
        check_fewshot_data(one, test, 1)
    npz3 = write_medmnist_npz(tmp_path / "three.npz", n_classes=3, per_class=4)
    with pytest.raises(ValueError, match="both splits must have the same classes"):
        check_fewshot_data(load_collection(str(npz3), split="train"), test, 1)


def test_the_head_is_selectable_and_recorded(pair, monkeypatch) -> None:
    train, test = pair
    probs: list[np.ndarray] = []

    def spy(methods, train_, test_, **kw):
        idx = np.concatenate([np.nonzero(train_.labels.numpy() == c)[0][:2] for c in range(2)])
        probs.append(methods["raw_pixels_probe"](idx))
        return real(methods, train_, test_, **kw)

    real = fewshot_mod.compare_full_test_split
    monkeypatch.setattr(fewshot_mod, "compare_full_test_split", spy)
    cl2 = fewshot_study(train, test, k_shot=2, scratch=False, **NO_META)
    std = fewshot_study(train, test, k_shot=2, scratch=False, head="probe", **NO_META)
    assert (cl2["settings"]["head"], cl2["settings"]["C"]) == ("cl2_probe", HEADS["cl2_probe"])
    assert (std["settings"]["head"], std["settings"]["C"]) == ("probe", HEADS["probe"])
    # the same pixels and support set, another head: other probabilities
    assert probs[0].shape == probs[1].shape == (len(test), 2) and not np.allclose(probs[0], probs[1])
    with pytest.raises(ValueError, match="head must be one of"):
        fewshot_study(train, test, k_shot=2, head="knn", **TINY)
    with pytest.raises(ValueError, match="C must be a number > 0"):
        fewshot_study(train, test, k_shot=2, C=0.0, **TINY)


def test_scanner_shift_positives_by_default_and_plain_views_on_request(pair, monkeypatch) -> None:
    train, test = pair
    modes: list[str] = []

    def spy(collection, **kw):
        modes.append(ContrastiveViews(collection, kw["config"]).mode)
        return real(collection, **kw)

    real = fewshot_mod.pretrain_simclr
    monkeypatch.setattr(fewshot_mod, "pretrain_simclr", spy)
    shifted = fewshot_study(train, test, k_shot=2, scratch=False, **NO_META)
    plain = fewshot_study(train, test, k_shot=2, scratch=False, scanner_shift=False, **NO_META)
    assert modes == ["scanner_shift", "augment"]  # label-free either way: no MedSynth re-rendering
    assert (shifted["settings"]["scanner_shift"], plain["settings"]["scanner_shift"]) == (True, False)
    assert shifted["settings"]["torch_threads"] == torch.get_num_threads()  # results depend on it (BENCHMARKS 11)
    assert shifted["pretrain"]["final_loss"] != plain["pretrain"]["final_loss"]  # other positives, other training
    with pytest.raises(ValueError, match="scanner_shift must be True or False"):
        fewshot_study(train, test, k_shot=2, scanner_shift="yes", **TINY)  # type: ignore[arg-type]


def test_without_meta_training_the_probe_is_the_recipe(pair) -> None:
    train, test = pair
    out = fewshot_study(train, test, k_shot=2, scratch=False, **NO_META)
    assert out["recipe"] == PROBE_RECIPE and set(out["results"]) == ALL - {RECIPE} and out["meta_train"] is None
    with pytest.raises(ValueError, match="meta_steps must be an int >= 0"):
        fewshot_study(train, test, k_shot=2, meta_steps=-1, **TINY)
    for bad in (0, True, 1.5):
        with pytest.raises(ValueError, match="meta_members must be an int >= 1"):
            fewshot_study(train, test, k_shot=2, **{**TINY, "meta_members": bad})


def test_eleven_classes_in_colour(tmp_path: Path) -> None:
    """Many classes and RGB: every method predicts all 11 classes; accuracy without AUC (not two classes).

    The scorer refuses a method whose probabilities are not ``(N, 11)``; the classes differ in hue and level,
    so each method must also do clearly better than chance (1/11) from one colour image per class."""
    npz = write_medmnist_npz(tmp_path / "rgb11.npz", n_classes=11, per_class=3, channels=3)
    train, test = load_collection(str(npz), split="train"), load_collection(str(npz), split="test")
    out = fewshot_study(train, test, k_shot=1, scratch=False, meta_steps=1, **{**TINY, "self_train": None})
    assert out["settings"]["self_train"] == SELF_TRAIN  # the default at K = 1: self-training, in colour too
    assert out["channels"] == 3 and len(out["classes"]) == 11 and set(out["results"]) == ALL
    for name, r in out["results"].items():
        assert "auc_mean" not in r and list(r["recall_per_class"]) == [f"class{c}" for c in range(11)]
        assert 2 / 11 < r["acc_mean"] <= 1.0, (name, r["acc_mean"])
    assert out["majority_rate"] == pytest.approx(1 / 11)


@pytest.fixture
def scored(monkeypatch) -> list:
    """The recipe as the study hands it to scoring (a learner, or a predictor for an ensemble), one per run."""
    seen: list = []

    def spy(methods, *args, **kw):
        seen.append(methods[RECIPE])
        return real(methods, *args, **kw)

    real = fewshot_mod.compare_full_test_split
    monkeypatch.setattr(fewshot_mod, "compare_full_test_split", spy)
    return seen


def test_test_time_augmented_probe_is_per_image_and_reloads(pair, tmp_path: Path, scored: list) -> None:
    """tta_views: the mixed probe reads features averaged over fixed views; the saved recipe repeats it per image."""
    train, test = pair
    out = fewshot_study(
        train, test, k_shot=2, scratch=False, meta_steps=2, tta_views=2, learner_out=tmp_path / "p.safetensors", **TINY
    )
    assert out["settings"]["tta_views"] == 2
    recipe = FewShotRecipe.load(tmp_path)
    assert (recipe.tta_views, recipe.tta_preset, recipe.tta_seed) == (2, "generic", 0)
    idx = np.concatenate([np.nonzero(train.labels.numpy() == c)[0][:2] for c in range(2)])
    sx, sy = train.images[torch.from_numpy(idx)], train.labels[torch.from_numpy(idx)]
    predict = recipe.adapt(sx, sy)
    got = predict(test.images)
    np.testing.assert_allclose(got, scored[0](idx), atol=1e-4)  # what the study scored
    np.testing.assert_allclose(predict(test.images[3:4]), got[3:4], atol=1e-5)  # one image alone
    np.testing.assert_allclose(predict(test.images.flip(0)), got[::-1], atol=1e-5)  # in another order
    plain = FewShotRecipe(
        recipe.members, recipe.encoder, layers=recipe.layers, classes=recipe.classes, probe_stats=recipe.probe_stats
    )
    assert not np.allclose(plain.adapt(sx, sy)(test.images), got, atol=1e-4)  # the views changed the features
    with pytest.raises(ValueError, match="tta_views must be an int >= 0"):
        fewshot_study(train, test, k_shot=2, tta_views=-1, **TINY)
    with pytest.raises(ValueError, match="tta_preset"):
        FewShotRecipe(recipe.members, recipe.encoder, layers=recipe.layers, classes=recipe.classes, tta_preset="ct")


def test_the_saved_learner_reloads_and_predicts_like_the_scored_one(pair, tmp_path: Path, scored: list) -> None:
    train, test = pair
    path = tmp_path / "protonet.safetensors"
    one = {**TINY, "meta_members": 1, "mix_probe": False}  # a single ProtoNet, no probe: the recipe is the learner
    out = fewshot_study(train, test, k_shot=2, scratch=False, meta_steps=2, learner_out=path, **one)
    reloaded = load_learner(path, expect_learner="protonet")
    assert reloaded.n_way == train.num_classes
    assert load_checkpoint(path).metadata["meta_train"]["steps"] == 2  # what was trained, stored beside the weights
    idx = torch.cat([torch.nonzero(train.labels == c).flatten()[:2] for c in range(2)])
    sx, sy = train.images[idx], train.labels[idx]
    with torch.no_grad():
        want = scored[0].adapt(sx, sy)[0](test.images)
        got = reloaded.adapt(sx, sy)[0](test.images)
    torch.testing.assert_close(got, want)
    assert out["meta_train"]["steps"] == 2
    assert out["meta_train"]["files"] == [str(path)] and not (tmp_path / "protonet_m1.safetensors").exists()


def test_the_ensemble_averages_its_saved_members(pair, tmp_path: Path, scored: list) -> None:
    """Without the probe, the recipe's probabilities are the mean of its members', each reloadable from its file."""
    train, test = pair
    path = tmp_path / "protonet.safetensors"
    kw = {**TINY, "mix_probe": False}
    out = fewshot_study(train, test, k_shot=2, scratch=False, meta_steps=2, learner_out=path, **kw)
    files = [path, tmp_path / "protonet_m1.safetensors"]
    assert out["meta_train"]["files"] == [str(f) for f in files]
    idx = np.concatenate([np.nonzero(train.labels.numpy() == c)[0][:2] for c in range(2)])
    sx, sy = train.images[torch.from_numpy(idx)], train.labels[torch.from_numpy(idx)]
    probs = []
    for f, seed in zip(files, (0, 1), strict=True):
        assert load_checkpoint(f).metadata["meta_train"]["seed"] == seed
        with torch.no_grad():
            probs.append(load_learner(f, expect_learner="protonet").adapt(sx, sy)[0](test.images).softmax(-1))
    assert not torch.allclose(probs[0], probs[1])  # two members, two networks
    np.testing.assert_allclose(scored[0](idx), ((probs[0] + probs[1]) / 2).numpy(), atol=1e-5)


def test_the_recipe_mixes_the_protonets_with_the_probe_and_reloads_as_one_model(
    pair, tmp_path: Path, scored: list
) -> None:
    """Default: (mean of the ProtoNets + the probe head on the SimCLR features) / 2; FewShotRecipe.load repeats it."""
    train, test = pair
    path = tmp_path / "protonet.safetensors"
    plain = {**TINY, "tta_views": 0}  # the probe on plain features (the views: the test above)
    out = fewshot_study(train, test, k_shot=2, scratch=False, meta_steps=2, learner_out=path, **plain)
    assert out["settings"]["mix_probe"] is True and out["meta_train"]["recipe_file"] == str(tmp_path / RECIPE_FILE)
    idx = np.concatenate([np.nonzero(train.labels.numpy() == c)[0][:2] for c in range(2)])
    sx, sy = train.images[torch.from_numpy(idx)], train.labels[torch.from_numpy(idx)]
    with torch.no_grad():
        members = [load_learner(f).adapt(sx, sy)[0](test.images).softmax(-1) for f in out["meta_train"]["files"]]
    protonets = torch.stack(members).mean(0).numpy()
    recipe = FewShotRecipe.load(tmp_path)  # the folder: recipe.safetensors and the members beside it
    assert recipe.classes == tuple(train.class_names) and len(recipe.members) == 2
    # the probe part, independently: scikit-learn on the encoder's pooled features, standardised on the pool
    enc = PooledLayers(recipe.encoder, CONV4_BLOCKS_2_4)
    pool, ftest = extract_features(enc, train.images).numpy(), extract_features(enc, test.images).numpy()
    mean, sd = pool.mean(0), np.where(pool.std(0) > 1e-8, pool.std(0), 1.0)
    clf = LogisticRegression(C=HEADS["probe"], max_iter=2000).fit((pool[idx] - mean) / sd, sy.numpy())
    want = (protonets + clf.predict_proba((ftest - mean) / sd)) / 2
    np.testing.assert_allclose(scored[0](idx), want, atol=1e-4)
    got = recipe.adapt(sx, sy)(test.images)
    np.testing.assert_allclose(got, scored[0](idx), atol=1e-4)
    np.testing.assert_allclose(recipe.adapt(sx, sy)(test.images[:1]), got[:1], atol=1e-5)  # one image alone
    assert not np.allclose(got, protonets, atol=1e-3)  # the probe moved the probabilities
    with pytest.raises(ValueError, match="must cover every class"):
        recipe.adapt(sx[:2], sy[:2])
    assert recipe.image_size == train.image_size == 28  # recorded in the file: images are checked against it
    predict = recipe.adapt(sx, sy)
    bad_images = {
        "have 3 channel\\(s\\) but the recipe was trained on 1; convert them": test.images.expand(-1, 3, -1, -1),
        "are 32x32 px but the recipe was trained at 28x28": torch.nn.functional.interpolate(test.images, size=32),
        "must be a float tensor \\(N, C, H, W\\), got \\(1, 28, 28\\); add the batch axis": test.images[0],
        "hold NaN/Inf pixels": torch.where(torch.arange(28) == 0, float("nan"), test.images),  # column 0 of each
        "must be scaled to \\[0, 1\\]": test.images * 255 + 1,
    }
    for message, images in bad_images.items():  # torch or scikit-learn errors before; now what to do
        with pytest.raises(ValueError, match="images " + message):
            predict(images)
        with pytest.raises(ValueError, match="support images " + message):
            recipe.adapt(images[: len(sy)], sy)
    recipe.image_size = None  # a file written before the size was recorded: any size is read, as it was
    assert recipe.adapt(sx, sy)(bad_images["are 32x32 px but the recipe was trained at 28x28"]).shape == (len(test), 2)
    (tmp_path / "protonet_m1.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"protonet_m1\.safetensors is missing"):
        FewShotRecipe.load(tmp_path / RECIPE_FILE)
    with pytest.raises(ValueError, match="no field 'recipe'"):
        FewShotRecipe.load(path)  # a ProtoNet's file is not a recipe
    with pytest.raises(ValueError, match="mix_probe must be True or False"):
        fewshot_study(train, test, k_shot=2, mix_probe="yes", **TINY)  # type: ignore[arg-type]


def test_self_training_refits_on_pseudo_labelled_train_images_and_reloads(pair, tmp_path: Path, scored: list) -> None:
    """self_train: the mix labels its most confident train images per class, then is fitted again with them."""
    train, test = pair
    kw = {**TINY, "self_train": 3, "tta_views": 0}
    out = fewshot_study(
        train, test, k_shot=2, scratch=False, meta_steps=2, learner_out=tmp_path / "p.safetensors", **kw
    )
    assert out["settings"]["self_train"] == 3
    recipe = FewShotRecipe.load(tmp_path)
    assert recipe.self_train == 3
    idx = np.concatenate([np.nonzero(train.labels.numpy() == c)[0][:2] for c in range(2)])
    sx, sy = train.images[torch.from_numpy(idx)], train.labels[torch.from_numpy(idx)]
    recipe.self_train = 0
    plain = recipe.adapt(sx, sy)
    rest = np.setdiff1d(np.arange(len(train)), idx)  # the train images outside the support set
    sel, lab = pseudo_label(plain(train.images[torch.from_numpy(rest)]), [], per_class=3)
    assert np.bincount(lab).tolist() == [3, 3]
    refit = recipe.adapt(
        torch.cat([sx, train.images[torch.from_numpy(rest[sel])]]), torch.cat([sy, torch.from_numpy(lab)])
    )
    want = refit(test.images)
    np.testing.assert_allclose(scored[0](idx), want, atol=1e-4)  # what the study scored, step by step
    assert not np.allclose(want, plain(test.images), atol=1e-3)  # the pseudo-labels moved the probabilities
    recipe.self_train = 3
    with pytest.raises(ValueError, match="pass unlabelled="):
        recipe.adapt(sx, sy)
    with pytest.raises(ValueError, match=r"unlabelled images are 5x28 px but the recipe was trained at 28x28"):
        recipe.adapt(sx, sy, unlabelled=train.images[:, :, :5])  # another image size
    predict = recipe.adapt(sx, sy, unlabelled=train.images)  # the saved recipe repeats it
    np.testing.assert_allclose(predict(test.images), want, atol=1e-4)
    np.testing.assert_allclose(predict(test.images[5:6]), want[5:6], atol=1e-5)  # one test image alone
    only_support = recipe.adapt(sx, sy, unlabelled=sx)  # nothing left to pseudo-label (was a torch.cat error)
    np.testing.assert_allclose(only_support(test.images), plain(test.images), atol=1e-6)
    above = {**TINY, "self_train": None, "meta_members": 1, "draws": 1}
    auto = fewshot_study(train, test, k_shot=SELF_TRAIN_MAX_K + 1, scratch=False, meta_steps=1, **above)
    assert auto["settings"]["self_train"] == 0  # the default above K = 2: no self-training
    with pytest.raises(ValueError, match="self_train must be an int >= 0"):
        fewshot_study(train, test, k_shot=2, **{**TINY, "self_train": -1})
    with pytest.raises(ValueError, match="self_train must be an int >= 0"):
        FewShotRecipe(recipe.members, recipe.encoder, layers=recipe.layers, classes=recipe.classes, self_train=True)


def test_the_simclr_temperature_reaches_the_loss_and_is_recorded(pair, monkeypatch) -> None:
    train, test = pair
    temperatures: list[float] = []

    def spy(collection, **kw):
        temperatures.append(kw["config"].temperature)
        return real(collection, **kw)

    real = fewshot_mod.pretrain_simclr
    monkeypatch.setattr(fewshot_mod, "pretrain_simclr", spy)
    default = fewshot_study(train, test, k_shot=2, scratch=False, **NO_META)
    warm = fewshot_study(train, test, k_shot=2, scratch=False, temperature=0.5, **NO_META)
    assert temperatures == [0.2, 0.5]  # the default is section 3's, kept by section 17
    assert (default["settings"]["temperature"], warm["settings"]["temperature"]) == (0.2, 0.5)
    assert default["pretrain"]["final_loss"] != warm["pretrain"]["final_loss"]  # another loss was minimised
    for bad in (0, -0.1, float("nan"), float("inf"), True, "0.2"):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            fewshot_study(train, test, k_shot=2, temperature=bad, **TINY)  # type: ignore[arg-type]
    assert temperatures == [0.2, 0.5]  # refused before any pretraining
