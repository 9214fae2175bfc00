"""The whole notebook chain through `medmeta run --smoke`, asserting on what each notebook wrote.

One smoke run is shared by the tests of this module (kernel starts dominate the cost).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from medmeta_lib.pipeline import NOTEBOOKS, ParameterError, PipelineError, run_pipeline
from tests.conftest import PNEUMONIA, needs_pneumonia

pytestmark = pytest.mark.slow
STEMS = [s.stem for s in NOTEBOOKS]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run_pipeline(out=out, smoke=True, progress=False)
    return out, result


def test_figures_are_in_the_executed_notebooks(smoke_run):
    # the suite exports MPLBACKEND=Agg (conftest), as many headless shells do, and kernels inherit it:
    # every cell that shows a figure must still carry it in the executed notebook (and so in the HTML)
    import os

    import nbformat

    assert os.environ.get("MPLBACKEND") == "Agg"
    out, _ = smoke_run
    missing = []
    for stem in STEMS:
        nb = nbformat.read(out / f"{stem}.ipynb", as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            kinds = {k for o in cell.outputs for k in o.get("data", {})}
            said = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
            if "plt.show()" in cell.source and "image/png" not in kinds and "skipped" not in said:
                missing.append(f"{stem} cell {i}: matplotlib figure")
            if ").show()" in cell.source and "application/vnd.plotly.v1+json" not in kinds:
                missing.append(f"{stem} cell {i}: plotly figure")
    assert not missing, missing


def test_run_directory_layout(smoke_run):
    out, result = smoke_run
    assert result.executed == STEMS and result.skipped == []
    for stem in STEMS:
        assert (out / f"{stem}.ipynb").exists() and (out / f"{stem}.html").exists()
        assert (out / stem / "metrics.json").exists()
    params = yaml.safe_load((out / "params.yaml").read_text())
    assert set(params) == set(STEMS)
    assert params["01_data_exploration"]["n_per_class_site"] == 6
    merged = json.loads((out / "metrics.json").read_text())
    assert set(merged) == set(STEMS)
    index = (out / "index.html").read_text()
    for stem in STEMS:
        assert f"{stem}.html" in index
    assert '<img src="01_data_exploration/figures/' in index
    assert "Reproduce this run: <code>medmeta run --smoke</code>" in index


def test_executed_notebooks_have_no_errors(smoke_run):
    out, _ = smoke_run
    for stem in STEMS:
        nb = json.loads((out / f"{stem}.ipynb").read_text())
        errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"{stem}: {errors[:1]}"


def test_notebook01_metrics(smoke_run):
    out, _ = smoke_run
    m = json.loads((out / "01_data_exploration" / "metrics.json").read_text())["headline"]
    assert m["source"] == "synthetic" and m["classes"] == 96 and m["sites"] >= 4 and m["modalities"] >= 4
    assert m["images"] == m["classes"] * m["sites"] * 6
    # the acquisition shift is real: sites are predictable from pixels well above chance
    assert m["site_predictability"] > m["site_chance"] + 0.1


def test_notebook02_writes_encoder_for_03(smoke_run):
    out, _ = smoke_run
    m = json.loads((out / "02_contrastive_pretraining" / "metrics.json").read_text())
    enc = out / "02_contrastive_pretraining" / "encoder.safetensors"
    assert enc.exists() and m["headline"]["encoder_checkpoint"] == str(enc)
    assert {r["encoder"] for r in m["label_efficiency"]} == {"raw pixels", "random init", "SimCLR"}
    params = yaml.safe_load((out / "params.yaml").read_text())
    assert params["03_meta_training"]["encoder_checkpoint"] == str(enc)


def test_notebook03_metrics_cover_every_learner(smoke_run):
    out, _ = smoke_run
    m = json.loads((out / "03_meta_training" / "metrics.json").read_text())
    learners = {"protonet", "anil", "fomaml", "maml", "metasgd", "baseline", "baseline++", "scratch", "weightgen"}
    assert set(m["results"]) == learners
    for r in m["results"].values():
        assert 0.0 <= r["acc_mean"] <= 1.0 and r["episodes"] == 6
        assert r["settings"]["transductive"] is False  # inductive by default
    spec = m["split_spec"]  # what notebook 04 rebuilds and checks
    assert spec["protocol"] == "auto" and not set(spec["test_classes"]) & set(spec["train_classes"])
    # the default experiment: MedSynth's fine taxonomy, new classes within seen modalities
    assert m["settings"]["taxonomy"] == "fine" and spec["kind"] == "classes"
    names = list(json.loads((out / "01_data_exploration" / "metrics.json").read_text())["summary"]["class_counts"])
    for part in ("train_classes", "val_classes", "test_classes"):  # every modality has classes of its own there
        assert {names[c].split("/")[0] for c in spec[part]} == {n.split("/")[0] for n in names}
    diff = m["best_vs_runner_up"]  # "best" is backed by a paired difference over the same episodes
    assert diff["episodes"] == 6 and diff["mean"] >= 0
    assert set(m["cross_site"]) == {"hospital_A", "hospital_B", "hospital_C", "hospital_D"}
    assert (out / "03_meta_training" / "checkpoints" / "protonet" / "last.safetensors").exists()


def test_rerun_skips_completed_notebooks(smoke_run):
    out, _ = smoke_run
    again = run_pipeline(out=out, smoke=True, progress=False)
    assert again.executed == [] and again.skipped == STEMS


def test_failing_cell_stops_with_notebook_and_cell(tmp_path):
    broken = tmp_path / "broken.npz"  # exists, so the parameter check passes; reading it fails in a cell
    broken.write_text("<html>503 Service Unavailable</html>")
    out = tmp_path / "run"
    with pytest.raises(PipelineError, match=r"01_data_exploration: cell \d+ failed with ValueError: .*not an \.npz"):
        run_pipeline(out=out, smoke=True, only=["01"], overrides={"data_source": str(broken)}, progress=False)
    assert (out / "01_data_exploration.ipynb").exists() and (out / "01_data_exploration.html").exists()
    index = (out / "index.html").read_text()
    assert "Run stopped" in index
    assert f"<code>medmeta run --smoke --only 01 -p data_source={broken}</code>" in index  # how to see it fail again


def test_a_data_source_that_names_nothing_is_refused_before_running(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for source, message in [
        ("scans/x.npz", r"01_data_exploration: parameter 'data_source': source '.*scans/x\.npz': no such file"),
        ("my_xrays", r"parameter 'data_source': source '.*my_xrays': no such file or folder"),
        ("synthetc", r"no such file or folder .*; a source is one of: 'synthetic'"),  # a typo names the choices
    ]:
        with pytest.raises(ParameterError, match=message):
            run_pipeline(out=tmp_path / "run", smoke=True, overrides={"data_source": source}, progress=False)
        assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_cli_reports_bad_parameters_before_running(tmp_path):
    cmd = [sys.executable, "-m", "medmeta_lib.cli", "run", "--out", str(tmp_path), "-p", "image_size=big"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "01_data_exploration: parameter 'image_size' must be int" in r.stderr
    assert not list(tmp_path.iterdir())  # nothing ran
    with pytest.raises(ParameterError, match="unknown parameter 'epochz'"):
        run_pipeline(out=tmp_path, overrides={"epochz": 1})


@needs_pneumonia
def test_notebook01_on_real_pneumoniamnist(tmp_path):
    assert PNEUMONIA is not None
    res = run_pipeline(
        out=tmp_path,
        only=["01"],
        smoke=True,
        progress=False,
        overrides={"data_source": str(PNEUMONIA), "pneumonia_npz": ""},
    )
    m = json.loads((tmp_path / "01_data_exploration" / "metrics.json").read_text())
    assert res.executed == ["01_data_exploration"]
    assert m["headline"]["images"] == 4708 and m["headline"]["classes"] == 2 and m["headline"]["sites"] == 1
    assert m["summary"]["class_counts"] == {"normal": 1214, "pneumonia": 3494}
    assert Path(tmp_path / "01_data_exploration" / "figures" / "samples_per_class.png").exists()


def test_notebook04_uses_notebook03_checkpoints(smoke_run):
    out, _ = smoke_run
    m = json.loads((out / "04_adaptation_visualisation" / "metrics.json").read_text())
    assert "loaded from notebook 03" in m["source_of_learners"] and "trained here" not in m["source_of_learners"]
    assert m["split"].startswith("notebook 03's split") and m["transductive"] is False
    curves = m["adaptation_curves"]
    assert {"maml", "protonet", "baseline", "scratch", "contrastive init"} <= set(curves)
    for c in curves.values():
        assert len(c["query_acc_mean"]) == 3  # steps 0, 1, 2
    assert {r["learner"] for r in m["data_efficiency"]} == {"maml", "protonet", "baseline", "scratch", "weightgen"}
    assert m["site_transfer"]["rows"] == ["hospital_A", "hospital_B", "hospital_C", "hospital_D"]
    remedy = m["site_remedy"]  # the new hospital is the last one; both encoders, three deployments, paired
    assert remedy["held_out_site"] == "hospital_D" and set(remedy["encoders"]) == {"plain", "site_invariant"}
    assert set(remedy["difference"]) == {"training_sites", "held_out", "held_out_remote_labels"}
    assert all(d["episodes"] == 2 for d in remedy["difference"].values())
    figs = {p.name for p in (out / "04_adaptation_visualisation" / "figures").glob("*.png")}
    assert {"decision_grid.png", "saliency.png"} <= figs


def test_notebook04_standalone_trains_its_own_models(tmp_path):
    res = run_pipeline(
        out=tmp_path,
        only=["04"],
        smoke=True,
        progress=False,
        overrides={"cross_site_learner": "", "remedy_epochs": 0, "learners": ["protonet", "fomaml"]},
    )
    m = json.loads((tmp_path / "04_adaptation_visualisation" / "metrics.json").read_text())
    assert res.executed == ["04_adaptation_visualisation"]
    assert "trained here" in m["source_of_learners"] and "loaded" not in m["source_of_learners"]
    assert set(m["adaptation_curves"]) == {"protonet", "fomaml"} and m["site_transfer"] is None
    assert m["site_remedy"] is None  # remedy_epochs=0 skips it
    assert {r["learner"] for r in m["data_efficiency"]} == {"protonet", "fomaml"}  # efficiency_skip: only scratch
