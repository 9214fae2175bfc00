"""Fixtures of the browser tests: a running JupyterLab and a Chromium page (``lab_driver``), each always closed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.lab_driver import Lab, chromium_page, running_lab


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab serving ``tmp_path/work`` (``lab_driver.running_lab``)."""
    with running_lab(tmp_path) as server:
        yield server


@pytest.fixture
def page() -> Iterator[Any]:
    """A Playwright page in headless Chromium; skips when chromium is not installed (``lab_driver.chromium_page``)."""
    with chromium_page() as pg:
        yield pg
