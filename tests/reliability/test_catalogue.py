"""The bad-input catalogue: every entry goes through a public entry point once.

Each entry (built in ``catalogue_cases.py``) asserts, through one helper (:func:`test_bad_input`):

* the exact exception type (or, for inputs that load with a caveat, a ``UserWarning``);
* that the message names the offending file or field;
* that the message says what to do (an entry-specific pattern);
* that nothing on disk changed: every file under the test's folder is byte-for-byte the same,
  nothing was added (no partial download, no stray temp file) and nothing was executed (the
  pickle entries carry a payload that would create a folder if it were ever unpickled).

``RELIABILITY.md`` holds the same catalogue as a table; ``test_reliability_md_lists_every_entry``
keeps the two in step.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from tests.reliability.catalogue_cases import CASES, Case, Ctx
from tests.reliability.support import REPO, Server, snapshot


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, http_server: Server) -> None:
    call, mentions = case.build(Ctx(tmp_path, http_server))
    before = snapshot(tmp_path)
    if issubclass(case.expect, Warning):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            call()  # loads, with a caveat
        relevant = [w for w in rec if w.category is case.expect and all(m in str(w.message) for m in mentions)]
        assert relevant, f"no {case.expect.__name__} mentioning {mentions}; got {[str(w.message) for w in rec]}"
        message = str(relevant[0].message)
    else:
        with pytest.raises(Exception) as ei:
            call()
        assert type(ei.value) is case.expect, f"{type(ei.value).__name__}: {ei.value}"
        message = str(ei.value)
        for m in mentions:
            assert m in message, f"{m!r} not in message: {message}"
    assert re.search(case.advice, message, re.IGNORECASE | re.DOTALL), f"no advice /{case.advice}/ in: {message}"
    assert snapshot(tmp_path) == before, "the failed call changed, added or removed files"


def test_catalogue_is_large_and_ids_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) >= 25 and len(set(ids)) == len(ids)


def test_reliability_md_lists_every_entry() -> None:
    text = (REPO / "RELIABILITY.md").read_text(encoding="utf-8")
    listed = re.findall(r"^\| `([a-z0-9-]+)` \|", text, flags=re.MULTILINE)
    assert sorted(listed) == sorted(c.id for c in CASES), "RELIABILITY.md's catalogue table is out of date"
