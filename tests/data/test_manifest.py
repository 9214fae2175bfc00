"""CSV manifests: names, ids, sites and splits from every row; each bad row or column named."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from medmeta_lib.data.manifest import load_csv_manifest
from medmeta_lib.data.sources import load_collection
from tests.data.image_helpers import expected_pixels, png, ramp


def _csv_tree(tmp_path: Path) -> Path:
    for i in range(2):
        png(tmp_path / "img" / f"a{i}.png", ramp())
        png(tmp_path / "img" / f"b{i}.png", ramp(flip=True))
    return tmp_path / "img"


def test_csv_without_split_column_warns_unless_train(tmp_path: Path) -> None:
    _csv_tree(tmp_path)
    m = tmp_path / "m.csv"
    m.write_text("path,label\nimg/a0.png,a\nimg/b0.png,b\n")
    with pytest.warns(UserWarning, match="no 'split' column"):
        load_csv_manifest(m, split="val")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_csv_manifest(m, split="train")


def test_csv_names_sites_and_splits(tmp_path: Path) -> None:
    _csv_tree(tmp_path)
    m = tmp_path / "manifest.csv"
    m.write_text(
        "path,label,site,split\n"
        "img/a0.png,normal,hospital_b,train\n"
        "img/b0.png,pneumonia,hospital_a,train\n"
        "img/a1.png,normal,hospital_a,test\n"
        f"{tmp_path / 'img' / 'b1.png'},pneumonia,hospital_c,test\n"
    )
    train = load_csv_manifest(m, image_size=12)
    assert train.class_names == ("normal", "pneumonia") and train.labels.tolist() == [0, 1]
    assert train.site_names == ("hospital_a", "hospital_b", "hospital_c")  # from all rows: ids agree
    assert train.sites.tolist() == [1, 0]
    test = load_csv_manifest(m, image_size=12, split="test")
    assert test.labels.tolist() == [0, 1] and test.sites.tolist() == [0, 2]
    assert torch.allclose(test.images[0, 0], expected_pixels(ramp()), atol=1e-6)
    with pytest.raises(ValueError, match="no rows with split 'val'"):
        load_csv_manifest(m, split="val")
    via = load_collection(str(m), split="test", image_size=12)
    assert torch.equal(via.images, test.images)


def test_csv_integer_labels_and_root(tmp_path: Path) -> None:
    img = _csv_tree(tmp_path)
    m = tmp_path / "elsewhere" / "m.csv"
    m.parent.mkdir()
    m.write_text("label,path\n2,a0.png\n0,b0.png\n2,a1.png\n")
    with pytest.warns(
        UserWarning, match=r"m\.csv: integer labels skip class id\(s\) \[1\]; those classes have no images"
    ):
        col = load_csv_manifest(m, root=img, image_size=12)
    assert col.class_names == ("class0", "class1", "class2") and col.labels.tolist() == [2, 0, 2]
    assert col.class_counts().tolist() == [1, 0, 2] and col.site_names == ("m",)
    m.write_text("label,path\n0,a0.png\n99999999,b0.png\n")  # e.g. a patient id in the label column
    with pytest.raises(ValueError, match=r"row 3 has label 99999999; .* makes 100000000 classes for 2 rows"):
        load_csv_manifest(m, root=img, image_size=12)


def test_csv_missing_path_names_row_and_column(tmp_path: Path) -> None:
    _csv_tree(tmp_path)
    m = tmp_path / "m.csv"
    m.write_text("path,label\nimg/a0.png,a\nimg/ghost.png,b\nimg/b0.png,b\n")
    with pytest.raises(ValueError) as ei:
        load_csv_manifest(m)
    msg = str(ei.value)
    assert str(m) in msg and "row 3, column 'path'" in msg and "ghost.png" in msg


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("path,label,patient\nimg/a0.png,a,p1\n", r"row 1 \(header\), column 3 'patient' is not a known column"),
        ("path,site\nimg/a0.png,x\n", "no 'label' column"),
        ("path,label\nimg/a0.png,\n", "row 2, column 'label' is empty"),
        ("path,label\nimg/a0.png,a,extra\n", "row 2 has 3 values"),
        ("path,label\n", "no rows"),
        ("", "empty"),
        (
            "path,label,split\nimg/a0.png,a,train\nimg/b0.png,b,tran\n",
            r"row 3, column 'split' is 'tran'; it must be one of \['train', 'val', 'test'\]",
        ),
        (
            "path,label\nimg/a0.png,a\nimg/b0.png,b\n./img/a0.png,b\n",
            r"rows 2 and 4 name the same image .*a0\.png; keep one",
        ),
    ],
)
def test_csv_structure_errors(tmp_path: Path, text: str, pattern: str) -> None:
    _csv_tree(tmp_path)
    m = tmp_path / "m.csv"
    m.write_text(text)
    with pytest.raises(ValueError, match=pattern) as ei:
        load_csv_manifest(m)
    assert str(m) in str(ei.value)


def test_csv_unreadable_image_raise_and_skip(tmp_path: Path) -> None:
    _csv_tree(tmp_path)
    (tmp_path / "img" / "junk.png").write_text("junk")
    m = tmp_path / "m.csv"
    m.write_text("path,label\nimg/a0.png,a\nimg/junk.png,a\nimg/b0.png,b\n")
    with pytest.raises(ValueError, match=r"row 3 \(.*junk.png\)"):
        load_csv_manifest(m)
    with pytest.warns(UserWarning, match="junk.png"):
        col = load_csv_manifest(m, on_error="skip")
    assert len(col) == 2 and col.meta["files"] == (str(Path("img/a0.png")), str(Path("img/b0.png")))


def test_csv_labels_mixing_numbers_and_names_warn(tmp_path: Path) -> None:
    _csv_tree(tmp_path)
    m = tmp_path / "m.csv"
    m.write_text("path,label\nimg/a0.png,1\nimg/a1.png,01\nimg/b0.png,2.0\nimg/b1.png,b\n")
    with pytest.warns(UserWarning) as rec:
        col = load_csv_manifest(m, image_size=12)
    messages = [str(w.message) for w in rec]
    assert col.class_names == ("01", "1", "2.0", "b")  # read as names, as before, but no longer silently
    assert any(
        "column 'label' mixes numbers (3) and names (1), e.g. '1' (row 2)" in t and "giving 4 classes" in t
        for t in messages
    )
    assert any("spells one number in several ways, [['01', '1']]" in t for t in messages)
    m.write_text("path,label\nimg/a0.png,1.5\nimg/b0.png,2.5\n")  # numbers only, no two alike: names, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_csv_manifest(m, image_size=12).class_names == ("1.5", "2.5")
    m.write_text("path,label\nimg/a0.png,0\nimg/b0.png,01\n")  # whole numbers only: class ids, as documented
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_csv_manifest(m, image_size=12).class_names == ("class0", "class1")
