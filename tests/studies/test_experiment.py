"""Experiment assembly (``medmeta_lib.studies.experiment``): split protocols, shared evaluation episodes,
leave-one-site-out and site-transfer experiments, and learners loaded from notebook 03's outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import medmeta_lib.studies.experiment as experiment
import medmeta_lib.studies.sites as site_studies
from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.synthetic import MedSynth
from medmeta_lib.studies.experiment import evaluate_split, obtain_learners, train_learners
from medmeta_lib.studies.experiment_split import make_split
from medmeta_lib.studies.sites import leave_one_site_out, site_transfer_matrix
from medmeta_lib.training.checkpoint import load_checkpoint
from medmeta_lib.training.learner_io import build_learner
from medmeta_lib.training.meta_training import MetaTrainConfig

HIDDEN = 8
MODS = ("chest_xray", "dermoscopy", "fundus")
TASK = {"n_way": 5, "k_shot": 1, "q_query": 2}
TINY = MetaTrainConfig(steps=1, meta_batch=1, val_every=0, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.fixture(scope="module")
def cols() -> dict[str, ImageCollection]:
    """Three modalities × six classes, three sites, three patients per (class, site) and split."""
    synth = MedSynth(modalities=list(MODS), n_sites=3)
    return {s: synth.generate(image_size=28, split=s, seed=0, n_per_class_site=3) for s in ("train", "val", "test")}


def _episodes(sampler, n: int = 8):
    return [sampler.sample() for _ in range(n)]


def _ep_sites(ep) -> set[int]:
    return set(ep.support_sites.tolist()) | set(ep.query_sites.tolist())


def _mods_of(col: ImageCollection, classes) -> set[str]:
    return {col.class_modalities[c] for c in classes}


# ------------------------------------------------------------------ make_split


def test_modality_split_holds_out_whole_modalities(cols) -> None:
    tr, va, te = cols["train"], cols["val"], cols["test"]
    sp = make_split(tr, te, val=va, split="modality", seed=0, **TASK)
    assert sp.kind == "modality"
    # defaults: the last modality is the test modality, the one before it validates
    assert _mods_of(tr, sp.train.classes) == {"chest_xray"}
    assert _mods_of(tr, sp.val.classes) == {"dermoscopy"}
    assert _mods_of(tr, sp.test.classes) == {"fundus"}
    assert sorted(sp.train.classes + sp.val.classes + sp.test.classes) == list(range(tr.num_classes))
    assert sp.train.collection is tr and sp.val.collection is va and sp.test.collection is te
    for sampler in (sp.train, sp.val, sp.test):
        for ep in _episodes(sampler):
            assert set(ep.classes) <= set(sampler.classes)
            assert len(_mods_of(tr, ep.classes)) == 1  # a task never mixes modalities
    assert "test ['fundus']" in sp.description
    # explicit choice, and "auto" picks the modality protocol with three or more modalities
    sp2 = make_split(tr, te, split="modality", val_modalities=["fundus"], test_modalities=["chest_xray"], **TASK)
    assert _mods_of(tr, sp2.train.classes) == {"dermoscopy"} and _mods_of(tr, sp2.test.classes) == {"chest_xray"}
    assert make_split(tr, te, split="auto", **TASK).kind == "modality"


def test_class_split_on_coarse_medsynth_is_refused_as_modality_recognition(cols) -> None:
    # six classes per modality cannot hold five validation and five test classes: 60/20/20 leaves one test
    # class per modality, no 5-way task fits in a modality, and tasks across modalities would test modality
    # recognition
    with pytest.raises(ValueError, match="modality recognition"):
        make_split(cols["train"], cols["test"], split="classes", **{**TASK, "n_way": 5})
    # 2-way tasks fit: two validation and two test classes per modality, tasks within one modality
    sp = make_split(cols["train"], cols["test"], split="classes", **{**TASK, "n_way": 2})
    test_ids = sp.test.classes
    mods = cols["train"].class_modalities
    assert all(sum(mods[c] == m for c in test_ids) == 2 for m in MODS)
    assert all(len({mods[c] for c in ep.classes}) == 1 for ep in _episodes(sp.test))


def _many_classes(n_mod: int, per_mod: int, seed: int = 0) -> ImageCollection:
    g = torch.Generator().manual_seed(seed)
    k = n_mod * per_mod
    labels = torch.arange(k).repeat_interleave(4)
    images = torch.rand(len(labels), 1, 8, 8, generator=g)
    mods = tuple(f"mod{c // per_mod}" for c in range(k))
    return ImageCollection(images=images, labels=labels, class_names=[f"c{c}" for c in range(k)], class_modalities=mods)


def test_class_split_gives_disjoint_class_sets_and_tasks_within_one_modality() -> None:
    col = _many_classes(2, 15)  # 9 / 3 / 3 classes of each modality
    sp = make_split(col, col, split="classes", seed=0, n_way=3, k_shot=1, q_query=1)
    a, b, c = set(sp.train.classes), set(sp.val.classes), set(sp.test.classes)
    assert sp.kind == "classes" and not (a & b) and not (a & c) and not (b & c)
    assert a | b | c == set(range(col.num_classes))
    for m in ("mod0", "mod1"):
        mine = set(col.classes_of_modality(m))
        assert (len(mine & a), len(mine & b), len(mine & c)) == (9, 3, 3)
    for sampler in (sp.train, sp.val, sp.test):
        for ep in _episodes(sampler):
            assert len(_mods_of(col, ep.classes)) == 1  # a task never mixes modalities
    for ep in _episodes(sp.test):
        assert set(ep.classes) <= c
    assert make_split(col, col, split="classes", seed=1, n_way=3, k_shot=1, q_query=1).test.classes != sp.test.classes
    # 4-way tasks: at least four validation and four test classes per modality (15 = 7 + 4 + 4)
    sp4 = make_split(col, col, split="classes", n_way=4, k_shot=1, q_query=1)
    for m in ("mod0", "mod1"):
        mine = set(col.classes_of_modality(m))
        assert [len(mine & set(s.classes)) for s in (sp4.train, sp4.val, sp4.test)] == [7, 4, 4]
    with pytest.raises(ValueError, match="fewer than n_way=8 test classes of one modality"):
        make_split(col, col, split="classes", n_way=8, k_shot=1, q_query=1)  # 15 classes cannot hold 8 + 8
    one = _many_classes(1, 20)  # a single modality: an ordinary class split
    sp1 = make_split(one, one, split="classes", n_way=4, k_shot=1, q_query=1)
    assert len(sp1.test.classes) == 4


def test_site_split_holds_out_a_hospital(cols) -> None:
    tr, te = cols["train"], cols["test"]
    sp = make_split(tr, te, val=cols["val"], split="sites", **TASK)  # default: the last site
    assert sp.kind == "sites"
    assert tuple(sp.train.sites) == (0, 1) and tuple(sp.val.sites) == (0, 1) and tuple(sp.test.sites) == (2,)
    assert sp.val.collection is cols["val"]  # validation on other patients, never the training images
    assert sp.test.one_site and sp.test.collection is te
    assert sp.train.classes == sp.test.classes == list(range(tr.num_classes))  # same classes, new hospital
    assert all(_ep_sites(ep) <= {0, 1} for ep in _episodes(sp.train))
    assert all(_ep_sites(ep) == {2} and ep.site == 2 for ep in _episodes(sp.test))
    named = make_split(tr, te, split="sites", held_out_sites=["hospital_A"], **TASK)
    assert tuple(named.train.sites) == (1, 2) and tuple(named.test.sites) == (0,)
    assert "test at ['hospital_A']" in named.description


def test_no_split_uses_every_class_and_site(cols) -> None:
    tr, te = cols["train"], cols["test"]
    sp = make_split(tr, te, val=cols["val"], split="none", **TASK)
    assert sp.kind == "none"
    for sampler in (sp.train, sp.val, sp.test):
        assert sampler.classes == list(range(tr.num_classes)) and sampler.sites == [0, 1, 2]
    assert sp.train.collection is tr and sp.test.collection is te  # train/test differ by patients only
    one_mod = MedSynth(modalities=["chest_xray"], n_sites=2).generate(image_size=28, n_per_class_site=2)
    assert make_split(one_mod, one_mod, split="auto", **TASK).kind == "none"


def test_validation_never_reads_the_training_images(cols) -> None:
    tr, te = cols["train"], cols["test"]
    for protocol in ("sites", "none"):
        sp = make_split(tr, te, split=protocol, **TASK)  # no validation collection
        assert sp.val is None and "no validation" in sp.description
        with pytest.raises(ValueError, match="no validation episodes"):
            train_learners(["protonet"], sp, config=MetaTrainConfig(steps=1, val_every=1), val_episodes=2)
    # held-out classes: validation classes are disjoint from the training classes, so the train split's
    # images of them are unseen data
    sp = make_split(tr, te, split="modality", **TASK)
    assert sp.val is not None and not set(sp.val.classes) & set(sp.train.classes)


def test_exclude_modalities_holds_a_target_out_at_the_task_level(cols) -> None:
    tr, te = cols["train"], cols["test"]
    chest = set(tr.classes_of_modality("chest_xray"))
    sp = make_split(tr, te, val=cols["val"], split="none", exclude_modalities=["chest_xray"], **TASK)
    assert not chest & set(sp.train.classes) and not chest & set(sp.val.classes)
    assert all(not chest & set(ep.classes) for ep in _episodes(sp.train))
    assert "excluded from meta-training: ['chest_xray']" in sp.description
    spm = make_split(tr, te, split="modality", exclude_modalities=["chest_xray"], **TASK)
    assert not chest & set(spm.train.classes) and not chest & set(spm.test.classes)
    assert spm.to_json()["exclude_modalities"] == ["chest_xray"]
    with pytest.raises(ValueError, match="unknown modality"):
        make_split(tr, te, split="none", exclude_modalities=["xray"], **TASK)


def test_make_split_bad_settings(cols) -> None:
    tr, te = cols["train"], cols["test"]
    with pytest.raises(ValueError, match=r"split must be one of .*'modalities'"):
        make_split(tr, te, split="modalities")
    with pytest.raises(ValueError, match=r"cannot draw 7-way .*only 6 class\(es\) of one modality.*Lower n_way"):
        make_split(tr, te, split="modality", n_way=7, k_shot=1, q_query=2)
    with pytest.raises(ValueError, match=r"unknown site 'hospital_Z'"):
        make_split(tr, te, split="sites", held_out_sites=["hospital_Z"], **TASK)
    with pytest.raises(ValueError, match=r"unknown modality 'xray'"):
        make_split(tr, te, split="modality", test_modalities=["xray"], **TASK)


# ------------------------------------------------------------------ evaluate_split


class _Spy:
    """Record the episodes a learner is evaluated on."""

    def __init__(self, learner) -> None:
        self.seen: list[tuple[list[int], list[int]]] = []
        real = learner.evaluate_episode

        def spy(ep, **kw):
            self.seen.append((ep.support_idx.tolist(), ep.query_idx.tolist()))
            return real(ep, **kw)

        learner.evaluate_episode = spy


def test_evaluate_split_uses_the_same_fixed_episodes_for_every_learner(cols) -> None:
    sp = make_split(cols["train"], cols["test"], split="modality", **TASK)
    kw = {"backbone_kwargs": {"hidden": HIDDEN}, "n_way": 5, "seed": 0}
    learners = {
        "protonet": build_learner("protonet", **kw),
        "protonet_twin": build_learner("protonet", **kw),
        "baseline": build_learner(
            "baseline", learner_kwargs={"num_train_classes": cols["train"].num_classes, "eval_steps": 2}, **kw
        ),
    }
    spies = {n: _Spy(lr) for n, lr in learners.items()}
    res = evaluate_split(learners, sp, episodes=6, seed=42)
    assert set(res) == set(learners)
    first = list(spies["protonet"].seen)
    assert len(first) == 6 and len({tuple(s) for s, _ in first}) > 1  # six different tasks...
    assert all(s.seen == first for s in spies.values())  # ...the same six for every learner
    assert res["protonet"].per_episode_acc == res["protonet_twin"].per_episode_acc
    assert res["protonet"].acc_mean == res["protonet_twin"].acc_mean
    for r in res.values():
        assert r.episodes == 6 and len(r.per_episode_acc) == 6
        assert r.settings == {
            "n_way": 5, "k_shot": 1, "q_query": 2, "episodes": 6, "split": sp.description, "episode_seed": 42,
            "transductive": False,
        }  # fmt: skip
        assert set(r.per_site) <= set(cols["test"].site_names)

    # the fixed set does not depend on how far the test stream has been consumed
    _episodes(sp.test, 5)
    again = evaluate_split({"protonet": learners["protonet"]}, sp, episodes=6, seed=42)
    assert spies["protonet"].seen[6:] == first
    assert again["protonet"].per_episode_acc == res["protonet"].per_episode_acc
    evaluate_split({"protonet": learners["protonet"]}, sp, episodes=6, seed=43)
    assert spies["protonet"].seen[12:] != first  # another seed, other tasks


# ------------------------------------------------------------------ site experiments


@pytest.fixture
def training_spy(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Record, for every meta_train call made by experiment.py, the allowed sites and the sites drawn."""
    calls: list[dict] = []
    real = experiment.meta_train

    def spy(learner, sampler, **kw):
        rec = {"sites": tuple(sampler.sites), "drawn": set(), "one_site": sampler.one_site}
        real_sample = sampler.sample

        def sample():
            ep = real_sample()
            rec["drawn"] |= _ep_sites(ep)
            return ep

        sampler.sample = sample
        calls.append(rec)
        return real(learner, sampler, **kw)

    monkeypatch.setattr(experiment, "meta_train", spy)
    return calls


@pytest.fixture
def site_eval_spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[ImageCollection, tuple[int, ...], tuple[int, ...]]]:
    calls: list[tuple[ImageCollection, tuple[int, ...]]] = []
    real = site_studies._site_eval

    def spy(learner, col, sites, **kw):
        calls.append((col, tuple(sites), tuple(kw.get("query_sites") or ())))
        return real(learner, col, sites, **kw)

    monkeypatch.setattr(site_studies, "_site_eval", spy)
    return calls


def test_leave_one_site_out_one_row_per_site_held_out_site_unseen(cols, training_spy, site_eval_spy) -> None:
    tr, te = cols["train"], cols["test"]
    cfg = MetaTrainConfig(steps=2, meta_batch=2, val_every=0, seed=0)
    out = leave_one_site_out(
        "protonet", tr, te, config=cfg, episodes=3, seed=0, backbone_kwargs={"hidden": HIDDEN}, **TASK
    )
    assert list(out) == list(tr.site_names)
    for row in out.values():
        assert set(row) == {
            "held_out_acc",
            "held_out_ci95",
            "held_out_remote_labels_acc",
            "held_out_remote_labels_ci95",
            "training_sites_acc",
            "training_sites_ci95",
        }
        assert all(0.0 <= row[k] <= 1.0 for k in ("held_out_acc", "held_out_remote_labels_acc", "training_sites_acc"))
    assert len(training_spy) == 3
    for s, call in enumerate(training_spy):
        others = tuple(i for i in range(3) if i != s)
        assert call["sites"] == others  # the held-out site is excluded from training...
        assert call["drawn"] and call["drawn"] <= set(others)  # ...and no training image comes from it
    # each row scores new patients (the test collection): support and queries at the held-out site; support
    # at the training sites with queries at the held-out one; both at the training sites
    assert all(col is te for col, _, _ in site_eval_spy)
    expect = []
    for s in range(3):
        others = tuple(x for x in range(3) if x != s)
        expect += [((s,), ()), (others, (s,)), (others, ())]
    assert [(sites, query) for _, sites, query in site_eval_spy] == expect


def test_site_transfer_matrix_trains_at_one_site_tests_at_each(cols, training_spy, site_eval_spy) -> None:
    tr, te = cols["train"], cols["test"]
    out = site_transfer_matrix(
        "protonet", tr, te, config=TINY, episodes=2, seed=0, backbone_kwargs={"hidden": HIDDEN}, **TASK
    )
    assert out["rows"] == out["cols"] == list(tr.site_names) and out["learner"] == "protonet"
    assert len(out["acc"]) == 3 and all(len(r) == 3 for r in out["acc"])
    assert all(0.0 <= a <= 1.0 for r in out["acc"] for a in r)
    assert [c["sites"] for c in training_spy] == [(0,), (1,), (2,)]
    assert all(c["drawn"] == set(c["sites"]) for c in training_spy)
    # each row's learner is scored on new patients (the test collection) at every site, support and queries there
    assert all(col is te for col, _, _ in site_eval_spy)
    assert [(sites, query) for _, sites, query in site_eval_spy] == [((t,), ()) for _ in range(3) for t in range(3)]


# ------------------------------------------------------------------ train_learners / obtain_learners


def test_train_learners_writes_one_checkpoint_directory_per_learner(cols, tmp_path: Path) -> None:
    sp = make_split(cols["train"], cols["test"], val=cols["val"], split="modality", **TASK)
    cfg = MetaTrainConfig(steps=2, meta_batch=1, val_every=2, seed=0)
    res = train_learners(
        ["protonet", "baseline", "scratch"], sp, backbone_kwargs={"hidden": HIDDEN}, config=cfg, val_episodes=2,
        out_dir=tmp_path, progress=False, metadata={"run": "t"},
    )  # fmt: skip
    assert list(res) == ["protonet", "baseline", "scratch"]
    for name in res:
        ck = load_checkpoint(tmp_path / name / "last.safetensors")
        assert ck.metadata["spec"]["learner"] == name and ck.metadata["run"] == "t"
        assert ck.metadata["data_fingerprint"] == cols["train"].fingerprint()
        assert ck.metadata["split"] == sp.description
    assert res["protonet"].best_step == 2 and res["scratch"].best_step is None
    # the baselines' global classifier covers every class id of the training collection
    assert res["baseline"].learner.num_train_classes == cols["train"].num_classes


def test_obtain_learners_loads_notebook03_checkpoints_and_trains_the_rest(cols, tmp_path: Path) -> None:
    sp = make_split(cols["train"], cols["test"], split="modality", **TASK)
    trained = train_learners(
        ["protonet"], sp, backbone_kwargs={"hidden": HIDDEN}, config=TINY, val_episodes=0, out_dir=tmp_path / "ck",
        progress=False,
    )  # fmt: skip
    ck = trained["protonet"].last_checkpoint
    (tmp_path / "metrics.json").write_text(json.dumps({"training": {"protonet": {"checkpoint": str(ck)}}}))
    learners, note = obtain_learners(
        tmp_path, ["protonet", "baseline"], sp, fallback_steps=1, backbone_kwargs={"hidden": HIDDEN}
    )
    assert list(learners) == ["protonet", "baseline"]
    state = trained["protonet"].learner.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in learners["protonet"].state_dict().items())
    assert learners["protonet"] is not trained["protonet"].learner  # rebuilt from the file
    assert "loaded from notebook 03" in note and "['protonet']" in note and "['baseline']" in note

    fresh, note2 = obtain_learners(None, ["protonet"], sp, fallback_steps=1, backbone_kwargs={"hidden": HIDDEN})
    assert "loaded" not in note2 and "trained here for 1 steps" in note2 and fresh["protonet"].name == "protonet"

    # scratch has no meta-parameters: it is built, and the note does not claim it was trained
    both, note3 = obtain_learners(
        tmp_path, ["protonet", "scratch"], sp, fallback_steps=1, backbone_kwargs={"hidden": HIDDEN}
    )
    assert list(both) == ["protonet", "scratch"] and both["scratch"].name == "scratch"
    assert "trained here" not in note3 and "built here (no meta-training needed): ['scratch']" in note3


def test_obtain_split_reuses_notebook_03s_split_and_refuses_a_mismatch(cols, tmp_path: Path) -> None:
    from medmeta_lib.runio import write_metrics
    from medmeta_lib.studies.experiment_split import obtain_split

    tr, te = cols["train"], cols["test"]
    sp03 = make_split(tr, te, split="modality", test_modalities=["chest_xray"], seed=3, **TASK)
    write_metrics(tmp_path, {"split_spec": sp03.to_json()})
    sp04, note = obtain_split(tmp_path, tr, te, n_way=3, k_shot=1, q_query=2, seed=0)
    assert sp04.test.classes == sp03.test.classes and "notebook 03" in note
    assert sp04.test.n_way == 3  # this notebook's own task size
    # a split whose test classes were meta-training classes in notebook 03 is refused
    bad = {**sp03.to_json(), "test_classes": list(sp03.train.classes)[:6]}
    write_metrics(tmp_path, {"split_spec": bad})
    with pytest.raises(ValueError, match="meta-trained on"):
        obtain_split(tmp_path, tr, te, **TASK)
    write_metrics(tmp_path, {"headline": {}})
    with pytest.raises(ValueError, match="no split_spec"):
        obtain_split(tmp_path, tr, te, **TASK)
    default, note = obtain_split(None, tr, te, **TASK)
    assert default.kind == "modality" and "default protocol" in note


def test_obtain_split_accepts_patient_and_site_hold_outs(cols, tmp_path: Path) -> None:
    from medmeta_lib.runio import write_metrics
    from medmeta_lib.studies.experiment_split import check_split_matches, obtain_split

    tr, te = cols["train"], cols["test"]
    for protocol in ("none", "sites"):
        sp = make_split(tr, te, val=cols["val"], split=protocol, **TASK)
        check_split_matches(sp, sp.to_json(), where="here")  # classes shared by design: accepted
        write_metrics(tmp_path, {"split_spec": sp.to_json()})
        again, _ = obtain_split(tmp_path, tr, te, **TASK)
        assert again.kind == protocol and again.test.classes == sp.test.classes


def test_auto_protocol_is_new_classes_within_modalities_on_the_fine_taxonomy() -> None:
    fine = MedSynth(taxonomy="fine", modalities=["chest_xray", "brain_mri", "histology"], n_sites=2)
    tr, te = (fine.generate(image_size=16, split=s, seed=0, n_per_class_site=1) for s in ("train", "test"))
    sp = make_split(tr, te, split="auto", n_way=5, k_shot=1, q_query=1)
    assert sp.kind == "classes" and "class split" in sp.description
    parts = [set(s.classes) for s in (sp.train, sp.val, sp.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    for m in tr.modalities:
        mine = set(tr.classes_of_modality(m))
        assert [len(mine & p) >= 5 for p in parts] == [True, True, True], m  # 5-way tasks in every part
    assert all(len(_mods_of(tr, ep.classes)) == 1 for ep in _episodes(sp.test))
    coarse = MedSynth(modalities=["chest_xray", "brain_mri", "histology"], n_sites=2)
    ctr, cte = (coarse.generate(image_size=16, split=s, seed=0, n_per_class_site=2) for s in ("train", "test"))
    assert make_split(ctr, cte, split="auto", n_way=5, k_shot=1, q_query=1).kind == "modality"
