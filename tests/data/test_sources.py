"""``load_collection``: one source string to a collection; a wrong source, split or option is named plainly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medmeta_lib.data import load_collection
from tests.conftest import write_medmnist_npz


def _folder(root: Path) -> Path:
    for c in "ab":
        (root / c).mkdir(parents=True)
        Image.fromarray(np.full((8, 8), 40 if c == "a" else 200, dtype=np.uint8)).save(root / c / "0.png")
    return root


def test_each_kind_of_source_takes_its_options_and_names_an_unknown_one(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "folder")
    csv = tmp_path / "m.csv"
    csv.write_text("path,label\nfolder/a/0.png,a\nfolder/b/0.png,b\n")
    npz = write_medmnist_npz(tmp_path / "d.npz", per_class=2, n_classes=2)
    accepted = {
        "synthetic": {"n_per_class_site": 1, "modalities": ["chest_xray"]},
        str(folder): {"on_error": "skip", "channels": 1},
        str(csv): {"root": tmp_path, "on_error": "skip"},
        str(npz): {"name": "mine"},
    }
    for source, options in accepted.items():  # a loader's own options still reach it
        assert len(load_collection(source, image_size=8, **options)) >= 2
    named = {"synthetic": "MedSynth", str(folder): "a folder", str(csv): "a CSV manifest", str(npz): "a .npz file"}
    for source, kind in named.items():
        with pytest.raises(ValueError, match=rf"unknown option\(s\) \['bogus'\] for {kind}; it takes \[") as e:
            load_collection(source, image_size=8, bogus=1)
        assert "load_folder" not in str(e.value) and "generate" not in str(e.value)  # not the loader's internals
    with pytest.raises(ValueError, match=r"for a MedMNIST name; it takes \['data_dir'\]"):
        load_collection("medmnist:pneumoniamnist", n_per_class_site=3)  # checked before the file is looked for


def test_a_wrong_source_or_split_says_what_a_source_can_be(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no such file or folder.*a source is one of"):
        load_collection(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"unknown source 'pneumonia'; a source is one of"):
        load_collection("pneumonia")
    with pytest.raises(ValueError, match=r"source must be a non-empty string"):
        load_collection("")
    with pytest.raises(ValueError, match=r"split must be one of \('train', 'val', 'test'\), got 'training'"):
        load_collection("synthetic", split="training")
