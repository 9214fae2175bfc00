"""Experiment assembly (``medmeta_lib.studies.experiment``): shared evaluation episodes, leave-one-site-out and
site-transfer experiments, and learners loaded from notebook 03's outputs (split protocols:
``test_experiment_split.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import medmeta_lib.studies.experiment as experiment
import medmeta_lib.studies.sites as site_studies
from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.studies.experiment import evaluate_split, obtain_learners, train_learners
from medmeta_lib.studies.experiment_split import make_split
from medmeta_lib.studies.sites import leave_one_site_out, site_transfer_matrix
from medmeta_lib.training.checkpoint import load_checkpoint
from medmeta_lib.training.learner_io import build_learner
from medmeta_lib.training.meta_training import MetaTrainConfig
from tests.studies.split_helpers import TASK, episode_sites, episodes

HIDDEN = 8
TINY = MetaTrainConfig(steps=1, meta_batch=1, val_every=0, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread_module")


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
    episodes(sp.test, 5)
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
            rec["drawn"] |= episode_sites(ep)
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
