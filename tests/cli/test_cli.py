"""The ``medmeta`` command line end to end: ``meta-train`` → checkpoint → ``evaluate`` → JSON, AUROC on a
two-class ``.npz``, and clear, traceback-free errors for bad settings."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import medmeta_lib.studies.experiment as experiment
from medmeta_lib.cli import main
from medmeta_lib.cli.fewshot import recall_text
from medmeta_lib.data import load_collection
from medmeta_lib.studies.experiment import evaluate_split
from medmeta_lib.studies.experiment_split import make_split
from medmeta_lib.training.learner_io import load_learner

ROOT = Path(__file__).resolve().parents[2]
# MedSynth with one patient per (class, site): 4 images per class, enough for 1-shot 2-query tasks
SYNTH = ["--data", "synthetic", "--taxonomy", "coarse", "--n-per-class-site", "1"]  # held-out modality: 6 classes each
TASK = ["--n-way", "5", "--k-shot", "1", "--q-query", "2"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core machine torch's default threads oversubscribe (10x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """``medmeta meta-train`` of a ProtoNet for a few steps; returns (out dir, the JSON it printed)."""
    out = tmp_path_factory.mktemp("meta")
    argv = ["meta-train", *SYNTH, *TASK, "--learner", "protonet", "--steps", "2", "--meta-batch", "1"]
    argv += ["--val-every", "2", "--val-episodes", "2", "--out", str(out)]
    with _captured() as cap:
        rc = main(argv)
    assert rc == 0, cap.err
    printed = json.loads(cap.out[cap.out.index("{") :])
    return out, printed


class _captured:
    """Capture sys.stdout/sys.stderr around an in-process ``main`` call (module-scoped fixtures lack capsys)."""

    def __enter__(self):
        import io

        self._old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = self._out, self._err = io.StringIO(), io.StringIO()
        return self

    def __exit__(self, *exc):
        sys.stdout, sys.stderr = self._old
        self.out, self.err = self._out.getvalue(), self._err.getvalue()
        return False


def test_meta_train_writes_checkpoints_and_a_summary(trained) -> None:
    out, printed = trained
    last, best = out / "protonet" / "last.safetensors", out / "protonet" / "best.safetensors"
    assert last.is_file() and best.is_file()
    assert printed["learner"] == "protonet" and printed["best_step"] == 2
    assert printed["last_checkpoint"] == str(last) and printed["best_checkpoint"] == str(best)
    assert 0.0 <= printed["best_val_acc"] <= 1.0
    assert load_learner(best, expect_learner="protonet").n_way == 5


def test_evaluate_writes_json_with_mean_ci_episodes_and_settings(trained, tmp_path: Path, capsys) -> None:
    out, _ = trained
    ckpt = out / "protonet" / "best.safetensors"
    js = tmp_path / "res" / "eval.json"
    argv = ["evaluate", *SYNTH, "--split", "test", "--learners", "protonet,baseline", *TASK, "--episodes", "6"]
    rc = main([*argv, "--checkpoint", f"protonet={ckpt}", "--json", str(js)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads(js.read_text())
    assert set(data["learners"]) == {"protonet", "baseline"}
    assert shlex.split(data["command"]) == ["medmeta", *argv, "--checkpoint", f"protonet={ckpt}", "--json", str(js)]
    assert data["code"].startswith("medmeta_lib ")
    s = data["settings"]
    assert (s["data"], s["split"], s["n_way"], s["k_shot"], s["q_query"], s["episodes"]) == (
        "synthetic",
        "test",
        5,
        1,
        2,
        6,
    )
    assert s["checkpoints"] == {"protonet": str(ckpt)} and "held-out modalities" in s["protocol"]
    for name, r in data["learners"].items():
        assert r["learner"] == name and r["episodes"] == 6
        assert 0.0 <= r["acc_mean"] <= 1.0 and r["acc_ci95"] >= 0.0
        assert r["auc_mean"] is None  # 5-way: no AUROC
        assert {k: r["settings"][k] for k in ("n_way", "k_shot", "q_query", "episodes")} == {
            "n_way": 5, "k_shot": 1, "q_query": 2, "episodes": 6,
        }  # fmt: skip
        assert r["settings"]["episode_seed"] == data["learners"]["protonet"]["settings"]["episode_seed"]
        assert f"{name}: acc {r['acc_mean']:.3f} ± {r['acc_ci95']:.3f} (6 episodes)" in captured.out

    # the protonet numbers are those of the checkpoint on the shared fixed test episodes
    kw = {"image_size": 28, "seed": 0, "n_per_class_site": 1}
    sp = make_split(
        load_collection("synthetic", split="train", **kw), load_collection("synthetic", split="test", **kw),
        n_way=5, k_shot=1, q_query=2, seed=0,
    )  # fmt: skip
    ref = evaluate_split(
        {"protonet": load_learner(ckpt)}, sp, episodes=6, seed=data["learners"]["protonet"]["settings"]["episode_seed"]
    )["protonet"]
    assert (ref.acc_mean, ref.acc_ci95) == (
        data["learners"]["protonet"]["acc_mean"],
        data["learners"]["protonet"]["acc_ci95"],
    )


def _write_npz(path: Path, *, n_classes: int = 2, seed: int = 0) -> Path:
    """A tiny MedMNIST-format file: uint8 (N, 28, 28) images, (N, 1) labels, train/val/test splits."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, per_class in (("train", 8), ("val", 6), ("test", 8)):
        labels = np.repeat(np.arange(n_classes), per_class)
        base = 60 + 120 * labels[:, None, None] / max(n_classes - 1, 1)
        images = np.clip(base + rng.normal(0, 25, (len(labels), 28, 28)), 0, 255).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None].astype(np.uint8)
    np.savez(path, **arrays)
    return path


def test_two_way_evaluation_on_an_npz_reports_auroc(tmp_path: Path, capsys) -> None:
    npz = _write_npz(tmp_path / "tiny.npz")
    js = tmp_path / "eval.json"
    argv = ["evaluate", "--data", str(npz), "--split", "test", "--learners", "protonet,baseline"]
    rc = main([*argv, "--n-way", "2", "--k-shot", "2", "--q-query", "3", "--episodes", "5", "--json", str(js)])
    assert rc == 0, capsys.readouterr().err
    data = json.loads(js.read_text())
    assert data["settings"]["n_way"] == 2 and data["settings"]["checkpoints"] == {}
    for r in data["learners"].values():
        assert r["episodes"] == 5 and r["settings"]["n_way"] == 2
        assert 0.0 <= r["auc_mean"] <= 1.0 and r["auc_ci95"] is not None and r["auc_ci95"] >= 0.0
        assert list(r["per_site"]) == ["tiny"] and r["per_site"]["tiny"]["episodes"] == 5
    assert "AUROC" in capsys.readouterr().out


# ------------------------------------------------------------------ errors: exit code and a message, no traceback


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", *SYNTH, *TASK, "--learners", "protonet,nosuch", "--episodes", "2"],
         r"unknown learner 'nosuch'; choose one of \[.*'protonet'"),
        (["meta-train", *SYNTH, *TASK, "--learner", "nosuch", "--steps", "1", "--out", "{tmp}"],
         r"unknown learner 'nosuch'"),
        (["evaluate", *SYNTH, "--n-way", "7", "--k-shot", "1", "--q-query", "2", "--learners", "protonet"],
         r"cannot draw 7-way .*only 6 class\(es\) of one modality.*Lower n_way"),
        (["meta-train", *SYNTH, "--n-way", "7", "--k-shot", "1", "--q-query", "2", "--learner", "protonet",
          "--out", "{tmp}"],
         r"cannot draw 7-way .*Lower n_way"),
        (["evaluate", *SYNTH, *TASK, "--learners", "maml", "--checkpoint", "maml={tmp}/missing.safetensors"],
         r"missing\.safetensors does not exist"),
        (["evaluate", *SYNTH, *TASK, "--learners", "protonet,baseline", "--checkpoint", "{tmp}/p.safetensors"],
         r"--checkpoint .*p\.safetensors names no learner, and --learners has 2; write --checkpoint NAME=PATH"),
        (["evaluate", *SYNTH, *TASK, "--learners", "protonet", "--checkpoint", "protonett={tmp}/p.safetensors"],
         r"--checkpoint names \['protonett'\], which --learners \(protonet\) does not list"),
    ],
)  # fmt: skip
def test_bad_settings_exit_nonzero_with_a_clear_message(argv, message: str, tmp_path: Path, capsys) -> None:
    import re

    rc = main([a.replace("{tmp}", str(tmp_path)) for a in argv])
    err = capsys.readouterr().err
    assert rc != 0
    assert re.search(message, err), err
    assert f"medmeta {argv[0]}: error:" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["pretrain", "--epochs", "0"], "--epochs must be an int >= 1"),
        (["pretrain", "--batch-size", "1"], "--batch-size must be an int >= 2"),
        (["pretrain", "--temperature", "0"], "--temperature must be a finite number > 0"),
        (["pretrain", "--augment", "xray"], "--augment must be one of"),
        (["meta-train", "--learner", "protonet", "--steps", "0"], "--steps must be an integer >= 1"),
        (["meta-train", "--learner", "protonet", "--lr", "-1"], "--lr must be > 0"),
        (["meta-train", "--learner", "protonet", "--meta-batch", "0"], "--meta-batch must be an integer >= 1"),
    ],
)
def test_a_bad_training_flag_is_named_as_a_flag_before_any_data_is_read(
    argv: list[str], message: str, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medmeta_lib.data as data_mod

    def must_not_load(*a, **kw):
        raise AssertionError("the data was read before the flags were checked")

    monkeypatch.setattr(data_mod, "load_collection", must_not_load)
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out / "enc.safetensors" if argv[0] == "pretrain" else out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Config." not in err and "Traceback" not in err  # the flag, not the config's field
    assert not out.exists()


def test_evaluate_refuses_a_checkpoint_of_another_learner(trained, capsys) -> None:
    out, _ = trained
    rc = main(
        ["evaluate", *SYNTH, *TASK, "--learners", "maml", "--checkpoint", f"maml={out}/protonet/last.safetensors"]
    )
    assert rc != 0 and "holds learner 'protonet', expected 'maml'" in capsys.readouterr().err


def test_impossible_n_way_in_a_real_process(tmp_path: Path) -> None:
    """A real ``python -m medmeta_lib.cli`` process: exit status 2, one-line message, no traceback."""
    npz = _write_npz(tmp_path / "tiny.npz")
    cmd = [sys.executable, "-m", "medmeta_lib.cli", "evaluate", "--data", str(npz), "--learners", "protonet"]
    cmd += ["--n-way", "3", "--k-shot", "1", "--q-query", "2", "--episodes", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDMETA_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "medmeta evaluate: error:" in proc.stderr and "cannot draw 3-way" in proc.stderr
    assert "only 2 class(es)" in proc.stderr and "Lower n_way" in proc.stderr


def test_meta_train_validates_on_the_val_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    npz = _write_npz(tmp_path / "tiny.npz")
    seen = {}
    real = experiment.train_learners

    def spy(names, split, **kw):
        seen["split"] = split
        return real(names, split, **kw)

    monkeypatch.setattr(experiment, "train_learners", spy)
    argv = ["meta-train", "--data", str(npz), "--protocol", "none", "--learner", "protonet", "--n-way", "2"]
    argv += ["--k-shot", "1", "--q-query", "2", "--steps", "1", "--val-every", "1", "--val-episodes", "2"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    val_col = load_collection(str(npz), split="val")
    used = seen["split"].val.collection
    assert len(used) == len(val_col) and torch.equal(used.images, val_col.images)


def test_evaluate_full_test_split_reports_both_intervals_and_paired_differences(tmp_path: Path, capsys) -> None:
    npz = _write_npz(tmp_path / "tiny.npz")
    js = tmp_path / "full.json"
    argv = ["evaluate", "--data", str(npz), "--full-test-split", "--k-shot", "2", "--draws", "4"]
    rc = main([*argv, "--learners", "protonet,baseline", "--json", str(js)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    data = json.loads(js.read_text())
    assert shlex.split(data["command"]) == ["medmeta", *argv, "--learners", "protonet,baseline", "--json", str(js)]
    s = data["settings"]
    assert (s["protocol"], s["k_shot"], s["draws"], s["test_images"], s["transductive"]) == (
        "full_test_split", 2, 4, 16, False,
    )  # fmt: skip
    for name in ("protonet", "baseline"):
        r = data["learners"][name]
        assert r["majority_rate"] == 0.5 and r["draws"] == 4 and len(r["per_draw_acc"]) == 4
        for m in ("acc", "bal_acc", "auc"):
            assert r[f"{m}_lo95"] <= r[f"{m}_mean"] <= r[f"{m}_hi95"]
            assert r[f"{m}_ci95"] >= 0 and r[f"{m}_ci95_total"] >= 0
        assert f"{name}: ACC {r['acc_mean']:.3f}" in captured.out
        assert len(r["recall_per_class"]) == 2
        assert sum(st["mean"] for st in r["recall_per_class"].values()) / 2 == pytest.approx(r["bal_acc_mean"])
        assert f"recall per class: {recall_text(r)}" in captured.out  # each class's recall, under its name
    other = next(n for n in ("protonet", "baseline") if n != data["best"])
    assert set(data["paired_vs_best"]) == {other} and "inductive" in captured.out
    # --transductive is the named alternative and is recorded
    rc = main([*argv, "--learners", "protonet", "--transductive", "--json", str(js)])
    assert rc == 0 and json.loads(js.read_text())["settings"]["transductive"] is True
    # a class too small for K: a clear error, exit 2
    rc = main(["evaluate", "--data", str(npz), "--full-test-split", "--k-shot", "9", "--learners", "protonet"])
    assert rc == 2 and "fewer than k_shot=9" in capsys.readouterr().err


def test_the_fine_medsynth_taxonomy_from_the_command_line(tmp_path: Path) -> None:
    """The default taxonomy is the notebooks' (fine): the automatic protocol tests new classes in seen modalities."""
    js = tmp_path / "fine.json"
    args = ["--n-per-class-site", "1", "--k-shot", "1", "--q-query", "1", "--episodes", "2"]
    assert main(["evaluate", "--data", "synthetic", "--learners", "protonet", *args, "--json", str(js)]) == 0
    assert json.loads(js.read_text())["settings"]["protocol"] == "class split: 46 train / 25 val / 25 test classes"


def test_every_sub_command_has_a_body_and_the_parser_dispatches_to_it() -> None:
    import argparse

    from medmeta_lib.cli import build_parser
    from medmeta_lib.cli.commands import COMMANDS
    from medmeta_lib.cli.fewshot import fewshot_command
    from medmeta_lib.cli.predict import predict_command

    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subs.choices) == set(COMMANDS) | {"fewshot", "predict"}
    for name, argv in {"run": ["run", "--smoke"], "lab": ["lab"], "docs-params": ["docs-params"]}.items():
        assert parser.parse_args(argv).func is COMMANDS[name]
    assert parser.parse_args(["fewshot", "--data", "x.npz", "--k-shot", "1"]).func is fewshot_command
    assert parser.parse_args(["predict", "--recipe", "r", "--support", "s", "x.png"]).func is predict_command
