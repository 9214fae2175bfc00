"""Image-folder loader and image reading: PNG, DICOM, NIfTI, broken files, privacy of DICOM headers.

The CSV manifest's own tests are in ``test_manifest.py``; channel detection across splits covers both here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

import medmeta_lib.data.image_files as image_files_mod
from medmeta_lib.data.folder import load_folder
from medmeta_lib.data.image_files import read_image
from medmeta_lib.data.manifest import load_csv_manifest
from medmeta_lib.data.sources import load_collection
from tests.data.image_helpers import expected_pixels as _expected
from tests.data.image_helpers import png as _png
from tests.data.image_helpers import ramp as _ramp

PATIENT_NAME = "Zyxwv^Quentin"
PATIENT_ID = "PID-4815162342"


def _dicom(path: Path, arr: np.ndarray, *, photometric: str = "MONOCHROME2") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientName, ds.PatientID = PATIENT_NAME, PATIENT_ID
    ds.PatientBirthDate, ds.StudyDate, ds.InstitutionName = "19700101", "20240229", "St Elsewhere"
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = (arr.astype(np.uint16) * 16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def _nifti(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), path)
    return path


# ---------------------------------------------------------------- read_image
def test_read_png_exact_orientation_and_scaling(tmp_path: Path) -> None:
    a = _ramp(12, 12)
    x = read_image(_png(tmp_path / "a.png", a), image_size=12)
    assert type(x) is torch.Tensor and x.shape == (1, 12, 12)
    assert torch.allclose(x[0], _expected(a), atol=1e-6)  # rows stay rows: no transposition


def test_read_rgb_png_to_grey_and_grey_to_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[:5, :, 0] = 255  # red top half
    rgb[5:, :, 1] = 255  # green bottom half
    p = _png(tmp_path / "rgb.png", rgb)
    grey = read_image(p, image_size=10, channels=1)
    # BT.601 luma: red 0.299, green 0.587 → after min-max: red 0, green 1
    assert torch.allclose(grey[0, :5], torch.zeros(5, 10)) and torch.allclose(grey[0, 5:], torch.ones(5, 10))
    col3 = read_image(p, image_size=10, channels=3)
    assert col3.shape == (3, 10, 10) and float(col3[0, 0, 0]) == 1.0 and float(col3[1, 0, 0]) == 0.0
    g3 = read_image(_png(tmp_path / "g.png", _ramp(10, 10)), image_size=10, channels=3)
    assert torch.equal(g3[0], g3[1]) and torch.equal(g3[1], g3[2])


def test_palette_and_16_bit_png(tmp_path: Path) -> None:
    a = _ramp(10, 10)
    pal = tmp_path / "p.png"
    Image.fromarray(np.stack([a, a, a], -1)).convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(pal)
    x = read_image(pal, image_size=10)
    assert torch.corrcoef(torch.stack([x.flatten(), _expected(a).flatten()]))[0, 1] > 0.99
    a16 = (a.astype(np.uint16) * 250).astype(np.uint16)
    p16 = tmp_path / "16.png"
    Image.fromarray(a16).save(p16)
    assert torch.allclose(read_image(p16, image_size=10)[0], _expected(a16), atol=1e-5)


def test_non_square_is_centre_cropped_then_resized(tmp_path: Path) -> None:
    a = np.zeros((10, 30), np.uint8)
    a[:, 10:20] = 255  # the centre square is white, the sides black
    x = read_image(_png(tmp_path / "wide.png", a), image_size=20)
    assert x.shape == (1, 20, 20) and float(x.min()) > 0.99


def test_constant_image_becomes_zeros(tmp_path: Path) -> None:
    x = read_image(_png(tmp_path / "c.png", np.full((9, 9), 200, np.uint8)), image_size=16)
    assert x.shape == (1, 16, 16) and float(x.abs().max()) == 0.0


def test_dicom_pixels_and_monochrome1(tmp_path: Path) -> None:
    a = _ramp(16, 16)
    x = read_image(_dicom(tmp_path / "m2.dcm", a), image_size=16)
    assert torch.allclose(x[0], _expected(a), atol=1e-6)
    inv = read_image(_dicom(tmp_path / "m1.dcm", a, photometric="MONOCHROME1"), image_size=16)
    assert torch.allclose(inv[0], 1 - _expected(a), atol=1e-6)
    # DICOM without a file extension is recognised by its "DICM" marker
    for name in ("IM0001", "1.2.840.113619.2.55.3"):  # no extension, or a UID whose last dot looks like one
        bare = tmp_path / name
        bare.write_bytes((tmp_path / "m2.dcm").read_bytes())
        assert torch.allclose(read_image(bare, image_size=16), x)


def test_nifti_2d_and_3d_middle_slice(tmp_path: Path) -> None:
    a = _ramp(14, 14).astype(np.float32)
    x = read_image(_nifti(tmp_path / "a.nii.gz", a), image_size=14)
    assert torch.allclose(x[0], _expected(a), atol=1e-6)
    vol = np.stack([np.zeros_like(a), np.zeros_like(a), a, np.zeros_like(a), np.zeros_like(a)], -1)
    v = read_image(_nifti(tmp_path / "v.nii", vol), image_size=14)
    assert torch.allclose(v[0], _expected(a), atol=1e-6)  # slice 5 // 2 = 2


def test_missing_reader_package_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _dicom(tmp_path / "x.dcm", _ramp())
    image_files_mod._reader.cache_clear()
    monkeypatch.setattr(image_files_mod, "_has_module", lambda m: m != "pydicom")
    try:
        with pytest.raises(ImportError, match="pip install pydicom"):
            read_image(p)
    finally:
        image_files_mod._reader.cache_clear()


# ---------------------------------------------------------------- load_folder
def _make_tree(root: Path) -> None:
    for i in range(3):
        _png(root / "normal" / f"n{i}.png", _ramp(12, 12))
        _png(root / "pneumonia" / f"p{i}.png", _ramp(12, 12, flip=True))


def test_load_folder_classes_and_labels(tmp_path: Path) -> None:
    _make_tree(tmp_path / "ds")
    col = load_folder(tmp_path / "ds", image_size=16)
    assert col.class_names == ("normal", "pneumonia") and col.class_counts().tolist() == [3, 3]
    assert col.images.shape == (6, 1, 16, 16) and type(col.images) is torch.Tensor
    assert col.site_names == ("ds",) and col.source == str(tmp_path / "ds")
    files = col.meta["files"]
    sub = col.subset([4])  # file_index stays aligned with the images after subset()
    assert files[int(sub.meta["file_index"][0])].startswith("pneumonia")
    via = load_collection(str(tmp_path / "ds"), image_size=16)
    assert torch.equal(via.images, col.images)


def test_split_folders(tmp_path: Path) -> None:
    _make_tree(tmp_path / "ds" / "train")
    _png(tmp_path / "ds" / "test" / "normal" / "t.png", _ramp())
    _png(tmp_path / "ds" / "test" / "pneumonia" / "t.png", _ramp(flip=True))
    assert len(load_folder(tmp_path / "ds", split="train")) == 6
    test = load_folder(tmp_path / "ds", split="test")
    assert len(test) == 2 and test.split == "test"
    with pytest.raises(FileNotFoundError, match="no 'val' folder"):
        load_folder(tmp_path / "ds", split="val")


def test_split_without_split_structure_warns(tmp_path: Path) -> None:
    _make_tree(tmp_path / "ds")
    with pytest.warns(UserWarning, match="same as split='train'"):
        col = load_folder(tmp_path / "ds", split="test")
    assert len(col) == 6 and col.split == "test"


def test_mixed_formats_in_one_folder(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    _png(root / "a" / "x.png", _ramp())
    _dicom(root / "a" / "y.dcm", _ramp())
    _nifti(root / "b" / "z.nii.gz", _ramp().astype(np.float32))
    _png(root / "b" / "deep" / "nested.jpg", np.stack([_ramp()] * 3, -1))
    col = load_folder(root, image_size=12)
    assert col.class_counts().tolist() == [2, 2]
    # the PNG and DICOM of the same picture give the same image
    assert torch.allclose(col.images[0], col.images[1], atol=1e-6)


def test_dicom_identity_never_reaches_the_collection(tmp_path: Path) -> None:
    root = tmp_path / "dcm"
    for i in range(2):
        _dicom(root / "cr" / f"img{i}.dcm", _ramp())
        _png(root / "other" / f"img{i}.png", _ramp(flip=True))
    col = load_folder(root, image_size=12)
    assert type(col.images) is torch.Tensor  # not a MetaTensor with a header attached
    texts = [repr(col), str(col.meta), str(col.summary()), str(vars(col))]
    texts += [repr(getattr(col.images, "meta", "")), repr(getattr(col.images, "applied_operations", ""))]
    for s in texts:
        for secret in (PATIENT_NAME, "Zyxwv", "Quentin", PATIENT_ID, "4815162342", "19700101", "St Elsewhere"):
            assert secret not in s
    csv = tmp_path / "m.csv"
    csv.write_text("path,label\ndcm/cr/img0.dcm,cr\ndcm/other/img0.png,other\n")
    col = load_csv_manifest(csv, image_size=12)
    assert PATIENT_NAME not in str(vars(col)) and PATIENT_ID not in str(vars(col))


def test_unreadable_files_listed_raise_and_skip(tmp_path: Path) -> None:
    root = tmp_path / "bad"
    _make_tree(root)
    (root / "normal" / "notes.png").write_text("this is not an image")
    good = (root / "normal" / "n0.png").read_bytes()
    (root / "pneumonia" / "trunc.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError) as ei:
        load_folder(root)
    msg = str(ei.value)
    assert "2 of 8 file(s)" in msg and "notes.png" in msg and "trunc.png" in msg and "on_error='skip'" in msg
    with pytest.warns(UserWarning, match="could not be read") as rec:
        col = load_folder(root, on_error="skip")
    text = " ".join(str(w.message) for w in rec)
    assert "notes.png" in text and "trunc.png" in text
    assert len(col) == 6


def test_non_image_files_are_reported_not_silently_dropped(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _make_tree(root)
    (root / "normal" / "README.txt").write_text("notes")
    (root / "labels.csv").write_text("x")
    (root / "normal" / ".DS_Store").write_bytes(b"\0")
    with pytest.warns(UserWarning, match="ignored 2 file") as rec:
        col = load_folder(root)
    assert "README.txt" in str(rec[0].message) or "labels.csv" in str(rec[0].message)
    assert len(col) == 6
    with pytest.warns(UserWarning, match="ignored"):  # the ignore list follows `extensions`
        only_txt = load_folder(root, extensions=["png"])
    assert len(only_txt) == 6


def test_empty_class_folder_and_no_classes(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _make_tree(root)
    (root / "effusion").mkdir()
    with pytest.raises(ValueError, match="'effusion' holds no image files"):
        load_folder(root)
    flat = tmp_path / "flat"
    _png(flat / "x.png", _ramp())
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_folder(flat)
    with pytest.raises(FileNotFoundError):
        load_folder(tmp_path / "nope")


def test_whole_class_unreadable_with_skip(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _png(root / "a" / "x.png", _ramp())
    (root / "b").mkdir()
    (root / "b" / "y.png").write_text("junk")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"no readable image left in class folder\(s\) \['b'\]"):
            load_folder(root, on_error="skip")


@pytest.mark.parametrize(
    ("kw", "field"),
    [({"image_size": 4}, "image_size"), ({"channels": 2}, "channels"), ({"on_error": "ignore"}, "on_error")],
)
def test_bad_arguments(tmp_path: Path, kw: dict, field: str) -> None:
    _make_tree(tmp_path / "ds")
    with pytest.raises(ValueError, match=field):
        load_folder(tmp_path / "ds", **kw)
    with pytest.raises(ValueError, match=field):
        load_csv_manifest(tmp_path / "none.csv", **kw)


def _rgb_png(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8), mode="RGB").save(path)
    return path


def test_channels_auto_follows_the_files_and_every_split_agrees(tmp_path: Path) -> None:
    grey = tmp_path / "grey"
    for split in ("train", "test"):
        for c in ("a", "b"):
            _png(grey / split / c / "x.png", _ramp())
    assert load_folder(grey).channels == 1 and load_folder(grey, split="test").channels == 1
    # colour only in the test split: train must come out with 3 channels as well, or models would not fit it
    mixed = tmp_path / "mixed"
    for c in ("a", "b"):
        _png(mixed / "train" / c / "x.png", _ramp())
        _rgb_png(mixed / "test" / c / "y.png", seed=ord(c))
    train, test = load_folder(mixed), load_folder(mixed, split="test")
    assert train.channels == test.channels == 3
    torch.testing.assert_close(train.images[:, 0], train.images[:, 2])  # greyscale repeated
    assert not torch.equal(test.images[:, 0], test.images[:, 2])  # real colour kept
    assert load_folder(mixed, split="test", channels=1).channels == 1  # an explicit choice still wins
    # a CSV manifest decides over all its rows, whatever the split
    csv = tmp_path / "m.csv"
    csv.write_text("path,label,split\nmixed/train/a/x.png,a,train\nmixed/test/b/y.png,b,test\n")
    assert load_csv_manifest(csv, split="train").channels == 3
    with pytest.raises(ValueError, match="'auto'"):
        load_folder(grey, channels=2)


def test_uint8_scaling_reads_8_bit_files_as_the_npz_path_does(tmp_path: Path) -> None:
    """scale="uint8" divides the stored values by 255 (no stretch); other files are refused by name."""
    arr = np.array([[40, 80], [120, 210]], dtype=np.uint8)  # a narrow range, as most PneumoniaMNIST images have
    Image.fromarray(arr).save(tmp_path / "grey.png")
    x = read_image(tmp_path / "grey.png", image_size=2, scale="uint8")
    np.testing.assert_allclose(x[0].numpy(), arr / 255.0, atol=1e-6)
    stretched = read_image(tmp_path / "grey.png", image_size=2)  # the default: min-max per image
    assert float(stretched.min()) == 0.0 and float(stretched.max()) == 1.0
    Image.fromarray(arr.astype(np.uint16) * 200).save(tmp_path / "deep.png")  # 16-bit values
    with pytest.raises(ValueError, match=r"deep\.png: not an 8-bit image"):
        read_image(tmp_path / "deep.png", image_size=2, scale="uint8")
    with pytest.raises(ValueError, match="scale='uint8' reads 8-bit PNG/JPEG/BMP/TIFF files only"):
        read_image(_dicom(tmp_path / "a.dcm", arr.astype(np.uint16)), image_size=2, scale="uint8")
    with pytest.raises(ValueError, match="scale must be 'minmax' or 'uint8'"):
        read_image(tmp_path / "grey.png", scale="none")
