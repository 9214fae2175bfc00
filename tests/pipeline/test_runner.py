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


def test_relative_paths_are_anchored_where_the_run_is_started(tmp_path, monkeypatch):
    """Each notebook runs in its own output folder, so a relative path must be made absolute up front."""
    from tests.conftest import write_medmnist_npz

    monkeypatch.chdir(tmp_path)
    write_medmnist_npz(tmp_path / "d.npz", per_class=2, n_classes=2)
    (tmp_path / "enc.safetensors").write_bytes(b"")  # only its path matters here
    r = resolve_parameters(NOTEBOOKS, {"data_source": "d.npz", "03.encoder_checkpoint": "enc.safetensors"})
    assert {r[k]["data_source"] for k in ("01", "02", "03", "04")} == {str(tmp_path / "d.npz")}
    assert r["03"]["encoder_checkpoint"] == str(tmp_path / "enc.safetensors")
    keep = {"01.pneumonia_npz": "auto", "04.meta_dir": "", "02.data_source": "synthetic"}
    r = resolve_parameters(NOTEBOOKS, keep)
    assert (r["01"]["pneumonia_npz"], r["04"]["meta_dir"], r["02"]["data_source"]) == ("auto", "", "synthetic")
    absolute = str(tmp_path / "d.npz")
    assert resolve_parameters(NOTEBOOKS, {"data_source": absolute})["02"]["data_source"] == absolute


def test_a_data_source_is_checked_without_reading_it(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMETA_DATA_DIR", str(tmp_path))  # an empty data dir
    with pytest.raises(ParameterError, match=r"01_data_exploration: parameter 'data_source': medmnist:pneumoniamnist: "
                       r"pneumoniamnist\.npz not found in .*medmeta data download pneumoniamnist"):  # fmt: skip
        resolve_parameters(NOTEBOOKS, {"data_source": "medmnist:pneumoniamnist"})
    with pytest.raises(ParameterError, match=r"02_contrastive_pretraining: parameter 'data_source': .*no such file"):
        resolve_parameters(NOTEBOOKS, {"02.data_source": str(tmp_path / "missing.csv")})
    (tmp_path / "folder").mkdir()
    folder = str(tmp_path / "folder")  # a class folder is accepted as it is (its images are read by the notebook)
    assert resolve_parameters(NOTEBOOKS, {"data_source": folder})["01"]["data_source"] == folder
