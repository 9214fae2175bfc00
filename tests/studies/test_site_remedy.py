"""The site-invariance remedy (``medmeta_lib.studies.sites.site_invariance_remedy``): what each encoder is
pretrained on, that the comparison is paired, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import medmeta_lib.studies.experiment as experiment
import medmeta_lib.studies.sites as site_studies
from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.synthetic import MedSynth
from medmeta_lib.ssl.simclr_config import SimCLRConfig
from medmeta_lib.studies.sites import site_invariance_remedy, site_remedy_summary
from medmeta_lib.training.meta_training import MetaTrainConfig

TASK = {"n_way": 3, "k_shot": 1, "q_query": 2}
SSL = SimCLRConfig(epochs=1, batch_size=32, seed=3)


@pytest.fixture(scope="module")
def cols() -> dict[str, ImageCollection]:
    """One modality × six classes at three hospitals, three patients per (class, site) and split."""
    synth = MedSynth(modalities=["dermoscopy"], n_sites=3)
    return {s: synth.generate(image_size=16, split=s, seed=0, n_per_class_site=3) for s in ("train", "test")}


@pytest.fixture
def pretrain_spy(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    calls: list[dict] = []
    real = site_studies.pretrain_simclr

    def spy(collection, **kw):
        calls.append({"sites": set(collection.sites.tolist()), "n": len(collection), "config": kw["config"]})
        return real(collection, **kw)

    monkeypatch.setattr(site_studies, "pretrain_simclr", spy)
    return calls


def test_both_encoders_pretrain_on_the_same_training_hospitals_only(cols, pretrain_spy, one_thread) -> None:
    out = site_invariance_remedy(
        cols["train"], cols["test"], held_out_site="hospital_C",
        simclr=SSL, episodes=4, seed=0, backbone_kwargs={"hidden": 8}, **TASK,
    )  # fmt: skip
    assert out["held_out_site"] == cols["train"].site_names[2]
    assert [c["config"].site_invariance for c in pretrain_spy] == [False, True]  # the only difference...
    assert all(c["config"].seed == SSL.seed and c["config"].epochs == SSL.epochs for c in pretrain_spy)
    assert [c["sites"] for c in pretrain_spy] == [{0, 1}, {0, 1}]  # ...and neither saw the new hospital
    assert pretrain_spy[0]["n"] == pretrain_spy[1]["n"] == int((cols["train"].sites != 2).sum())
    protocols = {"training_sites", "held_out", "held_out_remote_labels"}
    assert set(out["encoders"]) == {"plain", "site_invariant"}
    assert all(set(per) == protocols for per in out["encoders"].values())
    for p in protocols:  # paired over the same episodes: the mean difference is the difference of the means
        d = out["difference"][p]
        gap = out["encoders"]["site_invariant"][p]["acc"] - out["encoders"]["plain"][p]["acc"]
        assert d["episodes"] == 4 and np.isclose(d["mean"], gap, atol=1e-9)
        assert 0.0 <= out["encoders"]["plain"][p]["acc"] <= 1.0 and d["ci95"] >= 0.0
    assert out["settings"]["meta_steps"] == 0 and out["settings"]["simclr_epochs"] == 1


def test_meta_training_stays_at_the_training_hospitals(cols, pretrain_spy, monkeypatch, one_thread) -> None:
    drawn: list[set[int]] = []
    real = experiment.meta_train

    def spy(learner, sampler, **kw):
        drawn.append(set(sampler.sites))
        return real(learner, sampler, **kw)

    monkeypatch.setattr(experiment, "meta_train", spy)
    out = site_invariance_remedy(
        cols["train"], cols["test"], held_out_site=0, simclr=SSL, episodes=2, backbone_kwargs={"hidden": 8},
        meta_config=MetaTrainConfig(steps=1, meta_batch=1, val_every=0), **TASK,
    )  # fmt: skip
    assert drawn == [{1, 2}, {1, 2}] and out["settings"]["meta_steps"] == 1
    assert [c["sites"] for c in pretrain_spy] == [{1, 2}, {1, 2}]


def test_bad_settings_are_named(cols) -> None:
    with pytest.raises(ValueError, match="held_out_site='nowhere'"):
        site_invariance_remedy(cols["train"], cols["test"], held_out_site="nowhere", **TASK)
    with pytest.raises(ValueError, match="out of range"):
        site_invariance_remedy(cols["train"], cols["test"], held_out_site=3, **TASK)
    two = MedSynth(modalities=["dermoscopy"], n_sites=2).generate(image_size=16, n_per_class_site=2)
    with pytest.raises(ValueError, match="at least 3 sites"):
        site_invariance_remedy(two, two, **TASK)
    with pytest.raises(ValueError, match="episodes must be >= 2"):
        site_invariance_remedy(cols["train"], cols["test"], episodes=1, **TASK)


@pytest.mark.parametrize(
    ("mean", "ci", "says"),
    [(0.05, 0.02, "raises accuracy"), (-0.05, 0.02, "lowers accuracy"), (0.01, 0.02, "no clear difference")],
)
def test_summary_sentence_follows_the_paired_interval(mean: float, ci: float, says: str) -> None:
    d = {"mean": mean, "ci95": ci, "episodes": 50}
    text = site_remedy_summary({"held_out_site": "hospital_D", "difference": {"held_out_remote_labels": d}})
    assert says in text and "hospital_D" in text and f"{mean:+.3f} ± {ci:.3f}" in text and "50 tasks" in text


def test_summary_says_when_local_labels_beat_the_remedy() -> None:
    d = {"mean": 0.02, "ci95": 0.01, "episodes": 100}
    enc = {"plain": {"held_out": {"acc": 0.45, "ci95": 0.02}},
           "site_invariant": {"held_out_remote_labels": {"acc": 0.38, "ci95": 0.02}}}  # fmt: skip
    text = site_remedy_summary({"held_out_site": "D", "difference": {"held_out_remote_labels": d}, "encoders": enc})
    assert "a few labels taken at D are worth more (0.450 with plain pretraining against 0.380" in text
    enc["plain"]["held_out"]["acc"] = 0.40  # intervals overlap: no such claim
    text = site_remedy_summary({"held_out_site": "D", "difference": {"held_out_remote_labels": d}, "encoders": enc})
    assert "worth more" not in text and text.endswith(".")
