"""The command that reproduces a run: it gives every notebook the values the run's params.yaml records."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from medmeta_lib.cli.program import build_parser
from medmeta_lib.config import code_version
from medmeta_lib.pipeline import NOTEBOOKS, parse_overrides, runner
from medmeta_lib.pipeline.report import render_report
from medmeta_lib.pipeline.reproduce import reproduce_command

STEMS = [nb.stem for nb in NOTEBOOKS]


def _params_yaml(
    run_dir: Path, overrides: dict[str, Any], *, smoke: bool = False, only: list[str] | None = None
) -> dict:
    """Write params.yaml as run_pipeline does (resolved values, handed-on paths, output_dir) and return it."""
    specs = runner._select(only, None)
    resolved = runner.resolve_parameters(specs, overrides, smoke=smoke)
    params = {
        s.stem: {**(s.chain(run_dir) if s.chain else {}), **resolved[s.key], "output_dir": str(run_dir / s.stem)}
        for s in specs
    }
    (run_dir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def _replay(command: str, run_dir: Path) -> dict:
    """What the command would write to params.yaml, via medmeta's own parser and the runner's resolution."""
    argv = shlex.split(command)
    assert argv[:2] == ["medmeta", "run"], command
    args = build_parser().parse_args(argv[1:])
    return _params_yaml(run_dir, parse_overrides(args.param or []), smoke=args.smoke, only=args.only)


@pytest.fixture(autouse=True)
def _no_source_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "check_source", lambda *a, **k: None)  # the data paths here are made up


@pytest.mark.parametrize(
    ("overrides", "smoke", "only", "expected"),  # the seed differs in 03: each notebook's is said on its own
    [
        ({}, False, None, "medmeta run"),
        ({}, True, None, "medmeta run --smoke"),
        ({"seed": 3}, False, None, "medmeta run -p seed=3"),
        ({"02.epochs": 7}, False, None, "medmeta run -p epochs=7"),  # only 02 declares epochs
        ({"seed": 3, "03.seed": 4}, False, None, "medmeta run -p 01.seed=3 -p 02.seed=3 -p 03.seed=4 -p 04.seed=3"),
        (
            {"data_source": "/data/my xrays", "n_way": 2},
            True,
            None,
            "medmeta run --smoke -p 'data_source=/data/my xrays' -p n_way=2",
        ),
        ({"epochs": 4}, False, ["02"], "medmeta run --only 02 -p epochs=4"),
        (
            {"03.learners": ["protonet", "maml"], "03.transductive": True},
            False,
            ["03"],
            "medmeta run --only 03 -p 'learners=[protonet, maml]' -p transductive=true",
        ),
        (
            {"01.data_source": "medmnist:pneumoniamnist"},
            True,
            ["01"],
            "medmeta run --smoke --only 01 -p data_source=medmnist:pneumoniamnist",
        ),
    ],
)
def test_the_command_reproduces_the_recorded_values(
    tmp_path: Path, overrides: dict, smoke: bool, only: list[str] | None, expected: str
) -> None:
    run, again = tmp_path / "run", tmp_path / "again"
    run.mkdir(), again.mkdir()
    recorded = _params_yaml(run, overrides, smoke=smoke, only=only)
    command = reproduce_command(run, NOTEBOOKS)
    assert command == expected
    replayed = _replay(command, again)
    drop = {"output_dir", "encoder_checkpoint", "meta_dir"}  # set by the runner from the run folder
    assert {s: {k: v for k, v in p.items() if k not in drop} for s, p in replayed.items()} == {
        s: {k: v for k, v in p.items() if k not in drop} for s, p in recorded.items()
    }


def test_values_that_would_parse_as_another_type_are_quoted(tmp_path: Path) -> None:
    _params_yaml(tmp_path, {"02.backbone": "2024", "augment_preset": "yes"})
    command = reproduce_command(tmp_path, NOTEBOOKS)
    assert command == """medmeta run -p '02.backbone="2024"' -p 'augment_preset="yes"'"""
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert parse_overrides(args.param) == {"02.backbone": "2024", "augment_preset": "yes"}


def test_no_command_without_a_readable_params_file(tmp_path: Path) -> None:
    assert reproduce_command(tmp_path, NOTEBOOKS) is None  # none at all
    (tmp_path / "params.yaml").write_text("01_data_exploration: [unclosed")
    assert reproduce_command(tmp_path, NOTEBOOKS) is None  # not YAML
    (tmp_path / "params.yaml").write_text("something_else: {seed: 1}")
    assert reproduce_command(tmp_path, NOTEBOOKS) is None  # no registered notebook


def test_the_report_shows_the_command_and_the_code(tmp_path: Path) -> None:
    html = render_report(tmp_path, STEMS, {}, command="medmeta run -p 'data_source=/d/<x>'", code="medmeta_lib 0.1.0")
    assert "Reproduce this run: <code>medmeta run -p &#39;data_source=/d/&lt;x&gt;&#39;</code>" in html
    assert "(medmeta_lib 0.1.0; another CPU can change the third decimal)" in html
    assert 'id="reproduce"' not in render_report(tmp_path, STEMS, {})


def test_code_version_names_the_commit_in_a_git_checkout() -> None:
    version = code_version()
    assert version.startswith("medmeta_lib ")
    if (Path(__file__).resolve().parents[2] / ".git").exists():
        assert ", commit " in version, version
