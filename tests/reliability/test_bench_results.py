"""Benchmark results survive an interrupted run (bench/result_file.py).

The long bench scripts save their JSON after every finished piece; a run that dies part-way leaves
the pieces it finished, marked ``"complete": false``, never a half-written file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.reliability.support import REPO, cli_env

CHILD = """
import os, sys
sys.path.insert(0, sys.argv[2])
from result_file import ResultFile
rf = ResultFile(sys.argv[1], {"settings": {"pieces": 5}, "results": {}})
for i in range(5):
    rf.data["results"][str(i)] = {"acc": i / 10}
    rf.save()
    if i == 2:
        os._exit(3)  # dies like a machine restart would: no cleanup, no finally
rf.finish()
"""


def _run(path: Path, code: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", code, str(path), str(REPO / "bench")]
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=120)


def test_an_interrupted_bench_keeps_the_pieces_it_finished(tmp_path: Path) -> None:
    out = tmp_path / "out" / "bench.json"
    assert _run(out, CHILD).returncode == 3
    data = json.loads(out.read_text())
    assert data["complete"] is False and sorted(data["results"]) == ["0", "1", "2"]
    assert data["results"]["2"] == {"acc": 0.2} and data["settings"] == {"pieces": 5} and data["seconds"] >= 0
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"]  # no temp file left behind


def test_a_finished_bench_is_marked_complete(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = _run(out, CHILD.replace("if i == 2:", "if False:"))
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["complete"] is True and sorted(data["results"]) == ["0", "1", "2", "3", "4"]
    assert json.loads(done.stdout.strip().splitlines()[-1])["wrote"] == str(out)
    assert data["command"] == f"python -c {out} {REPO / 'bench'}"  # how it was made: the argv as typed
    assert data["code"].startswith("medmeta_lib ")
