"""Meta-training (``medmeta_lib.training.meta_training``): determinism by seed, exact resume, best-state keeping,
checkpoints that rebuild every learner, encoder initialisation and clear errors for bad settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.data.synthetic import MedSynth
from medmeta_lib.evaluation.episodic import evaluate_learner
from medmeta_lib.learners import list_learners
from medmeta_lib.models import create_backbone
from medmeta_lib.training.checkpoint import load_checkpoint, save_backbone, save_checkpoint
from medmeta_lib.training.learner_io import build_learner, load_learner
from medmeta_lib.training.meta_training import MetaTrainConfig, meta_train

HIDDEN = 8
N_WAY, K_SHOT, Q_QUERY = 5, 1, 2
# tiny adaptation settings so that every learner is quick; they also exercise learner_kwargs round trips
FAST = {
    "maml": {"inner_steps": 1, "eval_steps": 1},
    "fomaml": {"inner_steps": 1, "eval_steps": 1},
    "metasgd": {"inner_steps": 1, "eval_steps": 1},
    "anil": {"inner_steps": 1, "eval_steps": 2},
    "protonet": {},
    "baseline": {"eval_steps": 3},
    "baseline++": {"eval_steps": 3},
    "scratch": {"eval_steps": 2},
    "weightgen": {"refine_steps": 1},
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine torch's default threads oversubscribe (10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cols() -> dict[str, ImageCollection]:
    synth = MedSynth(modalities=["chest_xray", "fundus"], n_sites=2)  # 12 classes, 6 per modality
    return {s: synth.generate(image_size=28, split=s, seed=0, n_per_class_site=3) for s in ("train", "val")}


def _sampler(col: ImageCollection, n_way: int = N_WAY, seed: int = 0) -> EpisodeSampler:
    return EpisodeSampler(col, n_way, K_SHOT, Q_QUERY, same_modality=True, seed=seed)


def _val(cols: dict[str, ImageCollection], n: int = 3):
    return _sampler(cols["val"], seed=5).fixed(n, seed=7)


def _learner(name: str, col: ImageCollection, *, seed: int = 0, n_way: int = N_WAY, **extra: Any):
    kw = dict(FAST[name])
    if name in ("baseline", "baseline++"):
        kw["num_train_classes"] = col.num_classes
    return build_learner(name, backbone_kwargs={"hidden": HIDDEN}, n_way=n_way, learner_kwargs=kw, seed=seed, **extra)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _no_time(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History without the wall-clock field (the only entry that may differ between identical runs)."""
    return [{k: v for k, v in rec.items() if k != "time"} for rec in history]


def _prefixed(ck, prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in ck.tensors.items() if k.startswith(prefix)}


# ------------------------------------------------------------------ determinism


@pytest.mark.parametrize("name", ["maml", "protonet"])
def test_same_seed_same_run_other_seed_other_run(name: str, cols) -> None:
    val = _val(cols)
    test_set = _sampler(cols["val"], seed=9).fixed(3, seed=11)
    cfg = {"steps": 3, "meta_batch": 2, "val_every": 3, "lr": 1e-2}

    def run(seed: int):
        learner = _learner(name, cols["train"], seed=seed)
        torch.manual_seed(1000 + seed)  # meta_train must not depend on the caller's global RNG state
        res = meta_train(
            learner, _sampler(cols["train"]), config=MetaTrainConfig(seed=seed, **cfg), val_episodes=val, progress=False
        )
        return res, _state(res.learner), evaluate_learner(res.learner, test_set).per_episode_acc

    (r1, s1, m1), (r2, s2, m2), (r3, s3, _) = run(0), run(0), run(1)
    assert _same_state(s1, s2)
    assert _no_time(r1.history) == _no_time(r2.history)
    assert len(r1.history) == 3 and "val_acc" in r1.history[-1]
    assert (r1.best_step, r1.best_val_acc) == (r2.best_step, r2.best_val_acc)
    assert m1 == m2
    # another seed: other initialisation and other episode stream
    assert not _same_state(s1, s3)
    assert [h["loss"] for h in r1.history] != [h["loss"] for h in r3.history]


def test_config_seed_alone_changes_the_episode_stream(cols) -> None:
    """Same initial weights, different MetaTrainConfig.seed → different episodes, different result."""

    def run(seed: int):
        learner = _learner("protonet", cols["train"], seed=0)
        cfg = MetaTrainConfig(steps=2, meta_batch=1, val_every=0, seed=seed)
        return _state(meta_train(learner, _sampler(cols["train"]), config=cfg, progress=False).learner)

    assert not _same_state(run(0), run(1))


# ------------------------------------------------------------------ resume and best state


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("name", ["maml", "protonet"])
def test_resume_after_interruption_is_bit_identical(name: str, cols, tmp_path: Path) -> None:
    cfg = MetaTrainConfig(steps=6, meta_batch=2, val_every=1, checkpoint_every=2, lr=1e-2, seed=3)
    val = _val(cols)

    full = meta_train(
        _learner(name, cols["train"]),
        _sampler(cols["train"]),
        config=cfg,
        val_episodes=val,
        out=tmp_path / "a",
        progress=False,
    )

    # the same run, killed while drawing the episodes of step 5 (last checkpoint: step 4)
    sampler = _sampler(cols["train"])
    real_sample, calls = sampler.sample, [0]

    def dying_sample():
        calls[0] += 1
        if calls[0] > 4 * cfg.meta_batch:
            raise _Interrupt
        return real_sample()

    sampler.sample = dying_sample  # type: ignore[method-assign]
    with pytest.raises(_Interrupt):
        meta_train(
            _learner(name, cols["train"]), sampler, config=cfg, val_episodes=val, out=tmp_path / "b", progress=False
        )
    assert load_checkpoint(tmp_path / "b" / "last.safetensors").metadata["step"] == 4

    # "new process": fresh learner and sampler, scrambled global RNGs
    torch.manual_seed(987)
    np.random.seed(987)  # noqa: NPY002
    resumed = meta_train(
        _learner(name, cols["train"]),
        _sampler(cols["train"]),
        config=cfg,
        val_episodes=val,
        out=tmp_path / "b",
        progress=False,
    )
    assert _same_state(_state(full.learner), _state(resumed.learner))
    assert [h["step"] for h in resumed.history] == list(range(1, 7))
    assert _no_time(full.history) == _no_time(resumed.history)
    assert (full.best_step, full.best_val_acc) == (resumed.best_step, resumed.best_val_acc)
    for fname in ("last.safetensors", "best.safetensors"):
        a, b = load_checkpoint(tmp_path / "a" / fname), load_checkpoint(tmp_path / "b" / fname)
        assert a.tensors.keys() == b.tensors.keys(), fname
        assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors), fname  # weights and Adam state
        assert a.metadata["step"] == b.metadata["step"], fname


@pytest.mark.parametrize("name", ["maml", "protonet"])
def test_returned_learner_holds_the_best_validated_state(name: str, cols, tmp_path: Path) -> None:
    val = _val(cols)
    cfg = MetaTrainConfig(steps=6, meta_batch=2, val_every=1, checkpoint_every=6, lr=1e-2, seed=3)
    res = meta_train(
        _learner(name, cols["train"]),
        _sampler(cols["train"]),
        config=cfg,
        val_episodes=val,
        out=tmp_path,
        progress=False,
    )
    accs = [h["val_acc"] for h in res.history]
    assert len(accs) == cfg.steps
    assert res.best_val_acc == max(accs)
    assert res.best_step == 1 + accs.index(max(accs))  # the first step reaching the maximum
    best = load_checkpoint(tmp_path / "best.safetensors")
    last = load_checkpoint(tmp_path / "last.safetensors")
    assert res.best_checkpoint == tmp_path / "best.safetensors"
    assert (best.metadata["step"], best.metadata["val_acc"]) == (res.best_step, res.best_val_acc)
    assert last.metadata["step"] == cfg.steps
    state = _state(res.learner)
    assert _same_state(state, _prefixed(best, "learner."))
    assert _same_state(state, _prefixed(last, "learner.")) == (res.best_step == cfg.steps)
    assert evaluate_learner(res.learner, val).acc_mean == res.best_val_acc


# validation scores scripted per validation (the states are real): best at step 2, tied (not replaced) at 4
SCRIPT = [0.3, 0.6, 0.4, 0.6, 0.5, 0.2]


def _scripted_validation(monkeypatch: pytest.MonkeyPatch, scores: list[float]) -> list[dict[str, torch.Tensor]]:
    import medmeta_lib.training.meta_training as training

    real, seen = evaluate_learner, []  # the real one (not a spy installed earlier in the test)

    def scripted(learner, episodes, **kw):
        res = real(learner, episodes, **kw)
        seen.append(_state(learner))
        res.acc_mean = scores[len(seen) - 1]
        return res

    monkeypatch.setattr(training, "evaluate_learner", scripted)
    return seen


def test_best_state_is_kept_across_later_worse_steps_and_a_resume(cols, tmp_path: Path, monkeypatch) -> None:
    cfg = MetaTrainConfig(steps=6, meta_batch=1, val_every=1, checkpoint_every=1, lr=1e-2, seed=0)
    val = _val(cols, 1)
    seen = _scripted_validation(monkeypatch, SCRIPT)
    res = meta_train(
        _learner("protonet", cols["train"]),
        _sampler(cols["train"]),
        config=cfg,
        val_episodes=val,
        out=tmp_path / "a",
        progress=False,
    )
    assert (res.best_step, res.best_val_acc) == (2, 0.6)
    assert [h["val_acc"] for h in res.history] == SCRIPT
    assert _same_state(_state(res.learner), seen[1])  # the state validated at step 2 ...
    assert not _same_state(seen[1], seen[3]) and not _same_state(seen[1], seen[5])  # ... not the tie or the last
    best = load_checkpoint(tmp_path / "a" / "best.safetensors")
    assert best.metadata["step"] == 2 and _same_state(seen[1], _prefixed(best, "learner."))
    last = load_checkpoint(tmp_path / "a" / "last.safetensors")
    assert last.metadata["step"] == 6 and _same_state(seen[5], _prefixed(last, "learner."))

    # stopped after step 4's checkpoint; the resumed process only validates steps 5 and 6 (no new best),
    # so the best state must come back from best.safetensors
    seen_b = _scripted_validation(monkeypatch, SCRIPT[:4])
    sampler = _sampler(cols["train"])
    real_sample, calls = sampler.sample, [0]

    def dying_sample():
        calls[0] += 1
        if calls[0] > 4:
            raise _Interrupt
        return real_sample()

    sampler.sample = dying_sample  # type: ignore[method-assign]
    with pytest.raises(_Interrupt):
        meta_train(
            _learner("protonet", cols["train"]),
            sampler,
            config=cfg,
            val_episodes=val,
            out=tmp_path / "b",
            progress=False,
        )
    assert len(seen_b) == 4
    _scripted_validation(monkeypatch, SCRIPT[4:])
    resumed = meta_train(
        _learner("protonet", cols["train"]),
        _sampler(cols["train"]),
        config=cfg,
        val_episodes=val,
        out=tmp_path / "b",
        progress=False,
    )
    assert (resumed.best_step, resumed.best_val_acc) == (2, 0.6)
    assert resumed.best_checkpoint == tmp_path / "b" / "best.safetensors"
    assert _same_state(_state(resumed.learner), seen[1])


def test_without_validation_the_last_state_is_returned(cols, tmp_path: Path) -> None:
    cfg = MetaTrainConfig(steps=2, meta_batch=1, val_every=0, seed=0)
    res = meta_train(
        _learner("protonet", cols["train"]), _sampler(cols["train"]), config=cfg, out=tmp_path, progress=False
    )
    assert res.best_step is None and res.best_checkpoint is None
    assert not (tmp_path / "best.safetensors").exists()
    assert _same_state(_state(res.learner), _prefixed(load_checkpoint(res.last_checkpoint), "learner."))


def test_scratch_is_not_meta_trained_but_still_checkpointed(cols, tmp_path: Path) -> None:
    learner = _learner("scratch", cols["train"])
    before = _state(learner)
    res = meta_train(learner, _sampler(cols["train"]), config=MetaTrainConfig(steps=5), out=tmp_path, progress=False)
    assert res.learner is learner and _same_state(before, _state(learner))
    assert res.best_step is None and "not meta-trainable" in res.history[0]["note"]
    assert res.last_checkpoint == tmp_path / "last.safetensors" and res.last_checkpoint.is_file()
    assert _same_state(before, _state(load_learner(res.last_checkpoint, expect_learner="scratch")))


@pytest.mark.parametrize("name", sorted(FAST))
def test_load_learner_rebuilds_every_learner_with_identical_predictions(name: str, cols, tmp_path: Path) -> None:
    assert sorted(FAST) == list_learners()  # a new learner must be added here
    learner = _learner(name, cols["train"])
    cfg = MetaTrainConfig(steps=1, meta_batch=1, val_every=0, seed=0)
    res = meta_train(learner, _sampler(cols["train"]), config=cfg, out=tmp_path, progress=False)
    loaded = load_learner(res.last_checkpoint, expect_learner=name)
    assert type(loaded) is type(learner) and loaded.name == name and loaded.n_way == N_WAY
    assert loaded.spec == learner.spec
    assert _same_state(_state(learner), _state(loaded))
    ep = _sampler(cols["val"], seed=4).sample()
    a, b = learner.evaluate_episode(ep), loaded.evaluate_episode(ep)
    assert torch.equal(a["probs"], b["probs"]) and a["acc"] == b["acc"]


def test_load_learner_refuses_other_files(tmp_path: Path) -> None:
    enc = save_backbone(tmp_path / "enc.safetensors", create_backbone("conv4", hidden=HIDDEN))
    with pytest.raises(ValueError, match="not a learner checkpoint"):
        load_learner(enc)


def test_load_learner_refuses_another_learner(cols, tmp_path: Path) -> None:
    cfg = MetaTrainConfig(steps=1, meta_batch=1, val_every=0)
    res = meta_train(
        _learner("protonet", cols["train"]), _sampler(cols["train"]), config=cfg, out=tmp_path, progress=False
    )
    with pytest.raises(ValueError, match="holds learner 'protonet', expected 'maml'"):
        load_learner(res.last_checkpoint, expect_learner="maml")


# ------------------------------------------------------------------ encoder initialisation


@pytest.mark.parametrize("name", ["maml", "protonet", "baseline"])
def test_learner_starts_from_a_notebook02_encoder(name: str, cols, tmp_path: Path) -> None:
    torch.manual_seed(123)
    enc = create_backbone("conv4", hidden=HIDDEN)
    path = save_backbone(tmp_path / "encoder.safetensors", enc, metadata={"epochs": 1})
    learner = _learner(name, cols["train"], seed=0, encoder=path)
    assert _same_state(_state(learner.backbone), _state(enc))
    assert not _same_state(_state(_learner(name, cols["train"], seed=0).backbone), _state(enc))  # not by chance
    assert learner.spec["encoder"] == str(path)


def test_learner_starts_from_a_simclr_style_checkpoint(cols, tmp_path: Path) -> None:
    """SimCLR checkpoints hold more than the encoder; only the ``encoder_prefix`` tensors are loaded."""
    torch.manual_seed(7)
    enc = create_backbone("conv4", hidden=HIDDEN)
    tensors = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
    tensors.update({"projector.weight": torch.randn(4, HIDDEN), "optim.state.0.exp_avg": torch.randn(3)})
    path = save_checkpoint(
        tmp_path / "simclr.safetensors",
        tensors,
        {"kind": "encoder", "encoder_prefix": "encoder.", "backbone": enc.spec, "trainer": "simclr"},
    )
    learner = _learner("protonet", cols["train"], encoder=path)
    assert _same_state(_state(learner.backbone), _state(enc))


def test_encoder_learner_without_backbone_kwargs_round_trips_or_is_refused(cols, tmp_path: Path) -> None:
    """Either a clear ValueError up front, or a checkpoint that load_learner rebuilds exactly."""
    path = save_backbone(tmp_path / "encoder.safetensors", create_backbone("conv4", hidden=HIDDEN))
    try:
        learner = build_learner("protonet", n_way=N_WAY, encoder=path)  # no backbone_kwargs (default hidden=64)
    except ValueError as err:
        assert "hidden" in str(err)
        return
    cfg = MetaTrainConfig(steps=1, meta_batch=1, val_every=0)
    res = meta_train(learner, _sampler(cols["train"]), config=cfg, out=tmp_path / "run", progress=False)
    assert _same_state(_state(learner), _state(load_learner(res.last_checkpoint)))


# ------------------------------------------------------------------ bad settings → clear errors


@pytest.mark.parametrize(("same_modality", "available"), [(True, 6), (False, 12)])
def test_n_way_larger_than_the_available_classes(same_modality: bool, available: int, cols) -> None:
    n = available + 1
    with pytest.raises(ValueError, match=rf"cannot draw {n}-way .*only {available} class\(es\).*Lower n_way"):
        EpisodeSampler(cols["train"], n, K_SHOT, Q_QUERY, same_modality=same_modality)


def test_encoder_with_other_backbone_arguments_is_refused(tmp_path: Path) -> None:
    path = save_backbone(tmp_path / "encoder.safetensors", create_backbone("conv4", hidden=HIDDEN))
    with pytest.raises(ValueError, match=r"hidden: checkpoint 8, expected 16.*use matching ones"):
        build_learner("protonet", backbone_kwargs={"hidden": 16}, encoder=path)


def test_encoder_of_another_backbone_is_refused(tmp_path: Path) -> None:
    path = save_backbone(tmp_path / "encoder.safetensors", create_backbone("conv4", hidden=HIDDEN))
    with pytest.raises(ValueError, match=r"holds backbone 'conv4'.*expected 'resnet12'.*matching backbone"):
        build_learner("protonet", backbone="resnet12", backbone_kwargs={"widths": (8, 8, 8, 8)}, encoder=path)


def test_unknown_learner_name() -> None:
    with pytest.raises(ValueError, match=r"unknown learner 'mamll'; choose one of \[.*'maml'"):
        build_learner("mamll", backbone_kwargs={"hidden": HIDDEN})


def test_unknown_learner_argument() -> None:
    with pytest.raises(ValueError, match=r"'maml' does not take \['inner_step'\]; it accepts"):
        build_learner("maml", backbone_kwargs={"hidden": HIDDEN}, learner_kwargs={"inner_step": 1})


def test_sampler_n_way_differs_from_learner_n_way(cols, tmp_path: Path) -> None:
    learner = _learner("protonet", cols["train"], n_way=5)
    before = _state(learner)
    with pytest.raises(ValueError, match=r"3-way.*5-way"):
        meta_train(
            learner,
            _sampler(cols["train"], n_way=3),
            config=MetaTrainConfig(steps=1),
            out=tmp_path / "o",
            progress=False,
        )
    assert _same_state(before, _state(learner))  # refused before any step
    assert not (tmp_path / "o").exists()


def test_sampler_n_way_mismatch_message_names_the_setting_and_the_fix(cols) -> None:
    learner = _learner("protonet", cols["train"], n_way=5)
    with pytest.raises(ValueError) as info:
        meta_train(learner, _sampler(cols["train"], n_way=3), config=MetaTrainConfig(steps=1), progress=False)
    msg = str(info.value)
    assert "n_way" in msg and any(w in msg for w in ("use ", "build ", "pass ", "set_n_way", "sample "))


@pytest.mark.parametrize(
    ("other", "field"),
    [
        ({"name": "maml"}, "learner"),
        ({"name": "protonet", "n_way": 3}, "n_way"),
        ({"name": "protonet", "hidden": 16}, "backbone"),
    ],
)
def test_resuming_into_a_directory_of_another_learner(other: dict, field: str, cols, tmp_path: Path) -> None:
    cfg = MetaTrainConfig(steps=1, meta_batch=1, val_every=0)
    meta_train(_learner("protonet", cols["train"]), _sampler(cols["train"]), config=cfg, out=tmp_path, progress=False)
    saved = load_checkpoint(tmp_path / "last.safetensors")
    n_way = other.get("n_way", N_WAY)
    kw = dict(FAST[other["name"]])
    learner = build_learner(
        other["name"], backbone_kwargs={"hidden": other.get("hidden", HIDDEN)}, n_way=n_way, learner_kwargs=kw
    )
    with pytest.raises(ValueError, match=rf"cannot resume: checkpoint {field} is .*another --out directory"):
        meta_train(learner, _sampler(cols["train"], n_way=n_way), config=cfg, out=tmp_path, progress=False)
    after = load_checkpoint(tmp_path / "last.safetensors")  # the other run's checkpoint is left alone
    assert after.metadata["spec"]["learner"] == "protonet"
    assert all(torch.equal(saved.tensors[k], after.tensors[k]) for k in saved.tensors)


def test_scratch_into_a_directory_of_another_learner_is_refused(cols, tmp_path: Path) -> None:
    cfg = MetaTrainConfig(steps=1, meta_batch=1, val_every=0)
    meta_train(_learner("protonet", cols["train"]), _sampler(cols["train"]), config=cfg, out=tmp_path, progress=False)
    try:
        meta_train(
            _learner("scratch", cols["train"]), _sampler(cols["train"]), config=cfg, out=tmp_path, progress=False
        )
    except ValueError as err:
        assert "protonet" in str(err)
    assert load_checkpoint(tmp_path / "last.safetensors").metadata["spec"]["learner"] == "protonet"


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"steps": 0}, "steps"),
        ({"meta_batch": 0}, "meta_batch"),
        ({"lr": 0.0}, "lr"),
        ({"val_every": -1}, "val_every"),
        ({"grad_clip": 0.0}, "grad_clip"),
    ],
)
def test_bad_config_values(kw: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"MetaTrainConfig\.{field} must be"):
        MetaTrainConfig(**kw)
