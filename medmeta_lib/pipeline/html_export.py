"""HTML exports of executed notebooks whose formulas render offline.

nbconvert's HTML exporter loads MathJax from a CDN, so an export opened without a network (or from a
zipped run folder on a train) shows raw ``$...$``. Here MathJax 2.7 comes from the PyPI package
``jupyter-server-mathjax`` (the copy Jupyter itself serves; a declared dependency), is copied once into
the run directory (``<run_dir>/mathjax/``) and referenced with a *relative* URL, so the exports render
wherever the run folder is moved, zipped or opened from.

That copy ships the STIX web fonts only (not MathJax's default TeX fonts), so a small local configuration
file, ``mathjax/config/local/medmeta.js``, selects them, as Jupyter's own front ends do.

Example:
    >>> from pathlib import Path  # doctest: +SKIP
    >>> export_html(Path("runs/x/01_data_exploration.ipynb"), mathjax_dir=install_mathjax("runs/x"))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import urllib.parse
from pathlib import Path

from medmeta_lib.runio import atomic_write_text

__all__ = ["MATHJAX_CONFIG", "MATHJAX_DIRNAME", "export_html", "install_mathjax", "mathjax_source"]

MATHJAX_DIRNAME = "mathjax"
# MathJax 2 combined configuration (TeX input, HTML-CSS or MathML output), its "Safe" extension (what
# nbconvert asks of the CDN: no javascript: links or styles from the notebook's TeX), then ours
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe,local/medmeta"
_LOCAL_CONFIG = """\
/* medmeta html_export: the bundled MathJax has the STIX web fonts only (as Jupyter's own front ends use) */
MathJax.Hub.Config({"HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null}});
MathJax.Ajax.loadComplete("[MathJax]/config/local/medmeta.js");
"""
_STAMP = ".medmeta_mathjax.json"


def mathjax_source() -> Path:
    """The installed ``jupyter-server-mathjax`` files (the folder holding ``MathJax.js``).

    Found without importing the package (its ``__init__`` starts a Jupyter server extension import).

    Raises:
        ModuleNotFoundError: the package is not installed (``pip install -e .`` installs it).

    Example:
        >>> (mathjax_source() / "MathJax.js").is_file()
        True
    """
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        static = Path(loc) / "static"
        if (static / "MathJax.js").is_file():
            return static
    raise ModuleNotFoundError(
        "jupyter-server-mathjax (MathJax for offline HTML exports) is not installed or has no static/MathJax.js; "
        "install the project's dependencies: .venv/bin/pip install -e ."
    )


def install_mathjax(run_dir: str | Path) -> Path:
    """Copy MathJax into ``run_dir/mathjax`` unless that copy is already there; return the folder.

    The copy is made in a temporary folder and renamed into place, so an interrupted run never leaves
    a half-copied MathJax that later runs would trust. A copy from another package version is replaced.

    Args:
        run_dir: the run directory (created if missing).

    Example:
        >>> import tempfile
        >>> d = install_mathjax(tempfile.mkdtemp())
        >>> (d / "MathJax.js").is_file() and (d / "config" / "local" / "medmeta.js").is_file()
        True
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    dst = run / MATHJAX_DIRNAME
    want = {"package": "jupyter-server-mathjax", "version": importlib.metadata.version("jupyter-server-mathjax")}
    try:
        if json.loads((dst / _STAMP).read_text(encoding="utf-8")) == want and (dst / "MathJax.js").is_file():
            return dst
    except (OSError, ValueError):
        pass
    tmp = run / f".{MATHJAX_DIRNAME}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(mathjax_source(), tmp, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp / "config" / "local").mkdir(parents=True, exist_ok=True)
    (tmp / "config" / "local" / "medmeta.js").write_text(_LOCAL_CONFIG, encoding="utf-8")
    (tmp / _STAMP).write_text(json.dumps(want), encoding="utf-8")
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
    return dst


def export_html(ipynb: str | Path, *, mathjax_dir: str | Path | None = None) -> Path:
    """Export a notebook to HTML next to it (``x.ipynb`` → ``x.html``, written atomically).

    Args:
        ipynb: the (executed) notebook.
        mathjax_dir: a folder from :func:`install_mathjax`; the page loads MathJax from it through a
            URL relative to the page. ``None``: nbconvert's default (a CDN; needs a network).

    Raises:
        FileNotFoundError: ``mathjax_dir`` has no ``MathJax.js``.

    Example:
        >>> export_html("runs/x/01_data_exploration.ipynb", mathjax_dir="runs/x/mathjax")  # doctest: +SKIP
        PosixPath('runs/x/01_data_exploration.html')
    """
    import nbconvert
    import nbformat

    src = Path(ipynb)
    exporter = nbconvert.HTMLExporter()
    if mathjax_dir is not None:
        script = Path(mathjax_dir) / "MathJax.js"
        if not script.is_file():
            raise FileNotFoundError(f"{script}: no MathJax here; pass the folder install_mathjax() returned")
        rel = Path(os.path.relpath(script.resolve(), src.resolve().parent)).as_posix()
        exporter.mathjax_url = f"{urllib.parse.quote(rel)}?config={MATHJAX_CONFIG}"
    body, _ = exporter.from_notebook_node(nbformat.read(str(src), as_version=4))
    return atomic_write_text(src.with_suffix(".html"), body)
