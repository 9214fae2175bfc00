"""Interruption: SIGKILL pretraining and meta-training mid-run, resume, and end bit-for-bit where an
uninterrupted run ends.

Every run is a real ``medmeta`` process (``python -m medmeta_lib.cli``) on one thread. The killed run
is stopped with SIGKILL (no cleanup handlers run) a moment after its first checkpoint appears, so the
steps it made after that checkpoint are lost; the same command is then run again, which resumes from
the checkpoint. Its final checkpoints must equal those of an uninterrupted run with the same seed:
every tensor (weights, optimiser moments, RNG states) exactly, and every metric in the metadata
(losses, accuracies, best step, episode-stream state), wall-clock times aside.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from medmeta_lib.training.checkpoint import Checkpoint, load_checkpoint
from tests.reliability.support import REPO, cli_command, cli_env, run_cli

pytestmark = pytest.mark.slow


def _kill_when(args: list[str], checkpoint: Path, log: Path, *, delay: float = 0.2, timeout: float = 240) -> int:
    """Start ``medmeta *args``; SIGKILL it ``delay`` s after ``checkpoint`` appears; return the step saved there."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cli_command(*args), cwd=REPO, env=cli_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if checkpoint.exists():  # renamed into place complete, so it exists only once whole
                    time.sleep(delay)  # let it make progress that the kill then throws away
                    proc.send_signal(signal.SIGKILL)
                    assert proc.wait(30) == -signal.SIGKILL, "the run ended before it could be killed"
                    return int(load_checkpoint(checkpoint).metadata["step"])
                if proc.poll() is not None:
                    pytest.fail(f"the run exited ({proc.returncode}) before a checkpoint appeared:\n{log.read_text()}")
                time.sleep(0.02)
            pytest.fail("no checkpoint appeared in time")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    raise AssertionError("unreachable")


def _assert_same_tensors(a: Checkpoint, b: Checkpoint, *, skip: frozenset[str] = frozenset()) -> None:
    assert a.tensors.keys() == b.tensors.keys()
    for k in a.tensors.keys() - skip:
        assert a.tensors[k].dtype == b.tensors[k].dtype and torch.equal(a.tensors[k], b.tensors[k]), k


def _without_times(meta: dict[str, Any]) -> dict[str, Any]:
    out = dict(meta)
    out["history"] = [{k: v for k, v in row.items() if k != "time"} for row in meta["history"]]
    return out


def _resumed_from(log: str, start: int, total: int) -> bool:
    """tqdm's first frame of the resumed run shows ``start/total`` (a fresh run would show ``0/total``)."""
    return re.search(rf"\b{start}/{total}\b", log) is not None and re.search(rf"\b0/{total}\b", log) is None


def test_pretraining_killed_and_resumed_matches_uninterrupted(tmp_path: Path) -> None:
    epochs, common = 3, ["--data", "synthetic", "--n-per-class-site", "2", "--batch-size", "32", "--seed", "3"]
    ref, cut = tmp_path / "ref.safetensors", tmp_path / "cut.safetensors"
    run_cli("pretrain", *common, "--epochs", str(epochs), "--out", str(ref))
    reference = load_checkpoint(ref)
    spe = int(reference.metadata["steps_per_epoch"])
    total = epochs * spe
    assert reference.metadata["step"] == total

    args = ["pretrain", *common, "--epochs", str(epochs), "--out", str(cut)]
    killed_at = _kill_when(args, cut, tmp_path / "killed.log")  # the last checkpoint survived the kill
    assert 0 < killed_at < total, f"killed at step {killed_at} of {total}: not mid-run"

    resumed = run_cli(*args)
    assert _resumed_from(resumed.stderr, killed_at, total), resumed.stderr[-2000:]
    final = load_checkpoint(cut)
    _assert_same_tensors(final, reference)  # encoder, head, AdamW moments, global RNG states
    assert final.metadata == reference.metadata  # losses, learning rates, scheduler, step, data fingerprint


@pytest.mark.parametrize("learner", ["maml"])
def test_meta_training_killed_and_resumed_matches_uninterrupted(tmp_path: Path, learner: str) -> None:
    steps = 10
    common = [
        "meta-train", "--data", "synthetic", "--learner", learner, "--steps", str(steps), "--seed", "5",
        "--n-per-class-site", "4", "--n-way", "2", "--k-shot", "1", "--q-query", "2", "--meta-batch", "2",
        "--val-every", "2", "--val-episodes", "3",
    ]  # fmt: skip
    ref_out = run_cli(*common, "--out", str(tmp_path / "ref"))
    ref_dir, cut_dir = tmp_path / "ref" / learner, tmp_path / "cut" / learner

    args = [*common, "--out", str(tmp_path / "cut")]
    killed_at = _kill_when(args, cut_dir / "last.safetensors", tmp_path / "killed.log")
    assert 0 < killed_at < steps, f"killed at step {killed_at} of {steps}: not mid-run"

    resumed = run_cli(*args)
    assert _resumed_from(resumed.stderr, killed_at, steps), resumed.stderr[-2000:]
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_checkpoint(cut_dir / name), load_checkpoint(ref_dir / name)
        _assert_same_tensors(a, b)  # learner weights (and, in last, the Adam state)
        if name == "last.safetensors":
            assert _without_times(a.metadata) == _without_times(b.metadata)  # losses, val accuracies, RNG
        else:
            assert a.metadata == b.metadata
    summary = json.loads(resumed.stdout[resumed.stdout.index("{") :])
    reference = json.loads(ref_out.stdout[ref_out.stdout.index("{") :])
    assert (summary["best_step"], summary["best_val_acc"]) == (reference["best_step"], reference["best_val_acc"])
