"""Every command the documents give to reproduce a figure or run a job still parses.

README.md, BENCHMARKS.md, RELIABILITY.md, data/README.md and docs/ give each figure the command that reproduces it
(``.venv/bin/python bench/<script>.py ...``, ``.venv/bin/medmeta ...``) in fenced blocks, and each ``bench/`` script's
docstring shows how it is run. A renamed or removed flag breaks such a
command silently: nothing runs it in the suite. Here each one, as a reader would paste it, goes through the argument
parser of the program it names, which rejects an unknown flag, a missing value or a value outside its choices. The
command does not run; only its arguments are checked.

A block's shell is read the simple way its commands are written: backslash continuations, ``NAME="a b"``
assignments and ``for s in val test; do`` loops (every value is tried), ``OMP_NUM_THREADS=1``-style prefixes and
``#`` comments. Elided arguments (``...``) and optional ones shown in brackets (``[--encoder E]``) are left out.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import itertools
import re
import runpy
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from medmeta_lib.cli.program import build_parser
from medmeta_lib.pipeline import ParameterError, parse_overrides, runner

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = (
    "README.md",
    "BENCHMARKS.md",
    "RELIABILITY.md",
    "data/README.md",
    *sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md")),
)
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
ASSIGN = re.compile(r"^\s*(\w+)=(\"[^\"]*\"|'[^']*'|\S+)\s*(?:;|$)")
LOOP = re.compile(r"^\s*for (\w+) in ([^;]+); do\b")
# a command line: environment prefixes, then medmeta, or python with a bench script
COMMAND = re.compile(r"^\s*(?:\w+=\S*\s+)*(?:\S*/)?(?:medmeta\s|python\s+bench/\w+\.py\b)")


class _Parsed(Exception):
    """Raised in place of running a script once its arguments have parsed."""


def _commands() -> Iterator[tuple[str, int, str]]:
    """Yield (document, line, command) for every documented ``bench/`` or ``medmeta`` command, variables expanded."""
    for doc in DOCUMENTS:
        text = (ROOT / doc).read_text()
        for block in FENCE.finditer(text):
            first_line = text.count("\n", 0, block.start(1)) + 1
            variables: dict[str, list[str]] = {}
            lines = block.group(1).split("\n")
            i = 0
            while i < len(lines):
                start = i
                line = lines[i]
                while line.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    line = line.rstrip()[:-1] + " " + lines[i].strip()
                i += 1
                if ASSIGN.match(line):  # one or more NAME=value; on a line
                    while m := ASSIGN.match(line):
                        variables[m.group(1)] = shlex.split(m.group(2))[:1] or [""]
                        line = line[m.end() :]
                    continue
                if m := LOOP.match(line):
                    variables[m.group(1)] = shlex.split(m.group(2))
                    continue
                if not COMMAND.match(line) or line.lstrip().startswith(
                    "medmeta run:"
                ):  # a run's message, not a command
                    continue
                names = [n for n in variables if re.search(rf"\${n}\b|\$\{{{n}\}}", line)]
                for values in itertools.product(*(variables[n] for n in names)):
                    expanded = line
                    for name, value in zip(names, values, strict=True):
                        expanded = re.sub(rf"\${name}\b|\$\{{{name}\}}", lambda _m, v=value: v, expanded)
                    yield doc, first_line + start, expanded


def _script_commands() -> Iterator[tuple[str, int, str]]:
    """Yield (script, line, command) for the usage commands in each ``bench/`` script's module docstring."""
    for path in sorted((ROOT / "bench").glob("*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        doc = tree.body[0] if tree.body and isinstance(tree.body[0], ast.Expr) else None
        if doc is None or not isinstance(doc.value, ast.Constant) or not isinstance(doc.value.value, str):
            continue
        lines = source.splitlines()[doc.lineno - 1 : doc.end_lineno]
        i = 0
        while i < len(lines):
            start, line = i, re.sub(r"^\s*(?:Run|Usage):\s*", "", lines[i])
            while line.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            i += 1
            if COMMAND.match(line):
                yield f"bench/{path.name}", doc.lineno + start, line


def _argv(command: str) -> tuple[str, list[str]]:
    """Split a command into its program (``medmeta`` or ``bench/<script>.py``) and its arguments."""
    command = re.sub(r"\[[^\]]*\]", " ", command)  # optional arguments, shown in brackets
    tokens = [t for t in shlex.split(command, comments=True) if t != "..."]
    while tokens and re.fullmatch(r"\w+=\S*", tokens[0]):  # environment prefixes
        tokens.pop(0)
    program = tokens.pop(0)
    if program.endswith("python"):
        program = tokens.pop(0)
    tokens = tokens[: tokens.index("&&")] if "&&" in tokens else tokens
    return ("medmeta" if program.endswith("medmeta") else program), tokens


def _exact(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Refuse abbreviated flags in ``parser`` and its sub-commands: a documented flag is spelt in full."""
    parser.allow_abbrev = False
    for action in parser._actions:  # argparse keeps sub-parsers only here
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _exact(sub)
    return parser


def _check_run_parameters(args: argparse.Namespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Check ``medmeta run``'s ``-p`` names and types against the selected notebooks' parameters cells."""
    monkeypatch.setattr(runner, "check_source", lambda *a, **k: None)  # documented paths are placeholders
    runner.resolve_parameters(runner._select(args.only, args.from_), parse_overrides(args.param or []))


def _check_bench(script: str, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Run ``bench/<script>``'s ``main`` up to its ``parse_args`` and stop there."""
    if "ArgumentParser(" not in (ROOT / script).read_text():  # it takes no arguments: never run it here
        assert not argv, f"{script} takes no arguments, but the command gives {argv}"
        return
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(
        self: argparse.ArgumentParser, args: list[str] | None = None, namespace: object = None
    ) -> object:
        self.allow_abbrev = False  # a documented flag is spelt in full
        original(self, args, namespace)  # type: ignore[arg-type]
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [script, *argv])
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    with pytest.raises(_Parsed):
        runpy.run_path(str(ROOT / script), run_name="__main__")


COMMANDS = [*_commands(), *_script_commands()]


def test_the_documents_give_commands() -> None:
    """The extraction finds the commands it is meant to check (an empty list would pass every check below)."""
    programs = {_argv(c)[0] for _, _, c in COMMANDS}
    assert "medmeta" in programs and "bench/fewshot_recipes.py" in programs, programs
    assert len(COMMANDS) >= 40, len(COMMANDS)
    assert any(doc.startswith("bench/") for doc, _, _ in COMMANDS), "no bench script's usage was found"


@pytest.mark.parametrize(("doc", "line", "command"), COMMANDS, ids=[f"{d}:{n}" for d, n, _ in COMMANDS])
def test_documented_command_parses(doc: str, line: int, command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's arguments are accepted by the parser of the program it names."""
    program, argv = _argv(command)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            if program == "medmeta":
                args = _exact(build_parser()).parse_args(argv)
                if args.cmd == "run":  # argparse takes any -p NAME=VALUE: the notebooks must declare it
                    _check_run_parameters(args, monkeypatch)
            else:
                assert (ROOT / program).is_file(), f"{doc}:{line}: {program} is not in the repository"
                _check_bench(program, argv, monkeypatch)
    except (SystemExit, ParameterError) as exc:
        pytest.fail(f"{doc}:{line}: `{command.strip()}` is refused by its parser:\n{stderr.getvalue()}{exc}")
