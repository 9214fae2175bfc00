from __future__ import annotations

import pytest

from medmeta_lib.pipeline import (
    NOTEBOOKS,
    ParameterError,
    check_value,
    notebook_parameters,
    parse_overrides,
    resolve_parameters,
)


def test_check_value_types():
    assert check_value("int", 3) and not check_value("int", 3.5) and not check_value("int", True)
    assert check_value("float", 3) and check_value("float", 0.5) and not check_value("float", "x")
    assert (
        check_value("Optional[str]", None) and check_value("Optional[str]", "a") and not check_value("Optional[str]", 1)
    )
    assert check_value("list[int]", [1, 5]) and not check_value("list[int]", [1, "a"])
    assert check_value("bool", False) and not check_value("bool", 0)


def test_parse_overrides_yaml_values():
    got = parse_overrides(
        ["a=3", "b=0.5", "c=true", "d=[1, 5]", "e=hello", "02.f=2", "data_source=medmnist:pneumoniamnist"]
    )
    assert got == {
        "a": 3,
        "b": 0.5,
        "c": True,
        "d": [1, 5],
        "e": "hello",
        "02.f": 2,
        "data_source": "medmnist:pneumoniamnist",
    }
    with pytest.raises(ParameterError, match="expected name=value"):
        parse_overrides(["novalue"])


def test_every_registered_notebook_declares_typed_documented_parameters():
    for spec in NOTEBOOKS:
        params = notebook_parameters(spec.path)  # raises if papermill misses an assignment
        assert "output_dir" in params, spec.stem
        for name, p in params.items():
            assert p["inferred_type_name"] not in ("None", ""), f"{spec.stem}: {name} has no type annotation"
            assert p["help"].strip(), f"{spec.stem}: {name} has no comment"


def test_unknown_and_wrongly_typed_parameters_are_errors():
    with pytest.raises(ParameterError, match=r"unknown parameter 'imag_size'"):
        resolve_parameters(NOTEBOOKS, {"imag_size": 28})
    with pytest.raises(ParameterError, match=r"01_data_exploration: parameter 'image_size' must be int, got 'big'"):
        resolve_parameters(NOTEBOOKS, {"image_size": "big"})
    with pytest.raises(ParameterError, match=r"01_data_exploration: unknown parameter 'nope'"):
        resolve_parameters(NOTEBOOKS, {"01.nope": 1})


def test_resolve_targets_and_smoke():
    r = resolve_parameters(NOTEBOOKS, {"seed": 3, "01.image_size": 32}, smoke=True)
    assert r["01"]["seed"] == 3 and r["01"]["image_size"] == 32
    for k, v in NOTEBOOKS[0].smoke.items():
        assert r["01"][k] == v


def test_smoke_parameters_exist_in_notebooks():
    for spec in NOTEBOOKS:
        declared = notebook_parameters(spec.path)
        for name in spec.smoke:
            assert name in declared, f"{spec.stem}: smoke parameter {name!r} is not declared"


def test_readme_parameter_table_is_current():
    from pathlib import Path

    from medmeta_lib.pipeline.runner import parameters_markdown

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    begin, end = "<!-- params:begin -->", "<!-- params:end -->"
    table = readme.split(begin, 1)[1].split(end, 1)[0].strip()
    assert table == parameters_markdown(), "README parameter table is stale: run `medmeta docs-params --write`"
