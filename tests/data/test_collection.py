from __future__ import annotations

import numpy as np
import pytest
import torch

from medmeta_lib.data.collection import ImageCollection
from tests.conftest import make_collection


def _kw(**over):
    kw = dict(
        images=torch.rand(6, 1, 8, 8),
        labels=torch.tensor([0, 0, 1, 1, 2, 2]),
        class_names=("a", "b", "c"),
        source="unit.npz",
    )
    kw.update(over)
    return kw


def test_valid_collection_fields():
    c = ImageCollection(**_kw(sites=torch.tensor([0, 1, 0, 1, 0, 1]), site_names=("A", "B")))
    assert len(c) == 6 and c.num_classes == 3 and c.num_sites == 2 and c.channels == 1 and c.image_size == 8
    assert c.class_counts().tolist() == [2, 2, 2]
    assert c.site_class_counts().tolist() == [[1, 1, 1], [1, 1, 1]]
    assert c.summary()["site_counts"] == {"A": 3, "B": 3}


def test_numpy_inputs_and_label_column_vector():
    c = ImageCollection(
        **_kw(
            images=np.random.default_rng(0).random((6, 1, 8, 8), dtype=np.float32),
            labels=np.array([[0], [0], [1], [1], [2], [2]]),
        )
    )
    assert c.labels.shape == (6,) and c.labels.dtype == torch.long
    assert c.sites is not None and c.sites.tolist() == [0] * 6 and c.site_names == ("site0",)


def _poisoned(value: float, *images: int) -> torch.Tensor:
    x = torch.rand(6, 1, 8, 8)
    x[list(images), 0, 3, 5] = value
    return x


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"images": torch.rand(6, 8, 8)}, r"unit.npz: field 'images' must have shape \(N, C, H, W\)"),
        ({"images": torch.rand(6, 1, 8, 8).double()}, r"'images' must be float32.*convert"),
        ({"images": torch.rand(6, 2, 8, 8)}, r"1 or 3 channels"),
        ({"images": torch.rand(6, 1, 8, 8) * 255}, r"must lie in \[0, 1\].*rescale"),
        ({"images": torch.full((6, 1, 8, 8), float("nan"))}, r"NaN/Inf pixels in 6 image"),
        ({"images": _poisoned(float("nan"), 3)}, r"NaN/Inf pixels in 1 image"),  # one pixel is enough
        ({"images": _poisoned(float("inf"), 4)}, r"NaN/Inf pixels in 1 image"),
        ({"images": _poisoned(-float("inf"), 1, 2)}, r"NaN/Inf pixels in 2 image"),
        ({"labels": torch.tensor([0, 0, 1, 1, 2])}, r"'labels' must have shape \(6,\)"),
        ({"labels": torch.tensor([0, 0, 1, 1, 2, 3])}, r"'labels' must lie in 0..2"),
        ({"labels": torch.tensor([0.0, 0, 1, 1, 2, 2])}, r"'labels' must hold integers"),
        ({"labels": torch.tensor([0, 0, 1, 1, 1, 1])}, r"class\(es\) \['c'\] have no images"),
        ({"sites": torch.tensor([0, 0, 0, 0, 0, 5]), "site_names": ("A", "B")}, r"'sites' must lie in 0..1"),
        ({"class_modalities": ("x",)}, r"'class_modalities' needs one entry per class"),
        ({"class_names": ()}, r"'class_names' is empty"),
    ],
)
def test_validation_errors_name_field_and_fix(over, match):
    with pytest.raises(ValueError, match=match):
        ImageCollection(**_kw(**over))


def test_subset_keeps_names_and_indexes_per_image_meta():
    c = make_collection()
    c.meta["latent"] = torch.arange(len(c))
    c.meta["note"] = "kept"
    s = c.subset([3, 5, 7])
    assert len(s) == 3 and s.class_names == c.class_names and s.meta["latent"].tolist() == [3, 5, 7]
    assert s.meta["note"] == "kept"
    assert torch.equal(s.images, c.images[[3, 5, 7]])
    with pytest.raises(ValueError, match="no indices"):
        c.subset([])


def test_fingerprint_identifies_content():
    a, b = make_collection(seed=0), make_collection(seed=0)
    assert a.fingerprint() == b.fingerprint()
    assert make_collection(seed=1).fingerprint() != a.fingerprint()


def test_classes_of_modality():
    c = ImageCollection(**_kw(class_modalities=("x", "x", "y")))
    assert c.modalities == ("x", "y") and c.classes_of_modality("x") == [0, 1]
    with pytest.raises(ValueError, match="unknown modality"):
        c.classes_of_modality("z")
