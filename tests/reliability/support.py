"""Shared helpers of the reliability tests: disk snapshots, identifying DICOM files, CLI runs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

REPO = Path(__file__).resolve().parents[2]

# Identifying DICOM values: none may ever appear in a collection, a log, a notebook or a report.
IDENTIFIERS = {
    "PatientName": "Qwertzuiop^Xanthippe",
    "PatientID": "MRN-7781234509",
    "PatientBirthDate": "19321117",
    "StudyDate": "20230615",
    "SeriesDate": "20230616",
    "AcquisitionDate": "20230617",
    "InstitutionName": "Saint Yvonne Hospital",
    "InstitutionAddress": "42 Elmwood Crescent",
    "ReferringPhysicianName": "Ozymandias^Bertrand",
    "AccessionNumber": "ACC99887766",
    "OtherPatientIDs": "ALT-55512345",
    "PatientAddress": "17 Rue Imaginaire",
}
#: every string above plus the parts of the person names, which a formatter might split
SECRETS = sorted({*IDENTIFIERS.values(), "Qwertzuiop", "Xanthippe", "Ozymandias", "Bertrand", "7781234509"})


def ramp(h: int = 12, w: int = 12, *, flip: bool = False) -> np.ndarray:
    """A uint8 diagonal ramp (distinct rows and columns, so orientation errors show)."""
    a = np.add.outer(np.arange(h), np.arange(w)).astype(np.float64)
    a = (a / a.max() * 255).astype(np.uint8)
    return a[:, ::-1].copy() if flip else a


def write_dicom(path: Path, arr: np.ndarray | None, *, identifiers: bool = True) -> Path:
    """A Secondary Capture DICOM of ``arr`` (12-bit in 16), carrying ``IDENTIFIERS``; no pixels if ``arr`` is None."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    if identifiers:
        for tag, value in IDENTIFIERS.items():
            setattr(ds, tag, value)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    if arr is not None:
        ds.Rows, ds.Columns = arr.shape
        ds.PixelSpacing = [0.139, 0.139]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = (arr.astype(np.uint16) * 16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def snapshot(root: Path) -> dict[str, str]:
    """Every file (SHA-256 of its bytes), folder and link under ``root``, by relative path."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = f"link:{os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for ``python -m medmeta_lib.cli`` child processes: one thread (2 shared cores)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def cli_command(*args: str) -> list[str]:
    """The ``medmeta`` command line run with this interpreter."""
    return [sys.executable, "-m", "medmeta_lib.cli", *args]


def run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``medmeta`` to completion; fail with its output when it does not exit 0."""
    proc = subprocess.run(
        cli_command(*args), cwd=REPO, env=cli_env(**env), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"medmeta {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


@dataclass(frozen=True)
class Server:
    """The local HTTP server of the download tests (``conftest.http_server``) and the file it serves."""

    url: str
    payload: bytes


class Unpickled:
    """Unpickling this object creates the folder ``marker``: proof that a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.marker,))
