"""Project settings from the environment: thread count (``medmeta_lib.config``)."""

from __future__ import annotations

import pytest
import torch

from medmeta_lib.config import set_threads


def test_threads_come_from_the_environment_and_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("MEDMETA_THREADS", "1")
        assert set_threads() == 1 and torch.get_num_threads() == 1
        for bad in ("two", "1.5", ""):
            monkeypatch.setenv("MEDMETA_THREADS", bad)
            with pytest.raises(ValueError, match=rf"\$MEDMETA_THREADS must be a whole number of threads, got {bad!r}"):
                set_threads()
        monkeypatch.setenv("MEDMETA_THREADS", "0")
        with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
            set_threads()
    finally:
        torch.set_num_threads(before)


def test_the_version_is_the_packages() -> None:
    """medmeta_lib.__version__, the version code_version names and pyproject.toml's agree."""
    import tomllib

    import medmeta_lib
    from medmeta_lib.config import PROJECT_ROOT, VERSION, code_version

    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert medmeta_lib.__version__ == VERSION == project["version"]
    assert code_version().startswith(f"medmeta_lib {VERSION}")
