"""Atomic checkpoint writes under SIGKILL: the file on disk is always the old or the new checkpoint.

A child process saves a 16 MB checkpoint over and over with ``save_checkpoint`` (version ``i``: every
weight equals ``i``, metadata ``{"version": i}``) and logs ``i`` after each save returns. It is killed
with SIGKILL at several moments: while a temporary file is being written (the child is frozen with
SIGSTOP first, so the kill provably lands mid-write) and at random times in its loop. After every
kill the checkpoint must pass ``load_checkpoint`` (SHA-256 verified) and be a complete version: the
last one logged, or the next one if the kill came between the rename and the log line.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medmeta_lib.training.checkpoint import load_checkpoint, save_checkpoint
from tests.reliability.support import REPO, cli_env

N = 4_000_000  # float32 values: 16 MB per checkpoint

CHILD = f"""
import sys, torch
from medmeta_lib.training.checkpoint import save_checkpoint
path, i, log = sys.argv[1], int(sys.argv[2]), sys.argv[3]
w = torch.empty({N})
with open(log, "w") as f:
    while True:
        w.fill_(float(i))
        save_checkpoint(path, {{"w": w, "version": torch.tensor([i])}}, {{"version": i}})
        f.write(f"{{i}}\\n")
        f.flush()
        i += 1
"""


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def _logged(log: Path) -> list[int]:
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def _temps(folder: Path, name: str) -> set[str]:
    return {p.name for p in folder.glob(f".{name}.*.tmp")}


def _check(path: Path, allowed: set[int]) -> int:
    ck = load_checkpoint(path)  # raises on any torn, truncated or mixed file
    v = int(ck.metadata["version"])
    assert v in allowed, f"on disk: version {v}, expected one of {sorted(allowed)}"
    assert int(ck.tensors["version"]) == v and bool((ck.tensors["w"] == float(v)).all()), "a mixed file"
    return v


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to see the child stopped")
def test_sigkill_during_save_leaves_the_old_or_the_new_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ck.safetensors"
    save_checkpoint(path, {"w": torch.zeros(N), "version": torch.tensor([0])}, {"version": 0})
    version, rnd = 0, random.Random(8)
    moments = ["mid-write", "random", "mid-write", "random", "random"]
    for n, moment in enumerate(moments):
        log = tmp_path / f"child{n}.log"
        stale = _temps(tmp_path, path.name)
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path), str(version + 1), str(log)], cwd=REPO, env=cli_env()
        )
        try:
            deadline = time.monotonic() + 120
            while not _logged(log):  # the child is in its save loop once it has logged one save
                assert proc.poll() is None and time.monotonic() < deadline, "the child did not start saving"
                time.sleep(0.005)
            if moment == "random":
                time.sleep(rnd.uniform(0.0, 0.4))
                proc.send_signal(signal.SIGKILL)
            else:
                while True:  # freeze the child while a temp file of a save in progress exists, then kill it
                    assert time.monotonic() < deadline, "never caught a save in progress"
                    writing = _temps(tmp_path, path.name) - stale
                    if not writing:
                        time.sleep(0.001)
                        continue
                    proc.send_signal(signal.SIGSTOP)
                    while _state(proc.pid) not in "Tt":
                        time.sleep(0.001)
                    if writing <= _temps(tmp_path, path.name):  # still there while frozen: mid-write
                        proc.send_signal(signal.SIGKILL)
                        break
                    proc.send_signal(signal.SIGCONT)  # that save finished meanwhile; catch the next one
            assert proc.wait(30) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        done = _logged(log)[-1]
        if moment == "mid-write":
            version = _check(path, {done})  # the save in progress never replaced the file
            assert writing <= _temps(tmp_path, path.name), "its temp file is left behind, never read"
        else:
            version = _check(path, {done, done + 1})
    assert version >= len(moments)  # every child completed at least one save before its kill


def test_a_torn_pipeline_completion_marker_means_run_again(tmp_path: Path) -> None:
    # the marker is written atomically now; one torn by an older version (or a full disk) must not crash
    # a resumed `medmeta run`: the notebook is simply run again
    from medmeta_lib.pipeline.runner import DONE_FILE, _done_hash

    done = tmp_path / DONE_FILE
    assert _done_hash(done) is None
    done.write_text('{"hash": "0123456789abcdef", "seconds": 1.5}')
    assert _done_hash(done) == "0123456789abcdef"
    for torn in ('{"hash": "01234', "", "[1, 2]", '{"hash": 7}'):
        done.write_text(torn)
        assert _done_hash(done) is None, torn


def test_a_failed_text_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the report, the exported notebooks, the pipeline's markers and metrics all go through atomic_write_text
    from medmeta_lib.runio import atomic_write_text, write_metrics

    path = atomic_write_text(tmp_path / "index.html", "old")
    real_write = Path.write_text

    def torn(self: Path, text: str, *args: object, **kwargs: object) -> int:
        real_write(self, text[:3], encoding="utf-8")  # half the text reaches the disk, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(path, "new and longer")
    with pytest.raises(OSError, match="No space"):
        write_metrics(tmp_path, {"acc": 0.5})
    monkeypatch.undo()
    assert path.read_text(encoding="utf-8") == "old"
    assert not (tmp_path / "metrics.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html"], "a temporary file was left behind"
    assert atomic_write_text(path, "new").read_text(encoding="utf-8") == "new"
