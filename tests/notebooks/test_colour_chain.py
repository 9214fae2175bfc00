"""`medmeta run --smoke` on a MedMNIST-format .npz, in colour (3 channels) and in greyscale, as a user runs it.

MedSynth renders every modality with one channel, so the default smoke chain never meets colour images;
here a tiny .npz written by the test goes through all four notebooks: 02's encoder (RGB in, as the data
has it) feeds 03's learners and 04's contrastive-init curve, and 04 loads 03's checkpoints. The console
is checked too: one line per notebook and nothing else, no kernel warning. The HTML exports load MathJax
from the run directory.

Both runs start at once and each kernel uses one torch thread, so on two cores the pair costs about one run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

from medmeta_lib.pipeline.runner import NOTEBOOKS
from medmeta_lib.training.checkpoint import load_checkpoint
from tests.conftest import write_medmnist_npz

pytestmark = pytest.mark.slow
STEMS = [s.stem for s in NOTEBOOKS]
N_CLASSES, PER_CLASS = 10, 6  # 'classes' protocol: held-out classes (6 train / 2 val / 2 test), 2-way tasks
LEARNERS = ["protonet", "fomaml", "baseline"]


class Run(NamedTuple):
    out: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Run]:
    learners = f"[{', '.join(LEARNERS)}]"
    # one torch thread per kernel: the images are tiny, and on a busy 2-core machine a second thread
    # only waits for the first (measured here: 30 s instead of 0.2 s for six FOMAML test episodes)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started: dict[int, tuple[Path, subprocess.Popen[str]]] = {}
    try:
        for channels in (3, 1):
            d = tmp_path_factory.mktemp(f"npz_{channels}ch")
            npz = write_medmnist_npz(d / "tiny.npz", channels=channels, n_classes=N_CLASSES, per_class=PER_CLASS)
            cmd = [sys.executable, "-m", "medmeta_lib.cli", "run", "--smoke", "--out", str(d / "run")]
            for p in (f"data_source={npz}", "n_way=2", "03.protocol=classes"):
                cmd += ["-p", p]
            cmd += ["-p", f"03.learners={learners}", "-p", f"04.learners={learners}"]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
            started[channels] = (d / "run", proc)
        done = {}
        for channels, (out, proc) in started.items():
            stdout, stderr = proc.communicate(timeout=600)
            done[channels] = Run(out, proc.returncode, stdout, stderr)
        return done
    finally:
        for _, proc in started.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


CHANNELS = pytest.mark.parametrize("channels", [3, 1], ids=["rgb", "greyscale"])


@CHANNELS
def test_console_shows_one_line_per_notebook_and_nothing_else(runs: dict[int, Run], channels: int) -> None:
    r = runs[channels]
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    pattern = re.compile(r"\[medmeta\] (\S+) done in \d+ s → (.+\.html)")
    assert [m.group(1) for m in map(pattern.fullmatch, lines) if m] == STEMS, lines
    assert len(lines) == len(STEMS)
    assert r.stderr == ""  # no "[IPKernelApp] WARNING | Kernel is running over TCP ...", no progress bar


@CHANNELS
def test_html_exports_load_mathjax_from_the_run_directory(runs: dict[int, Run], channels: int) -> None:
    out = runs[channels].out
    for stem in STEMS:
        html = (out / f"{stem}.html").read_text(encoding="utf-8")
        # the page's MathJax is the run directory's copy (plotly's figures add their own optional CDN script)
        (src,) = re.findall(r'<script src="([^"]*MathJax\.js[^"]*)"', html)
        assert src.startswith("mathjax/MathJax.js?config=")
    assert (out / "mathjax" / "MathJax.js").is_file()


@CHANNELS
def test_the_chain_carries_the_data_channels_from_02_to_04(runs: dict[int, Run], channels: int) -> None:
    out = runs[channels].out
    assert runs[channels].returncode == 0, runs[channels].stderr
    for stem in STEMS:
        nb = json.loads((out / f"{stem}.ipynb").read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{stem}: {errors[:1]}"

    m01 = json.loads((out / "01_data_exploration" / "metrics.json").read_text())
    assert m01["summary"]["channels"] == channels and m01["headline"]["classes"] == N_CLASSES

    # 02's encoder takes the data's channels; 03 starts from it and its checkpoints record them
    enc = out / "02_contrastive_pretraining" / "encoder.safetensors"
    assert load_checkpoint(enc).metadata["backbone"]["kwargs"]["in_channels"] == channels
    m03 = json.loads((out / "03_meta_training" / "metrics.json").read_text())
    assert set(m03["results"]) == set(LEARNERS) and m03["settings"]["encoder"] == str(enc)
    assert m03["split_spec"]["protocol"] == "classes"
    for name in LEARNERS:
        spec = load_checkpoint(m03["training"][name]["checkpoint"]).metadata["spec"]
        assert spec["backbone"]["kwargs"]["in_channels"] == channels and spec["encoder"] == str(enc)

    # 04 loads 03's learners and builds the contrastive-init learner from 02's encoder (where colour failed)
    m04 = json.loads((out / "04_adaptation_visualisation" / "metrics.json").read_text())
    assert "loaded from notebook 03" in m04["source_of_learners"] and "trained here" not in m04["source_of_learners"]
    assert m04["split"].startswith("notebook 03's split")
    assert set(m04["adaptation_curves"]) == {*LEARNERS, "contrastive init"}
    for curve in m04["adaptation_curves"].values():
        assert len(curve["query_acc_mean"]) == 3  # steps 0, 1, 2
