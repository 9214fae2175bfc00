"""Privacy: identifying DICOM tags never reach collections, logs, checkpoints, notebook outputs or reports.

The DICOM files are made here with pydicom and carry a patient name, IDs, dates, an institution,
addresses and a referring physician (``support.IDENTIFIERS``). Only their pixels may travel on.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from medmeta_lib import load_collection
from tests.reliability.support import IDENTIFIERS, SECRETS, ramp, run_cli, write_dicom


def _leaks(text: str) -> list[str]:
    low = text.lower()
    return [s for s in SECRETS if s.lower() in low]


def _dicom_tree(root: Path, per_class: int = 4) -> Path:
    for i in range(per_class):
        write_dicom(root / "normal" / f"im{i}.dcm", np.roll(ramp(16, 16), i, axis=0))
        write_dicom(root / "effusion" / f"im{i}.dcm", np.roll(ramp(16, 16, flip=True), i, axis=1))
    ds = pydicom.dcmread(root / "normal" / "im0.dcm")  # the files really carry the identifiers ...
    assert all(str(getattr(ds, tag)) == value for tag, value in IDENTIFIERS.items())
    raw = (root / "normal" / "im0.dcm").read_bytes().decode("latin-1")
    assert sorted(_leaks(raw)) == SECRETS  # ... and the scan below would find every one of them
    return root


def test_collection_keeps_pixels_only(tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys) -> None:
    root = _dicom_tree(tmp_path / "study")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,label,site\n"
        + "".join(f"study/{c}/im{i}.dcm,{c},ward{i % 2}\n" for c in ("normal", "effusion") for i in range(4))
    )
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        cols = [load_collection(str(root), image_size=16), load_collection(str(manifest), image_size=16)]
    for col in cols:
        assert type(col.images) is torch.Tensor  # a plain tensor: no MetaTensor header riding along
        assert not hasattr(col.images, "meta") and not hasattr(col.labels, "meta")
        assert col.images.shape == (8, 1, 16, 16) and col.class_counts().tolist() == [4, 4]
        texts = [repr(col), str(vars(col)), str(col.summary()), str(col.meta)]
        assert not _leaks(" ".join(texts))
    out = capsys.readouterr()
    logged = " ".join([caplog.text, out.out, out.err, *(str(w.message) for w in rec)])
    assert not _leaks(logged)


def test_errors_about_identifying_dicoms_do_not_quote_their_headers(tmp_path: Path) -> None:
    root = _dicom_tree(tmp_path / "study", per_class=2)
    bad = write_dicom(root / "normal" / "broken.dcm", ramp(16, 16))
    ds = pydicom.dcmread(bad)
    ds.PixelData = ds.PixelData[:100]  # truncated pixel data: the header is intact, the pixels are not
    ds.save_as(bad, enforce_file_format=True)
    with pytest.raises(ValueError) as ei:
        load_collection(str(root), image_size=16)
    assert "normal/broken.dcm" in str(ei.value) and not _leaks(str(ei.value))
    with pytest.warns(UserWarning, match="broken.dcm") as rec:
        load_collection(str(root), image_size=16, on_error="skip")
    assert not _leaks(" ".join(str(w.message) for w in rec))


def test_checkpoint_and_cli_output_carry_no_identifiers(tmp_path: Path, one_thread: None) -> None:
    from medmeta_lib.ssl.simclr import pretrain_simclr
    from medmeta_lib.ssl.simclr_config import SimCLRConfig

    root = _dicom_tree(tmp_path / "study")
    col = load_collection(str(root), image_size=16)
    out = tmp_path / "encoder.safetensors"
    cfg = SimCLRConfig(epochs=1, batch_size=8, augment_preset="generic")
    pretrain_simclr(col, backbone_kwargs={"hidden": 8}, config=cfg, out=out, progress=False)
    assert not _leaks(out.read_bytes().decode("latin-1"))  # header JSON (data source, history) and tensors
    info = run_cli("data", "info", str(root), "--image-size", "16")
    assert '"images": 8' in info.stdout and not _leaks(info.stdout + info.stderr)


@pytest.mark.slow
def test_notebook_outputs_and_run_report_carry_no_identifiers(tmp_path: Path) -> None:
    from medmeta_lib.pipeline.runner import run_pipeline

    root = _dicom_tree(tmp_path / "study", per_class=6)
    run = tmp_path / "run"
    lines: list[str] = []
    run_pipeline(
        out=run,
        overrides={"data_source": str(root), "image_size": 16, "projection_images": 12, "samples_per_class": 3},
        smoke=True,
        only=["01"],
        progress=False,
        cell_timeout=240,  # a stalled kernel fails the test instead of hanging it
        log=lines.append,
    )
    written = [p for p in run.rglob("*") if p.is_file()]
    names = {p.name for p in written}
    assert {"01_data_exploration.ipynb", "01_data_exploration.html", "index.html", "metrics.json"} <= names
    metrics = json.loads((run / "01_data_exploration" / "metrics.json").read_text())
    assert metrics["summary"]["images"] == 12 and metrics["summary"]["class_counts"] == {"effusion": 6, "normal": 6}
    for p in written:  # notebook (with outputs), its HTML, the report, metrics, figures, parameters
        assert not _leaks(p.read_bytes().decode("latin-1")), p
    assert not _leaks(" ".join(lines))
