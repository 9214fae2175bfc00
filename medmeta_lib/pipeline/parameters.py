"""A notebook's ``parameters`` cell as papermill sees it, and typed checks of values for it.

papermill only *warns* about a parameter the notebook does not declare and injects any value
whatever its type, so a misspelt ``-p imag_size=64`` would run the notebook on its defaults. The
pipeline (:mod:`medmeta_lib.pipeline.runner`) refuses such runs up front with these helpers.
"""

from __future__ import annotations

import ast
import difflib
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ParameterError", "check_value", "did_you_mean", "notebook_parameters", "parse_overrides"]


class ParameterError(ValueError):
    """An unknown parameter name or a value of the wrong type (names notebook and parameter)."""


def notebook_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """The parameters cell of a notebook as papermill sees it: name -> {type, default, help}.

    Raises:
        ParameterError: when the notebook has no cell tagged ``parameters`` or papermill does not
            recognise an assignment in it (e.g. an annotation papermill cannot parse).

    Example:
        >>> params = notebook_parameters(Path("notebooks/01_data_exploration.ipynb"))  # doctest: +SKIP
        >>> params["seed"]["inferred_type_name"], params["seed"]["default"]  # doctest: +SKIP
        ('int', '0')
    """
    import nbformat
    import papermill as pm

    params = pm.inspect_notebook(str(path))
    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if not cells:
        raise ParameterError(f"{path.name}: no cell tagged 'parameters'; papermill cannot inject parameters")
    assigned = []
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            assigned.append(node.target.id)
        elif isinstance(node, ast.Assign):
            assigned += [t.id for t in node.targets if isinstance(t, ast.Name)]
    missing = [a for a in assigned if a not in params]
    if missing:
        raise ParameterError(
            f"{path.name}: papermill does not see parameter(s) {missing}; use annotations such as "
            "int, float, str, bool, list, list[int], dict or Optional[str] (not 'X | None'), and keep '=' out of "
            "the trailing comment"
        )
    return {k: dict(v) for k, v in params.items()}


_SIMPLE: dict[str, tuple[type, ...]] = {
    "int": (int,),
    "float": (float, int),
    "str": (str,),
    "bool": (bool,),
    "list": (list, tuple),
    "dict": (dict,),
}


def check_value(type_name: str, value: Any) -> bool:
    """True when ``value`` fits papermill's ``inferred_type_name`` (``int``, ``Optional[str]``, ``list[int]`` ...).

    Example:
        >>> check_value("Optional[int]", None), check_value("int", 2.5), check_value("list[int]", [1, 2])
        (True, False, True)
    """
    t = type_name.replace(" ", "")
    m = re.fullmatch(r"Optional\[(.+)\]", t)
    if m:
        return value is None or check_value(m.group(1), value)
    m = re.fullmatch(r"(list|List|tuple|Tuple)\[(.+)\]", t)
    if m:
        return isinstance(value, (list, tuple)) and all(check_value(m.group(2), v) for v in value)
    if t in ("None", "Any", ""):
        return True
    if t in _SIMPLE:
        if isinstance(value, bool) and t in ("int", "float"):
            return False
        return isinstance(value, _SIMPLE[t])
    return True  # a type we do not know: papermill will inject it as given


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``name=value`` strings (values as YAML: ``3``, ``0.1``, ``true``, ``[1, 5]``, ``text``).

    ``02.epochs=3`` targets one notebook; ``epochs=3`` every notebook that has ``epochs``.

    Example:
        >>> parse_overrides(["seed=3", "02.epochs=2", "data_source=medmnist:pneumoniamnist"])
        {'seed': 3, '02.epochs': 2, 'data_source': 'medmnist:pneumoniamnist'}
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ParameterError(f"-p {item!r}: expected name=value")
        name, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if raw.startswith(("medmnist:", "synthetic")) or (isinstance(value, dict) and ":" in raw and "{" not in raw):
            value = raw
        out[name.strip()] = value
    return out


def did_you_mean(name: str, known: Sequence[str] | Mapping[str, Any]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or ``""``.

    Example:
        >>> did_you_mean("imag_size", ["image_size", "seed"])
        " (did you mean 'image_size'?)"
    """
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
