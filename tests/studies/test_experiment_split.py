"""Split protocols (``medmeta_lib.studies.experiment_split``): whole modalities, new classes within a modality,
a hospital or patients held out, validation apart from training, and notebook 03's split reused by notebook 04."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.synthetic import MedSynth
from medmeta_lib.studies.experiment import train_learners
from medmeta_lib.studies.experiment_split import make_split
from medmeta_lib.training.meta_training import MetaTrainConfig
from tests.studies.split_helpers import MODS, TASK, episode_sites, episodes, modalities_of

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_modality_split_holds_out_whole_modalities(cols) -> None:
    tr, va, te = cols["train"], cols["val"], cols["test"]
    sp = make_split(tr, te, val=va, split="modality", seed=0, **TASK)
    assert sp.kind == "modality"
    # defaults: the last modality is the test modality, the one before it validates
    assert modalities_of(tr, sp.train.classes) == {"chest_xray"}
    assert modalities_of(tr, sp.val.classes) == {"dermoscopy"}
    assert modalities_of(tr, sp.test.classes) == {"fundus"}
    assert sorted(sp.train.classes + sp.val.classes + sp.test.classes) == list(range(tr.num_classes))
    assert sp.train.collection is tr and sp.val.collection is va and sp.test.collection is te
    for sampler in (sp.train, sp.val, sp.test):
        for ep in episodes(sampler):
            assert set(ep.classes) <= set(sampler.classes)
            assert len(modalities_of(tr, ep.classes)) == 1  # a task never mixes modalities
    assert "test ['fundus']" in sp.description
    # explicit choice, and "auto" picks the modality protocol with three or more modalities
    sp2 = make_split(tr, te, split="modality", val_modalities=["fundus"], test_modalities=["chest_xray"], **TASK)
    assert modalities_of(tr, sp2.train.classes) == {"dermoscopy"} and modalities_of(tr, sp2.test.classes) == {
        "chest_xray"
    }
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
    assert all(len({mods[c] for c in ep.classes}) == 1 for ep in episodes(sp.test))


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
        for ep in episodes(sampler):
            assert len(modalities_of(col, ep.classes)) == 1  # a task never mixes modalities
    for ep in episodes(sp.test):
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
    assert all(episode_sites(ep) <= {0, 1} for ep in episodes(sp.train))
    assert all(episode_sites(ep) == {2} and ep.site == 2 for ep in episodes(sp.test))
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
    assert all(not chest & set(ep.classes) for ep in episodes(sp.train))
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
    assert all(len(modalities_of(tr, ep.classes)) == 1 for ep in episodes(sp.test))
    coarse = MedSynth(modalities=["chest_xray", "brain_mri", "histology"], n_sites=2)
    ctr, cte = (coarse.generate(image_size=16, split=s, seed=0, n_per_class_site=2) for s in ("train", "test"))
    assert make_split(ctr, cte, split="auto", n_way=5, k_shot=1, q_query=1).kind == "modality"
