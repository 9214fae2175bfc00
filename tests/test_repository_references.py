"""Nothing in the repository points to a file it does not contain: a user's clone has only these files."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# repository paths as the docs and docstrings write them (a package, bench, docs, tests, notebooks or data path)
PATH = re.compile(
    r"(?<![\w/.-])((?:medmeta_lib|bench|docs|tests|notebooks|data)/[\w./-]*\w\.(?:py|md|ipynb|j2|csv|json))"
)
LINK = re.compile(r"\]\(((?!https?://|#|mailto:)[^)\s#]+)")
# a project document named on its own, the way READMEs name each other (README.md, BENCHMARKS.md, ...)
DOC = re.compile(r"(?<![\w/.-])([A-Z][A-Z_]+\.md)\b")
GENERATED = ("bench/out/", "data/cache/")  # written by runs, not committed


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files are unknown")
    return [ROOT / f for f in out.split()]


def test_every_referenced_repository_file_exists() -> None:
    missing = []
    for f in _tracked():
        if f.suffix not in (".md", ".py", ".ipynb", ".toml", ".j2") or not f.is_file():
            continue
        text = f.read_text(errors="ignore")
        refs = set(PATH.findall(text))
        if f.suffix == ".md":
            refs |= {m for m in LINK.findall(text) if not m.startswith(("/", "<"))}
        for ref in refs:
            if ref.startswith(GENERATED) or "<" in ref or "*" in ref:
                continue
            if not ((ROOT / ref).exists() or (f.parent / ref).exists()):
                missing.append(f"{f.relative_to(ROOT)} -> {ref}")
        for doc in set(DOC.findall(text)):  # e.g. a design document kept outside the repository
            if not any((d / doc).exists() for d in (ROOT, ROOT / "docs", f.parent)):
                missing.append(f"{f.relative_to(ROOT)} -> {doc}")
    assert not missing, "references to files the repository does not contain:\n" + "\n".join(sorted(missing))
