"""The bad-input catalogue: every entry goes through a public entry point once.

Each entry asserts, through one helper (:func:`test_bad_input`):

* the exact exception type (or, for inputs that load with a caveat, a ``UserWarning``);
* that the message names the offending file or field;
* that the message says what to do (an entry-specific pattern);
* that nothing on disk changed: every file under the test's folder is byte-for-byte the same,
  nothing was added (no partial download, no stray temp file) and nothing was executed (the
  pickle entries carry a payload that would create a folder if it were ever unpickled).

``RELIABILITY.md`` holds the same catalogue as a table; ``test_reliability_md_lists_every_entry``
keeps the two in step.
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import medmeta_lib as mm
from medmeta_lib.data.download import DownloadError, download_file
from medmeta_lib.data.medmnist import MEDMNIST_DATASETS, download_medmnist
from medmeta_lib.models import create_backbone
from medmeta_lib.pipeline import NOTEBOOKS, ParameterError, resolve_parameters, run_pipeline
from medmeta_lib.training.checkpoint import load_backbone, load_checkpoint, save_backbone, save_checkpoint
from tests.reliability.support import REPO, Server, Unpickled, ramp, snapshot, write_dicom

Call = Callable[[], object]


@dataclass(frozen=True)
class Ctx:
    tmp: Path
    server: Server


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Ctx], tuple[Call, list[str]]]  # -> (the call, strings the message must contain)
    expect: type[Exception] | type[Warning]
    advice: str  # regex (case-insensitive): what the message tells the user to do


# ---------------------------------------------------------------- builders
def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _tree(root: Path, per_class: int = 2) -> Path:
    for i in range(per_class):
        _png(root / "normal" / f"n{i}.png", ramp())
        _png(root / "pneumonia" / f"p{i}.png", ramp(flip=True))
    return root


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    base = {
        "train_images": np.zeros((4, 8, 8), np.uint8),
        "train_labels": np.array([[0], [1], [0], [1]], np.uint8),
    }
    np.savez(path, **{**base, **arrays})
    return path


def _load(path: Path, **kw: object) -> Call:
    return lambda: mm.load_collection(str(path), image_size=8, **kw)


def npz_truncated(c: Ctx) -> tuple[Call, list[str]]:
    p = _npz(c.tmp / "pneumoniamnist.npz", train_images=np.random.default_rng(0).integers(0, 255, (64, 8, 8), np.uint8))
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return _load(p), [str(p)]


def npz_not_zip(c: Ctx) -> tuple[Call, list[str]]:
    p = c.tmp / "pneumoniamnist.npz"
    p.write_text("<html><body>503 Service Unavailable</body></html>")
    return _load(p), [str(p), "not an .npz"]


def npz_missing_key(c: Ctx) -> tuple[Call, list[str]]:
    p = _npz(c.tmp / "data.npz")
    return _load(p, split="val"), [str(p), "'val_images'"]


def npz_label_out_of_range(c: Ctx) -> tuple[Call, list[str]]:
    p = _npz(c.tmp / "pneumoniamnist.npz", train_labels=np.array([0, 1, 2, 1], np.uint8))
    return _load(p), [str(p), "'train_labels'", "class id 2"]


def npz_label_negative(c: Ctx) -> tuple[Call, list[str]]:
    p = _npz(c.tmp / "data.npz", train_labels=np.array([0, 1, -1, 1], np.int64))
    return _load(p), [str(p), "'train_labels'", "negative"]


def npz_label_shape(c: Ctx) -> tuple[Call, list[str]]:
    p = _npz(c.tmp / "data.npz", train_labels=np.zeros((5, 1), np.uint8))
    return _load(p), [str(p), "'train_labels'", "(4, 1)"]


def npz_multilabel(c: Ctx) -> tuple[Call, list[str]]:
    p = _npz(c.tmp / "chestmnist.npz", train_labels=np.zeros((4, 14), np.uint8))
    return _load(p), [str(p), "'train_labels'", "multi-label"]


def npz_float_nan_pixels(c: Ctx) -> tuple[Call, list[str]]:
    img = np.full((4, 8, 8), 0.5, np.float32)
    img[1, 2, 3], img[2, 0, 0] = np.nan, np.inf
    p = _npz(c.tmp / "data.npz", train_images=img)
    return _load(p), [str(p), "'train_images'", "uint8"]


def npz_pickled_objects(c: Ctx) -> tuple[Call, list[str]]:
    obj = np.empty(4, dtype=object)
    for i in range(4):
        obj[i] = Unpickled(c.tmp / "EXECUTED")
    p = _npz(c.tmp / "data.npz", train_images=obj)
    return _load(p), [str(p), "'train_images'"]


def _collection_kw(**over: object) -> dict[str, object]:
    kw: dict[str, object] = {
        "images": torch.rand(6, 1, 8, 8),
        "labels": torch.tensor([0, 0, 1, 1, 2, 2]),
        "class_names": ("a", "b", "c"),
        "source": "hand-made",
    }
    return {**kw, **over}


def collection_nan_pixels(c: Ctx) -> tuple[Call, list[str]]:
    x = torch.rand(6, 1, 8, 8)
    x[3, 0, 1, 1] = float("nan")
    x[4, 0, 2, 2] = float("-inf")
    return (lambda: mm.ImageCollection(**_collection_kw(images=x))), ["hand-made", "'images'", "2 image(s)"]


def collection_pixel_range(c: Ctx) -> tuple[Call, list[str]]:
    x = torch.rand(6, 1, 8, 8) * 255
    return (lambda: mm.ImageCollection(**_collection_kw(images=x))), ["hand-made", "'images'", "[0, 1]"]


def collection_label_out_of_range(c: Ctx) -> tuple[Call, list[str]]:
    y = torch.tensor([0, 0, 1, 1, 2, 3])
    return (lambda: mm.ImageCollection(**_collection_kw(labels=y))), ["hand-made", "'labels'", "0..2"]


def collection_label_shape(c: Ctx) -> tuple[Call, list[str]]:
    y = torch.zeros(6, 2, dtype=torch.long)
    return (lambda: mm.ImageCollection(**_collection_kw(labels=y))), ["hand-made", "'labels'", "(6,)"]


def collection_empty_class(c: Ctx) -> tuple[Call, list[str]]:
    y = torch.tensor([0, 0, 1, 1, 1, 1])
    return (lambda: mm.ImageCollection(**_collection_kw(labels=y))), ["hand-made", "['c']"]


def folder_mixed_sizes(c: Ctx) -> tuple[Call, list[str]]:
    root = _tree(c.tmp / "xrays")
    _png(root / "normal" / "big.png", ramp(40, 40))
    _png(root / "pneumonia" / "wide.png", ramp(20, 30))
    return _load(root), [str(root), "3 different sizes", "big.png 40x40", "wide.png 20x30", "non-square"]


def folder_non_image_file(c: Ctx) -> tuple[Call, list[str]]:
    root = _tree(c.tmp / "xrays")
    (root / "normal" / "report.txt").write_text("radiologist notes")
    return _load(root), [str(root), "report.txt"]


def folder_unreadable_png(c: Ctx) -> tuple[Call, list[str]]:
    root = _tree(c.tmp / "xrays")
    good = (root / "normal" / "n0.png").read_bytes()
    (root / "pneumonia" / "cut.png").write_bytes(good[: len(good) // 2])
    return _load(root), [str(root), "pneumonia/cut.png"]


def folder_dicom_without_pixels(c: Ctx) -> tuple[Call, list[str]]:
    root = c.tmp / "dicoms"
    for i in range(2):
        write_dicom(root / "cr" / f"im{i}.dcm", ramp())
        write_dicom(root / "dx" / f"im{i}.dcm", ramp(flip=True))
    write_dicom(root / "dx" / "structured_report.dcm", None)
    return _load(root), [str(root), "dx/structured_report.dcm", "pixel"]


def folder_nan_nifti(c: Ctx) -> tuple[Call, list[str]]:
    import nibabel as nib

    root = _tree(c.tmp / "xrays")
    arr = ramp().astype(np.float32)
    arr[4, 4] = np.nan
    nib.save(nib.Nifti1Image(arr, np.eye(4)), root / "normal" / "slice.nii.gz")
    return _load(root), [str(root), "normal/slice.nii.gz", "NaN/Inf"]


def folder_empty_class(c: Ctx) -> tuple[Call, list[str]]:
    root = _tree(c.tmp / "xrays")
    (root / "effusion").mkdir()
    return _load(root), [str(root / "effusion"), "'effusion'"]


def _csv_images(c: Ctx) -> None:
    for i in range(2):
        _png(c.tmp / "img" / f"a{i}.png", ramp())
        _png(c.tmp / "img" / f"b{i}.png", ramp(flip=True))


def csv_missing_paths(c: Ctx) -> tuple[Call, list[str]]:
    _csv_images(c)
    m = c.tmp / "manifest.csv"
    m.write_text("path,label\nimg/a0.png,a\nimg/a9.png,a\nimg/b0.png,b\nimg/b7.png,b\n")
    return _load(m), [str(m), "2 image file(s) do not exist", "row 3, column 'path'", "row 5, column 'path'", "a9.png"]


def csv_unknown_site_column(c: Ctx) -> tuple[Call, list[str]]:
    _csv_images(c)
    m = c.tmp / "manifest.csv"
    m.write_text("path,label,hospital\nimg/a0.png,a,H1\nimg/b0.png,b,H2\n")
    return _load(m), [str(m), "'hospital'", "column 3"]


def csv_header_only(c: Ctx) -> tuple[Call, list[str]]:
    m = c.tmp / "manifest.csv"
    m.write_text("path,label,site\n")
    return _load(m), [str(m), "no rows"]


def csv_empty_label(c: Ctx) -> tuple[Call, list[str]]:
    _csv_images(c)
    m = c.tmp / "manifest.csv"
    m.write_text("path,label\nimg/a0.png,a\nimg/b0.png,\n")
    return _load(m), [str(m), "row 3", "'label'"]


def _sampler(**kw: object) -> Call:
    from tests.conftest import make_collection

    col = make_collection(n_classes=4, per_class=10, n_sites=2)  # 4 classes x 10 images, 2 sites
    return lambda: mm.EpisodeSampler(col, **kw)  # type: ignore[arg-type]


def episodes_n_too_large(c: Ctx) -> tuple[Call, list[str]]:
    return _sampler(n_way=5, k_shot=1, q_query=1), ["toy", "5-way", "only 4 class(es)"]


def episodes_kq_too_large(c: Ctx) -> tuple[Call, list[str]]:
    return _sampler(n_way=2, k_shot=6, q_query=5), ["toy", "K+Q=11"]


def episodes_one_site_too_small(c: Ctx) -> tuple[Call, list[str]]:
    return _sampler(n_way=2, k_shot=3, q_query=3, one_site=True), ["toy", "any single site"]


def episodes_zero_shot(c: Ctx) -> tuple[Call, list[str]]:
    return _sampler(n_way=2, k_shot=0, q_query=3), ["k_shot", "got 0"]


def episodes_fractional_query(c: Ctx) -> tuple[Call, list[str]]:
    return _sampler(n_way=2, k_shot=1, q_query=2.5), ["q_query", "2.5"]


def episodes_unknown_class(c: Ctx) -> tuple[Call, list[str]]:
    return _sampler(n_way=2, k_shot=1, q_query=1, classes=[0, 9]), ["toy", "classes [9]", "0..3"]


def _encoder(c: Ctx, name: str = "encoder.safetensors") -> Path:
    torch.manual_seed(0)
    return save_backbone(c.tmp / name, create_backbone("conv4", hidden=8), metadata={"epochs": 3})


def ckpt_truncated(c: Ctx) -> tuple[Call, list[str]]:
    p = _encoder(c)
    p.write_bytes(p.read_bytes()[: p.stat().st_size - 100])
    return (lambda: load_backbone(p)), [str(p)]


def ckpt_tampered_header(c: Ctx) -> tuple[Call, list[str]]:
    p = _encoder(c)
    raw = p.read_bytes()
    assert raw.count(b'\\"epochs\\": 3') == 1
    p.write_bytes(raw.replace(b'\\"epochs\\": 3', b'\\"epochs\\": 9'))  # same length: only the checksum can tell
    return (lambda: load_checkpoint(p)), [str(p), "SHA-256"]


def ckpt_tampered_tensor(c: Ctx) -> tuple[Call, list[str]]:
    p = _encoder(c)
    raw = bytearray(p.read_bytes())
    raw[-5] ^= 0x01  # one bit of the last weight
    p.write_bytes(bytes(raw))
    return (lambda: load_backbone(p)), [str(p), "SHA-256"]


def ckpt_other_backbone(c: Ctx) -> tuple[Call, list[str]]:
    p = _encoder(c)
    return (lambda: load_backbone(p, expected_name="resnet12")), [str(p), "'conv4'", "'resnet12'"]


def ckpt_other_backbone_arguments(c: Ctx) -> tuple[Call, list[str]]:
    p = _encoder(c)
    return (lambda: load_backbone(p, expected_name="conv4", hidden=64)), [str(p), "hidden", "8", "64"]


def ckpt_learner_as_encoder(c: Ctx) -> tuple[Call, list[str]]:
    p = save_checkpoint(c.tmp / "last.safetensors", {"learner.w": torch.zeros(2)}, {"kind": "learner", "step": 4})
    return (lambda: load_backbone(p)), [str(p), "kind='learner'"]


def ckpt_foreign_safetensors(c: Ctx) -> tuple[Call, list[str]]:
    from safetensors.torch import save_file

    p = c.tmp / "model.safetensors"
    save_file({"weight": torch.zeros(3)}, str(p))
    return (lambda: load_backbone(p)), [str(p), "no MedMeta metadata"]


def ckpt_pickle_renamed(c: Ctx) -> tuple[Call, list[str]]:
    p = c.tmp / "encoder.safetensors"
    p.write_bytes(pickle.dumps({"state_dict": Unpickled(c.tmp / "EXECUTED")}, protocol=4))
    return (lambda: load_backbone(p)), [str(p), "pickle", "without unpickling"]


def ckpt_torch_save_renamed(c: Ctx) -> tuple[Call, list[str]]:
    p = c.tmp / "encoder.safetensors"
    buf = io.BytesIO()
    torch.save({"state_dict": Unpickled(c.tmp / "EXECUTED")}, buf)
    assert zipfile.is_zipfile(io.BytesIO(buf.getvalue()))
    p.write_bytes(buf.getvalue())
    return (lambda: load_checkpoint(p)), [str(p), "without unpickling"]


def param_unknown(c: Ctx) -> tuple[Call, list[str]]:
    out = c.tmp / "run"  # run_pipeline validates before it creates anything: `out` must not appear
    return (
        lambda: run_pipeline(out=out, overrides={"imag_size": 28}, only=["01"], progress=False, log=lambda s: None)
    ), ["'imag_size'", "'image_size'"]


def param_unknown_for_notebook(c: Ctx) -> tuple[Call, list[str]]:
    return (lambda: resolve_parameters(NOTEBOOKS, {"02.k_shot": 5})), ["02_contrastive_pretraining", "'k_shot'"]


def param_wrong_type(c: Ctx) -> tuple[Call, list[str]]:
    return (lambda: resolve_parameters(NOTEBOOKS, {"image_size": "large"})), ["'image_size'", "must be int", "'large'"]


def param_bool_for_int(c: Ctx) -> tuple[Call, list[str]]:
    return (lambda: resolve_parameters(NOTEBOOKS, {"03.meta_steps": True})), ["03_meta_training", "'meta_steps'"]


def _old_file(c: Ctx) -> Path:
    dest = c.tmp / "cache" / "pneumoniamnist.npz"
    dest.parent.mkdir()
    dest.write_bytes(b"previous download, must survive")
    return dest


def download_interrupted(c: Ctx) -> tuple[Call, list[str]]:
    dest, url = _old_file(c), f"{c.server.url}/cut.npz"
    return (lambda: download_file(url, dest, progress=False)), [url, str(dest), "nothing was written"]


def download_md5_mismatch(c: Ctx) -> tuple[Call, list[str]]:
    dest, url = _old_file(c), f"{c.server.url}/ok.npz"
    official = MEDMNIST_DATASETS["pneumoniamnist"].md5(28)

    def call() -> object:
        with warnings.catch_warnings():  # "exists but its MD5 differs; downloading it again"
            warnings.simplefilter("ignore")
            return download_medmnist("pneumoniamnist", data_dir=dest.parent, url=url, progress=False)

    return call, [url, str(dest), "MD5", str(official), "nothing was written"]


def download_not_found(c: Ctx) -> tuple[Call, list[str]]:
    dest, url = _old_file(c), f"{c.server.url}/moved.npz"
    return (lambda: download_file(url, dest, md5="0" * 32, progress=False)), [url, "404", "nothing was written"]


CASES = [
    Case("npz-truncated", npz_truncated, ValueError, r"re-download it"),
    Case("npz-not-zip", npz_not_zip, ValueError, r"re-download it"),
    Case("npz-missing-key", npz_missing_key, ValueError, r"re-download it|check that it is"),
    Case("npz-label-out-of-range", npz_label_out_of_range, ValueError, r"right file|pass name="),
    Case("npz-label-negative", npz_label_negative, ValueError, r"re-download it"),
    Case("npz-label-shape", npz_label_shape, ValueError, r"re-download it"),
    Case("npz-multi-label", npz_multilabel, ValueError, r"choose a multi-class or binary"),
    Case("npz-float-nan-pixels", npz_float_nan_pixels, ValueError, r"convert float images"),
    Case("npz-pickled-objects", npz_pickled_objects, ValueError, r"re-download it"),
    Case("collection-nan-pixels", collection_nan_pixels, ValueError, r"clean or drop them"),
    Case("collection-pixel-range", collection_pixel_range, ValueError, r"rescale"),
    Case("collection-label-out-of-range", collection_label_out_of_range, ValueError, r"fix the labels"),
    Case("collection-label-shape", collection_label_shape, ValueError, r"one integer class id per image"),
    Case("collection-empty-class", collection_empty_class, ValueError, r"remove them .* or add images"),
    Case("folder-mixed-sizes", folder_mixed_sizes, UserWarning, r"crop or resize them"),
    Case("folder-non-image-file", folder_non_image_file, UserWarning, r"pass extensions="),
    Case("folder-unreadable-png", folder_unreadable_png, ValueError, r"fix or remove them.*on_error='skip'"),
    Case("folder-dicom-without-pixels", folder_dicom_without_pixels, ValueError, r"fix or remove them"),
    Case("folder-nan-pixels", folder_nan_nifti, ValueError, r"fix or remove them"),
    Case("folder-empty-class", folder_empty_class, ValueError, r"add images or remove the folder"),
    Case("csv-missing-paths", csv_missing_paths, ValueError, r"fix the paths, pass root="),
    Case("csv-unknown-site-column", csv_unknown_site_column, ValueError, r"remove or rename it"),
    Case("csv-no-rows", csv_header_only, ValueError, r"add one row per image"),
    Case("csv-empty-cell", csv_empty_label, ValueError, r"fill it in or remove the row"),
    Case("episodes-n-too-large", episodes_n_too_large, ValueError, r"lower n_way"),
    Case("episodes-kq-too-large", episodes_kq_too_large, ValueError, r"lower n_way, k_shot or q_query"),
    Case("episodes-one-site-too-small", episodes_one_site_too_small, ValueError, r"allow more classes/sites"),
    Case("episodes-zero-shot", episodes_zero_shot, ValueError, r"whole number >= 1"),
    Case("episodes-fractional-query", episodes_fractional_query, ValueError, r"whole number >= 1"),
    Case("episodes-unknown-class", episodes_unknown_class, ValueError, r"class ids from that range"),
    Case("ckpt-truncated", ckpt_truncated, ValueError, r"re-create it|re-run the step"),
    Case("ckpt-tampered-header", ckpt_tampered_header, ValueError, r"re-create it|re-run the step"),
    Case("ckpt-tampered-tensor", ckpt_tampered_tensor, ValueError, r"re-create it|re-run the step"),
    Case("ckpt-other-backbone", ckpt_other_backbone, ValueError, r"pass the matching backbone|another checkpoint"),
    Case("ckpt-other-backbone-args", ckpt_other_backbone_arguments, ValueError, r"use matching ones"),
    Case("ckpt-learner-as-encoder", ckpt_learner_as_encoder, ValueError, r"pass a file written by save_backbone"),
    Case("ckpt-foreign-safetensors", ckpt_foreign_safetensors, ValueError, r"re-create it"),
    Case("ckpt-pickle-renamed", ckpt_pickle_renamed, ValueError, r"re-create it"),
    Case("ckpt-torch-save-renamed", ckpt_torch_save_renamed, ValueError, r"re-create it"),
    Case("param-unknown", param_unknown, ParameterError, r"fix the name"),
    Case("param-unknown-for-notebook", param_unknown_for_notebook, ParameterError, r"fix the name"),
    Case("param-wrong-type", param_wrong_type, ParameterError, r"pass a value of type int"),
    Case("param-bool-for-int", param_bool_for_int, ParameterError, r"pass a value of type int"),
    Case("download-interrupted", download_interrupted, DownloadError, r"run the download again"),
    Case("download-md5-mismatch", download_md5_mismatch, DownloadError, r"check the url and the expected checksum"),
    Case("download-not-found", download_not_found, DownloadError, r"check the url"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, http_server: Server) -> None:
    call, mentions = case.build(Ctx(tmp_path, http_server))
    before = snapshot(tmp_path)
    if issubclass(case.expect, Warning):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            call()  # loads, with a caveat
        relevant = [w for w in rec if w.category is case.expect and all(m in str(w.message) for m in mentions)]
        assert relevant, f"no {case.expect.__name__} mentioning {mentions}; got {[str(w.message) for w in rec]}"
        message = str(relevant[0].message)
    else:
        with pytest.raises(Exception) as ei:
            call()
        assert type(ei.value) is case.expect, f"{type(ei.value).__name__}: {ei.value}"
        message = str(ei.value)
        for m in mentions:
            assert m in message, f"{m!r} not in message: {message}"
    assert re.search(case.advice, message, re.IGNORECASE | re.DOTALL), f"no advice /{case.advice}/ in: {message}"
    assert snapshot(tmp_path) == before, "the failed call changed, added or removed files"


def test_catalogue_is_large_and_ids_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) >= 25 and len(set(ids)) == len(ids)


def test_reliability_md_lists_every_entry() -> None:
    text = (REPO / "RELIABILITY.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `([a-z0-9-]+)` \|", text, flags=re.MULTILINE)
    assert sorted(listed) == sorted(c.id for c in CASES), "RELIABILITY.md's catalogue table is out of date"
