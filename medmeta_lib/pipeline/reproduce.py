"""The command that reproduces a run, and the code it ran: what the report shows beside every figure.

A run folder's ``params.yaml`` records every value a notebook was given that was not its default (plus the paths the
pipeline passes between notebooks). :func:`reproduce_command` turns it back into the ``medmeta run`` command that
gives the same notebooks the same values, in a new run folder: ``--smoke`` when every notebook ran with its smoke
parameters, ``--only`` when only some notebooks are in the folder, and one ``-p`` per changed value (``name=value``
when every notebook that declares the name got that value, ``02.name=value`` otherwise). The report names the
code beside it (:func:`medmeta_lib.config.code_version`): the same command on other code can give other numbers.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from medmeta_lib.pipeline.parameters import notebook_parameters, parse_overrides
from medmeta_lib.pipeline.report_summary import changed_parameters

__all__ = ["reproduce_command"]


class _Notebook(Protocol):  # what reproduce_command reads of a registered notebook (runner.NotebookSpec)
    @property
    def key(self) -> str: ...
    @property
    def stem(self) -> str: ...
    @property
    def path(self) -> Path: ...
    @property
    def smoke(self) -> Mapping[str, Any]: ...


def _argument(name: str, value: Any) -> str | None:
    """``name=value`` as ``-p`` takes it (shell-quoted), or None when no spelling parses back to ``value``."""
    spellings = [value, json.dumps(value)] if isinstance(value, str) else []  # "yes" stays a string
    spellings.append(yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n..."))
    for text in spellings:
        if "\n" not in text and parse_overrides([f"{name}={text}"]).get(name) == value:
            return shlex.quote(f"{name}={text}")
    return None


def reproduce_command(run_dir: Path | str, notebooks: Sequence[_Notebook]) -> str | None:
    """The ``medmeta run`` command that gives ``notebooks`` the values ``run_dir/params.yaml`` records.

    Args:
        run_dir: a run folder written by ``medmeta run``.
        notebooks: the registered notebooks, in order (``medmeta_lib.pipeline.NOTEBOOKS``).

    Returns:
        The command (it writes a new run folder; add ``--out DIR`` to choose it), or None when the folder has no
        readable ``params.yaml``, names no registered notebook, or holds a value ``-p`` cannot spell.

    Example:
        >>> from medmeta_lib.pipeline import NOTEBOOKS
        >>> import tempfile; run = Path(tempfile.mkdtemp())
        >>> _ = (run / "params.yaml").write_text("02_contrastive_pretraining: {epochs: 3, output_dir: x}")
        >>> reproduce_command(run, NOTEBOOKS)
        'medmeta run --only 02 -p epochs=3'
    """
    run_dir = Path(run_dir)
    try:
        params = yaml.safe_load((run_dir / "params.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    ran = [nb for nb in notebooks if isinstance(params, Mapping) and isinstance(params.get(nb.stem), Mapping)]
    if not ran:
        return None
    declared = {nb.key: set(notebook_parameters(nb.path)) for nb in ran}
    given: dict[str, dict[str, Any]] = {nb.key: {} for nb in ran}
    for row in changed_parameters(run_dir, [nb.stem for nb in ran]) or []:  # not defaults, not handed-on paths
        given[row["notebook"]][row["name"]] = params[row["stem"]][row["name"]]
    smoke = any(nb.smoke for nb in ran) and all(params[nb.stem].get(n) == v for nb in ran for n, v in nb.smoke.items())
    if smoke:  # --smoke gives these; list only what differs from them
        given = {
            nb.key: {n: v for n, v in given[nb.key].items() if n not in nb.smoke or nb.smoke[n] != v} for nb in ran
        }
    words = ["medmeta", "run"] + (["--smoke"] if smoke else [])
    if len(ran) < len(notebooks):
        words += [w for nb in ran for w in ("--only", nb.key)]
    for key, values in given.items():
        for name, value in values.items():
            everywhere = all(given[k].get(name, object()) == value for k in declared if name in declared[k])
            if everywhere and key != min(k for k in declared if name in declared[k]):
                continue  # said once, for the first notebook that declares it
            argument = _argument(name if everywhere else f"{key}.{name}", value)
            if argument is None:
                return None
            words += ["-p", argument]
    return " ".join(words)
