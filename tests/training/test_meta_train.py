"""Meta-training (``medmeta_lib.training.meta_training``): determinism by seed, exact resume, best-state keeping,
checkpoints that rebuild every learner and encoder initialisation. Clear errors for bad settings are tested in
``test_meta_train_errors.py``; the shared set-up is in ``meta_setup.py`` and ``conftest.py``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medmeta_lib.evaluation.episodic import evaluate_learner
from medmeta_lib.learners import list_learners
from medmeta_lib.models import create_backbone
from medmeta_lib.training.checkpoint import load_checkpoint, save_backbone, save_checkpoint
from medmeta_lib.training.learner_io import build_learner, load_learner
from medmeta_lib.training.meta_training import MetaTrainConfig, meta_train
from tests.training.meta_setup import (
    FAST,
    HIDDEN,
    N_WAY,
    no_time,
    prefixed,
    same_state,
    state_of,
    task_sampler,
    tiny_learner,
    val_episodes,
)

pytestmark = pytest.mark.usefixtures("one_thread_module")


# ------------------------------------------------------------------ determinism


@pytest.mark.parametrize("name", ["maml", "protonet"])
def test_same_seed_same_run_other_seed_other_run(name: str, cols) -> None:
    val = val_episodes(cols)
    test_set = task_sampler(cols["val"], seed=9).fixed(3, seed=11)
    cfg = {"steps": 3, "meta_batch": 2, "val_every": 3, "lr": 1e-2}

    def run(seed: int):
        learner = tiny_learner(name, cols["train"], seed=seed)
        torch.manual_seed(1000 + seed)  # meta_train must not depend on the caller's global RNG state
        res = meta_train(
            learner,
            task_sampler(cols["train"]),
            config=MetaTrainConfig(seed=seed, **cfg),
            val_episodes=val,
            progress=False,
        )
        return res, state_of(res.learner), evaluate_learner(res.learner, test_set).per_episode_acc

    (r1, s1, m1), (r2, s2, m2), (r3, s3, _) = run(0), run(0), run(1)
    assert same_state(s1, s2)
    assert no_time(r1.history) == no_time(r2.history)
    assert len(r1.history) == 3 and "val_acc" in r1.history[-1]
    assert (r1.best_step, r1.best_val_acc) == (r2.best_step, r2.best_val_acc)
    assert m1 == m2
    # another seed: other initialisation and other episode stream
    assert not same_state(s1, s3)
    assert [h["loss"] for h in r1.history] != [h["loss"] for h in r3.history]


def test_config_seed_alone_changes_the_episode_stream(cols) -> None:
    """Same initial weights, different MetaTrainConfig.seed → different episodes, different result."""

    def run(seed: int):
        learner = tiny_learner("protonet", cols["train"], seed=0)
        cfg = MetaTrainConfig(steps=2, meta_batch=1, val_every=0, seed=seed)
        return state_of(meta_train(learner, task_sampler(cols["train"]), config=cfg, progress=False).learner)

    assert not same_state(run(0), run(1))


# ------------------------------------------------------------------ resume and best state


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("name", ["maml", "protonet"])
def test_resume_after_interruption_is_bit_identical(name: str, cols, tmp_path: Path) -> None:
    cfg = MetaTrainConfig(steps=6, meta_batch=2, val_every=1, checkpoint_every=2, lr=1e-2, seed=3)
    val = val_episodes(cols)

    full = meta_train(
        tiny_learner(name, cols["train"]),
        task_sampler(cols["train"]),
        config=cfg,
        val_episodes=val,
        out=tmp_path / "a",
        progress=False,
    )

    # the same run, killed while drawing the episodes of step 5 (last checkpoint: step 4)
    sampler = task_sampler(cols["train"])
    real_sample, calls = sampler.sample, [0]

    def dying_sample():
        calls[0] += 1
        if calls[0] > 4 * cfg.meta_batch:
            raise _Interrupt
        return real_sample()

    sampler.sample = dying_sample  # type: ignore[method-assign]
    with pytest.raises(_Interrupt):
        meta_train(
            tiny_learner(name, cols["train"]), sampler, config=cfg, val_episodes=val, out=tmp_path / "b", progress=False
        )
    assert load_checkpoint(tmp_path / "b" / "last.safetensors").metadata["step"] == 4

    # "new process": fresh learner and sampler, scrambled global RNGs
    torch.manual_seed(987)
    np.random.seed(987)  # noqa: NPY002
    resumed = meta_train(
        tiny_learner(name, cols["train"]),
        task_sampler(cols["train"]),
        config=cfg,
        val_episodes=val,
        out=tmp_path / "b",
        progress=False,
    )
    assert same_state(state_of(full.learner), state_of(resumed.learner))
    assert [h["step"] for h in resumed.history] == list(range(1, 7))
    assert no_time(full.history) == no_time(resumed.history)
    assert (full.best_step, full.best_val_acc) == (resumed.best_step, resumed.best_val_acc)
    for fname in ("last.safetensors", "best.safetensors"):
        a, b = load_checkpoint(tmp_path / "a" / fname), load_checkpoint(tmp_path / "b" / fname)
        assert a.tensors.keys() == b.tensors.keys(), fname
        assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors), fname  # weights and Adam state
        assert a.metadata["step"] == b.metadata["step"], fname


@pytest.mark.parametrize("name", ["maml", "protonet"])
def test_returned_learner_holds_the_best_validated_state(name: str, cols, tmp_path: Path) -> None:
    val = val_episodes(cols)
    cfg = MetaTrainConfig(steps=6, meta_batch=2, val_every=1, checkpoint_every=6, lr=1e-2, seed=3)
    res = meta_train(
        tiny_learner(name, cols["train"]),
        task_sampler(cols["train"]),
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
    state = state_of(res.learner)
    assert same_state(state, prefixed(best, "learner."))
    assert same_state(state, prefixed(last, "learner.")) == (res.best_step == cfg.steps)
    assert evaluate_learner(res.learner, val).acc_mean == res.best_val_acc


# validation scores scripted per validation (the states are real): best at step 2, tied (not replaced) at 4
SCRIPT = [0.3, 0.6, 0.4, 0.6, 0.5, 0.2]


def _scripted_validation(monkeypatch: pytest.MonkeyPatch, scores: list[float]) -> list[dict[str, torch.Tensor]]:
    import medmeta_lib.training.meta_training as training

    real, seen = evaluate_learner, []  # the real one (not a spy installed earlier in the test)

    def scripted(learner, episodes, **kw):
        res = real(learner, episodes, **kw)
        seen.append(state_of(learner))
        res.acc_mean = scores[len(seen) - 1]
        return res

    monkeypatch.setattr(training, "evaluate_learner", scripted)
    return seen


def test_best_state_is_kept_across_later_worse_steps_and_a_resume(cols, tmp_path: Path, monkeypatch) -> None:
    cfg = MetaTrainConfig(steps=6, meta_batch=1, val_every=1, checkpoint_every=1, lr=1e-2, seed=0)
    val = val_episodes(cols, 1)
    seen = _scripted_validation(monkeypatch, SCRIPT)
    res = meta_train(
        tiny_learner("protonet", cols["train"]),
        task_sampler(cols["train"]),
        config=cfg,
        val_episodes=val,
        out=tmp_path / "a",
        progress=False,
    )
    assert (res.best_step, res.best_val_acc) == (2, 0.6)
    assert [h["val_acc"] for h in res.history] == SCRIPT
    assert same_state(state_of(res.learner), seen[1])  # the state validated at step 2 ...
    assert not same_state(seen[1], seen[3]) and not same_state(seen[1], seen[5])  # ... not the tie or the last
    best = load_checkpoint(tmp_path / "a" / "best.safetensors")
    assert best.metadata["step"] == 2 and same_state(seen[1], prefixed(best, "learner."))
    last = load_checkpoint(tmp_path / "a" / "last.safetensors")
    assert last.metadata["step"] == 6 and same_state(seen[5], prefixed(last, "learner."))

    # stopped after step 4's checkpoint; the resumed process only validates steps 5 and 6 (no new best),
    # so the best state must come back from best.safetensors
    seen_b = _scripted_validation(monkeypatch, SCRIPT[:4])
    sampler = task_sampler(cols["train"])
    real_sample, calls = sampler.sample, [0]

    def dying_sample():
        calls[0] += 1
        if calls[0] > 4:
            raise _Interrupt
        return real_sample()

    sampler.sample = dying_sample  # type: ignore[method-assign]
    with pytest.raises(_Interrupt):
        meta_train(
            tiny_learner("protonet", cols["train"]),
            sampler,
            config=cfg,
            val_episodes=val,
            out=tmp_path / "b",
            progress=False,
        )
    assert len(seen_b) == 4
    _scripted_validation(monkeypatch, SCRIPT[4:])
    resumed = meta_train(
        tiny_learner("protonet", cols["train"]),
        task_sampler(cols["train"]),
        config=cfg,
        val_episodes=val,
        out=tmp_path / "b",
        progress=False,
    )
    assert (resumed.best_step, resumed.best_val_acc) == (2, 0.6)
    assert resumed.best_checkpoint == tmp_path / "b" / "best.safetensors"
    assert same_state(state_of(resumed.learner), seen[1])


def test_without_validation_the_last_state_is_returned(cols, tmp_path: Path) -> None:
    cfg = MetaTrainConfig(steps=2, meta_batch=1, val_every=0, seed=0)
    res = meta_train(
        tiny_learner("protonet", cols["train"]), task_sampler(cols["train"]), config=cfg, out=tmp_path, progress=False
    )
    assert res.best_step is None and res.best_checkpoint is None
    assert not (tmp_path / "best.safetensors").exists()
    assert same_state(state_of(res.learner), prefixed(load_checkpoint(res.last_checkpoint), "learner."))


def test_scratch_is_not_meta_trained_but_still_checkpointed(cols, tmp_path: Path) -> None:
    learner = tiny_learner("scratch", cols["train"])
    before = state_of(learner)
    res = meta_train(
        learner, task_sampler(cols["train"]), config=MetaTrainConfig(steps=5), out=tmp_path, progress=False
    )
    assert res.learner is learner and same_state(before, state_of(learner))
    assert res.best_step is None and "not meta-trainable" in res.history[0]["note"]
    assert res.last_checkpoint == tmp_path / "last.safetensors" and res.last_checkpoint.is_file()
    assert same_state(before, state_of(load_learner(res.last_checkpoint, expect_learner="scratch")))


@pytest.mark.parametrize("name", sorted(FAST))
def test_load_learner_rebuilds_every_learner_with_identical_predictions(name: str, cols, tmp_path: Path) -> None:
    assert sorted(FAST) == list_learners()  # a new learner must be added here
    learner = tiny_learner(name, cols["train"])
    cfg = MetaTrainConfig(steps=1, meta_batch=1, val_every=0, seed=0)
    res = meta_train(learner, task_sampler(cols["train"]), config=cfg, out=tmp_path, progress=False)
    loaded = load_learner(res.last_checkpoint, expect_learner=name)
    assert type(loaded) is type(learner) and loaded.name == name and loaded.n_way == N_WAY
    assert loaded.spec == learner.spec
    assert same_state(state_of(learner), state_of(loaded))
    ep = task_sampler(cols["val"], seed=4).sample()
    a, b = learner.evaluate_episode(ep), loaded.evaluate_episode(ep)
    assert torch.equal(a["probs"], b["probs"]) and a["acc"] == b["acc"]


def test_load_learner_refuses_other_files(tmp_path: Path) -> None:
    enc = save_backbone(tmp_path / "enc.safetensors", create_backbone("conv4", hidden=HIDDEN))
    with pytest.raises(ValueError, match="not a learner checkpoint"):
        load_learner(enc)


def test_load_learner_refuses_another_learner(cols, tmp_path: Path) -> None:
    cfg = MetaTrainConfig(steps=1, meta_batch=1, val_every=0)
    res = meta_train(
        tiny_learner("protonet", cols["train"]), task_sampler(cols["train"]), config=cfg, out=tmp_path, progress=False
    )
    with pytest.raises(ValueError, match="holds learner 'protonet', expected 'maml'"):
        load_learner(res.last_checkpoint, expect_learner="maml")


# ------------------------------------------------------------------ encoder initialisation


@pytest.mark.parametrize("name", ["maml", "protonet", "baseline"])
def test_learner_starts_from_a_notebook02_encoder(name: str, cols, tmp_path: Path) -> None:
    torch.manual_seed(123)
    enc = create_backbone("conv4", hidden=HIDDEN)
    path = save_backbone(tmp_path / "encoder.safetensors", enc, metadata={"epochs": 1})
    learner = tiny_learner(name, cols["train"], seed=0, encoder=path)
    assert same_state(state_of(learner.backbone), state_of(enc))
    assert not same_state(state_of(tiny_learner(name, cols["train"], seed=0).backbone), state_of(enc))  # not by chance
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
    learner = tiny_learner("protonet", cols["train"], encoder=path)
    assert same_state(state_of(learner.backbone), state_of(enc))


def test_encoder_learner_without_backbone_kwargs_takes_the_encoders_architecture(cols, tmp_path: Path) -> None:
    """No backbone_kwargs: the encoder's own spec fixes the architecture, and the checkpoint rebuilds exactly."""
    path = save_backbone(tmp_path / "encoder.safetensors", create_backbone("conv4", hidden=HIDDEN))
    learner = build_learner("protonet", n_way=N_WAY, encoder=path)  # no backbone_kwargs (conv4's default is 64)
    assert learner.spec["backbone"]["kwargs"]["hidden"] == HIDDEN
    cfg = MetaTrainConfig(steps=1, meta_batch=1, val_every=0)
    res = meta_train(learner, task_sampler(cols["train"]), config=cfg, out=tmp_path / "run", progress=False)
    assert same_state(state_of(learner), state_of(load_learner(res.last_checkpoint)))
