"""Learners benchmarked in separate processes are paired only when they were scored on the same episodes.

``bench/paired_results.py`` merges result files of ``bench/medsynth_results.py`` (which keeps every
learner's per-episode accuracies) and pairs the learners afterwards.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.support import REPO

sys.path.insert(0, str(REPO / "bench"))
from paired_results import load_results, paired_vs_best

from medmeta_lib.evaluation.episodic import paired_episode_difference


def _row(name: str, accs: list[float], seed: int = 12345) -> dict[str, Any]:
    test = {
        "learner": name,
        "episodes": len(accs),
        "acc_mean": sum(accs) / len(accs),
        "acc_ci95": 0.1,
        "per_episode_acc": accs,
        "settings": {"episode_seed": seed, "split": "modality"},
    }
    return {"train_seconds": 1.0, "test": test}


def _write(path: Path, rows: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"settings": {}, "results": {"5w1s": rows}}))
    return path


def test_learners_from_two_files_are_paired_episode_by_episode(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", {"protonet": _row("protonet", [0.6, 0.4, 0.8])})
    b = _write(tmp_path / "b.json", {"scratch": _row("scratch", [0.5, 0.4, 0.6])})
    merged = load_results([a, b])
    assert sorted(merged["5w1s"]) == ["protonet", "scratch"]
    diff = paired_episode_difference(merged["5w1s"]["protonet"], merged["5w1s"]["scratch"])
    assert diff["mean"] == pytest.approx(0.1) and diff["episodes"] == 3
    best, paired = paired_vs_best(merged["5w1s"])
    assert best == "protonet" and list(paired) == ["scratch"] and paired["scratch"] == diff


def test_other_episodes_or_missing_records_are_refused_with_the_file_named(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", {"protonet": _row("protonet", [0.6, 0.4])})
    other = _write(tmp_path / "other.json", {"scratch": _row("scratch", [0.5, 0.4], seed=7)})
    with pytest.raises(ValueError, match=r"other\.json.*other episodes"):
        load_results([a, other])
    bare = _row("maml", [0.5])
    bare["test"]["per_episode_acc"] = []
    old = _write(tmp_path / "old.json", {"maml": bare})
    with pytest.raises(ValueError, match=r"old\.json.*no per-episode accuracies"):
        load_results([old])
