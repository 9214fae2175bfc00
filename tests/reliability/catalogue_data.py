"""The bad-input catalogue's data entries (MedMNIST files, collections, folders, CSV manifests, sources).

A builder makes the bad input in a fresh folder and returns the call that must fail (or warn) and the strings
its message must contain; a ``Case`` pairs it with the exception type and the advice pattern.
``catalogue_cases.py`` adds the other entries, and ``test_catalogue.py`` runs them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import medmeta_lib as mm
from tests.reliability.support import Server, Unpickled, ramp, write_dicom

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


def _manifest(c: Ctx, text: str) -> Path:
    """``manifest.csv`` holding ``text`` beside four real images (img/a0, a1, b0, b1.png)."""
    for i in range(2):
        _png(c.tmp / "img" / f"a{i}.png", ramp())
        _png(c.tmp / "img" / f"b{i}.png", ramp(flip=True))
    m = c.tmp / "manifest.csv"
    m.write_text(text)
    return m


def csv_missing_paths(c: Ctx) -> tuple[Call, list[str]]:
    m = _manifest(c, "path,label\nimg/a0.png,a\nimg/a9.png,a\nimg/b0.png,b\nimg/b7.png,b\n")
    return _load(m), [str(m), "2 image file(s) do not exist", "row 3, column 'path'", "row 5, column 'path'", "a9.png"]


def csv_unknown_site_column(c: Ctx) -> tuple[Call, list[str]]:
    m = _manifest(c, "path,label,hospital\nimg/a0.png,a,H1\nimg/b0.png,b,H2\n")
    return _load(m), [str(m), "'hospital'", "column 3"]


def csv_header_only(c: Ctx) -> tuple[Call, list[str]]:
    m = c.tmp / "manifest.csv"
    m.write_text("path,label,site\n")
    return _load(m), [str(m), "no rows"]


def csv_empty_label(c: Ctx) -> tuple[Call, list[str]]:
    m = _manifest(c, "path,label\nimg/a0.png,a\nimg/b0.png,\n")
    return _load(m), [str(m), "row 3", "'label'"]


def csv_split_typo(c: Ctx) -> tuple[Call, list[str]]:
    m = _manifest(c, "path,label,split\nimg/a0.png,a,train\nimg/b0.png,b,tran\n")
    return _load(m), [str(m), "row 3", "'split'", "'tran'"]


def csv_duplicate_image(c: Ctx) -> tuple[Call, list[str]]:
    m = _manifest(c, "path,label\nimg/a0.png,a\nimg/b0.png,b\n./img/a0.png,b\n")
    return _load(m), [str(m), "rows 2 and 4", "a0.png"]


def csv_mixed_labels(c: Ctx) -> tuple[Call, list[str]]:
    m = _manifest(c, "path,label\nimg/a0.png,1\nimg/a1.png,01\nimg/b0.png,b\n")
    return _load(m), [str(m), "column 'label' mixes numbers (2) and names (1)", "'1' (row 2)", "3 classes"]


def source_unknown_option(c: Ctx) -> tuple[Call, list[str]]:
    root = _tree(c.tmp / "xrays")
    return _load(root, on_eror="skip"), [str(root), "['on_eror']", "'on_error'"]


DATA_CASES = [
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
    Case("csv-split-typo", csv_split_typo, ValueError, r"must be one of \['train', 'val', 'test'\]"),
    Case("csv-duplicate-image", csv_duplicate_image, ValueError, r"keep one"),
    Case("csv-mixed-labels", csv_mixed_labels, UserWarning, r"write every label as a whole number id"),
    Case("source-unknown-option", source_unknown_option, ValueError, r"it takes \[.*\] besides"),
]
