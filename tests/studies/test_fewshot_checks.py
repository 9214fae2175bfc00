"""``check_fewshot_settings``: every setting of ``fewshot_study`` refused with its name, nothing trained first."""

from __future__ import annotations

import inspect

import pytest
import torch

from medmeta_lib.studies.fewshot import fewshot_study
from medmeta_lib.studies.fewshot_checks import HEADS, SELF_TRAIN, SELF_TRAIN_MAX_K, check_fewshot_settings

#: fewshot_study's defaults for every setting the check takes
DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(fewshot_study).parameters.items()
    if name in inspect.signature(check_fewshot_settings).parameters and name != "k_shot"
}

BAD = [
    ("k_shot", 0, "k_shot must be an int >= 1"),
    ("draws", 0, "draws must be an int >= 1"),
    ("draws", 2.0, "draws must be an int >= 1"),
    ("epochs", True, "epochs must be an int >= 1"),
    ("temperature", 0, "temperature must be a finite number > 0"),
    ("temperature", float("inf"), "temperature must be a finite number > 0"),
    ("temperature", "0.2", "temperature must be a finite number > 0"),
    ("augment", "xray", r"augment \(the SimCLR view preset\) must be one of \[.*'chest_xray'.*\], got 'xray'"),
    ("scanner_shift", 1, "scanner_shift must be True or False"),
    ("head", "ncm", "head must be one of"),
    ("C", 0, "C must be a number > 0"),
    ("meta_steps", -1, "meta_steps must be an int >= 0"),
    ("meta_members", 0, "meta_members must be an int >= 1"),
    ("mix_probe", "yes", "mix_probe must be True or False"),
    ("tta_views", -1, "tta_views must be an int >= 0"),
    ("self_train", -5, "self_train must be an int >= 0"),
    ("device", "tpu", "device must be 'auto', 'cpu' or 'cuda"),
    ("device", None, "device must be 'cpu', 'cuda"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD)
def test_each_bad_setting_is_refused_by_name(name: str, value: object, message: str) -> None:
    settings = {**DEFAULTS, "k_shot": 5, name: value}
    with pytest.raises(ValueError, match=message):
        check_fewshot_settings(**settings)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_cuda_without_cuda_is_refused() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        check_fewshot_settings(**DEFAULTS | {"k_shot": 5, "device": "cuda"})


def test_defaults_resolve_as_the_study_documents() -> None:
    assert len(DEFAULTS) == 13  # every setting but k_shot has a default in the study's signature
    assert check_fewshot_settings(k_shot=SELF_TRAIN_MAX_K, **DEFAULTS) == (SELF_TRAIN, HEADS["cl2_probe"])
    assert check_fewshot_settings(k_shot=SELF_TRAIN_MAX_K + 1, **DEFAULTS) == (0, HEADS["cl2_probe"])
    assert check_fewshot_settings(**DEFAULTS | {"k_shot": 1, "self_train": 0, "head": "probe"}) == (0, HEADS["probe"])
    assert check_fewshot_settings(**DEFAULTS | {"k_shot": 1, "self_train": 7, "C": 3}) == (7, 3.0)
