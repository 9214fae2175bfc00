"""The MedMNIST registry's size check: only the official sides name a file."""

from __future__ import annotations

import pytest

from medmeta_lib.data.medmnist_registry import MEDMNIST_SIZES, check_medmnist_size


@pytest.mark.parametrize("size", MEDMNIST_SIZES)
def test_official_sizes_pass(size: int) -> None:
    check_medmnist_size(size)


@pytest.mark.parametrize("size", [32, 64.0, True, "64", None])
def test_other_sizes_are_refused_with_the_official_list(size: object) -> None:
    with pytest.raises(ValueError, match=r"size must be one of \(28, 64, 128, 224\)"):
        check_medmnist_size(size)  # type: ignore[arg-type]
