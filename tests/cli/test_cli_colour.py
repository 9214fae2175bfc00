"""The ``medmeta`` training commands on colour images: every model takes the data's or the checkpoint's channels.

``pretrain`` → encoder, ``meta-train --encoder`` → checkpoint, ``evaluate`` both from that checkpoint and
from the encoder (a learner built here), on a tiny RGB MedMNIST-format ``.npz``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medmeta_lib.cli import main
from medmeta_lib.training.checkpoint import load_checkpoint
from tests.conftest import write_medmnist_npz

TASK = ["--n-way", "2", "--k-shot", "1", "--q-query", "2"]


pytestmark = pytest.mark.usefixtures("one_thread")  # on a shared 2-core machine torch's default threads oversubscribe


def test_pretrain_meta_train_and_evaluate_on_rgb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    npz = write_medmnist_npz(tmp_path / "rgb.npz", channels=3, n_classes=4, per_class=6)
    data = ["--data", str(npz), "--hidden", "8", "--no-progress"]
    enc = tmp_path / "encoder.safetensors"
    argv = ["pretrain", *data, "--epochs", "1", "--batch-size", "8", "--max-steps", "1", "--augment", "generic"]
    assert main([*argv, "--temperature", "0.5", "--out", str(enc)]) == 0, capsys.readouterr().err
    meta = load_checkpoint(enc).metadata
    assert meta["backbone"]["kwargs"]["in_channels"] == 3 and meta["config"]["temperature"] == 0.5

    argv = ["meta-train", *data, *TASK, "--protocol", "none", "--learner", "protonet", "--encoder", str(enc)]
    assert main([*argv, "--steps", "1", "--meta-batch", "1", "--val-every", "0", "--out", str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out
    ck = json.loads(printed[printed.index("{") :])["last_checkpoint"]
    assert load_checkpoint(ck).metadata["spec"]["backbone"]["kwargs"]["in_channels"] == 3

    js = tmp_path / "eval.json"
    argv = ["evaluate", "--data", str(npz), *TASK, "--episodes", "2", "--json", str(js), "--encoder", str(enc)]
    assert main([*argv, "--learners", "protonet,baseline", "--checkpoint", f"protonet={ck}"]) == 0
    result = json.loads(js.read_text())
    assert result["settings"]["checkpoints"] == {"protonet": ck}  # loaded; baseline built from the encoder
    assert {n: r["episodes"] for n, r in result["learners"].items()} == {"protonet": 2, "baseline": 2}
