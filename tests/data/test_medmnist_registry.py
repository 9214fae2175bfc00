"""The MedMNIST registry: the 2-D datasets, their files, checksums and licences, and the official sizes."""

from __future__ import annotations

import re

import pytest

from medmeta_lib.data.medmnist import MEDMNIST_DATASETS
from medmeta_lib.data.medmnist_registry import MEDMNIST_SIZES, check_medmnist_size

TWO_D = {
    "pathmnist", "chestmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist", "breastmnist",
    "bloodmnist", "tissuemnist", "organamnist", "organcmnist", "organsmnist",
}  # fmt: skip


def test_registry_covers_the_2d_datasets() -> None:
    assert set(MEDMNIST_DATASETS) == TWO_D
    for name, info in MEDMNIST_DATASETS.items():
        assert info.name == name
        assert info.licence == ("CC BY-NC 4.0" if name == "dermamnist" else "CC BY 4.0")
        assert info.channels in (1, 3)
        assert set(info.n_samples) == {"train", "val", "test"}
        assert info.file_name(28) == f"{name}.npz"
        for size in (64, 128, 224):
            assert info.file_name(size) == f"{name}_{size}.npz"
            assert info.url(size) == f"https://zenodo.org/records/10519652/files/{name}_{size}.npz?download=1"
        for size in (28, 64, 128, 224):
            md5 = info.md5(size)
            assert md5 is not None and re.fullmatch(r"[0-9a-f]{32}", md5)
    md5s = [info.md5(s) for info in MEDMNIST_DATASETS.values() for s in (28, 64, 128, 224)]
    assert len(set(md5s)) == len(md5s)  # no copy-paste duplicates
    pn = MEDMNIST_DATASETS["pneumoniamnist"]
    assert pn.label_names == ("normal", "pneumonia")
    assert pn.md5(28) == "28209eda62fecd6e6a2d98b1501bb15f"
    assert dict(pn.n_samples) == {"train": 4708, "val": 524, "test": 624}
    assert MEDMNIST_DATASETS["chestmnist"].multi_label and not pn.multi_label
    with pytest.raises(ValueError, match="size"):
        pn.file_name(32)
    with pytest.raises(TypeError):
        MEDMNIST_DATASETS["x"] = pn  # type: ignore[index]


@pytest.mark.parametrize("size", MEDMNIST_SIZES)
def test_official_sizes_pass(size: int) -> None:
    check_medmnist_size(size)


@pytest.mark.parametrize("size", [32, 64.0, True, "64", None])
def test_other_sizes_are_refused_with_the_official_list(size: object) -> None:
    with pytest.raises(ValueError, match=r"size must be one of \(28, 64, 128, 224\)"):
        check_medmnist_size(size)  # type: ignore[arg-type]
