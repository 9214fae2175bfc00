"""HTML exports load MathJax from a copy inside the run directory, by a relative URL, and render offline."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from medmeta_lib.pipeline.html_export import MATHJAX_CONFIG, export_html, install_mathjax, mathjax_source

TEX_INLINE = r"$L(\theta) = \sum_i L_i(\theta)$"
TEX_DISPLAY = r"$$\theta' = \theta - \alpha \nabla_\theta L(\theta)$$"
CHROMIUM = shutil.which("chromium")


def _notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_markdown_cell(f"# Formulas\n\nThe objective {TEX_INLINE}, one step:\n\n{TEX_DISPLAY}\n")]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def _mathjax_src(html: str) -> str:
    found = re.findall(r'<script src="([^"]*MathJax\.js[^"]*)"', html)
    assert len(found) == 1, found
    return found[0]


def test_export_loads_mathjax_from_the_run_directory_by_a_relative_url(tmp_path: Path) -> None:
    run = tmp_path / "run"
    mj = install_mathjax(run)
    assert mj == run / "mathjax" and (mj / "MathJax.js").is_file()
    assert (mj / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file() and (mj / "config" / "Safe.js").is_file()
    assert (mj / "config" / "local" / "medmeta.js").is_file()
    assert (mj / "fonts" / "HTML-CSS" / "STIX-Web" / "woff").is_dir()  # the fonts the local config selects
    top = export_html(_notebook(run / "01_formulas.ipynb"), mathjax_dir=mj)
    assert top == run / "01_formulas.html"
    html = top.read_text(encoding="utf-8")
    assert _mathjax_src(html) == f"mathjax/MathJax.js?config={MATHJAX_CONFIG}"
    assert "cdnjs.cloudflare.com/ajax/libs/mathjax" not in html
    assert TEX_INLINE in html and TEX_DISPLAY in html  # the TeX is there for MathJax to typeset
    # a page one folder down reaches the same copy
    nested = export_html(_notebook(run / "sub" / "n.ipynb"), mathjax_dir=mj)
    src = _mathjax_src(nested.read_text(encoding="utf-8"))
    assert src.startswith("../mathjax/MathJax.js?")
    assert (nested.parent / src.split("?")[0]).resolve() == (mj / "MathJax.js").resolve()


def test_install_is_kept_when_current_and_replaced_when_not(tmp_path: Path) -> None:
    mj = install_mathjax(tmp_path)
    marker = mj / "extra.txt"
    marker.write_text("kept while the copy is current")
    assert install_mathjax(tmp_path) == mj and marker.exists()  # current: not copied again
    (mj / ".medmeta_mathjax.json").write_text("{")  # an interrupted or foreign copy
    (mj / "MathJax.js").unlink()
    assert install_mathjax(tmp_path) == mj
    assert not marker.exists() and (mj / "MathJax.js").read_bytes() == (mathjax_source() / "MathJax.js").read_bytes()
    assert not list(tmp_path.glob(".mathjax.tmp*"))


def test_export_refuses_a_folder_without_mathjax(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no MathJax here"):
        export_html(_notebook(tmp_path / "a.ipynb"), mathjax_dir=tmp_path)


def _render(page: Path, profile: Path) -> str:
    """The DOM of ``page`` after headless Chromium ran its scripts for 10 s of virtual time."""
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def _shown(dom: str) -> str:
    """What the page shows: the DOM without scripts (MathJax's config, typeset sources) and styles."""
    return re.sub(r"<(script|style)\b.*?</\1>", "", dom, flags=re.S)


needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make browser-deps installs it)"
)


@needs_chromium
def test_formulas_render_in_a_browser_after_the_run_folder_moves(tmp_path: Path) -> None:
    run = tmp_path / "run"
    export_html(_notebook(run / "01_formulas.ipynb"), mathjax_dir=install_mathjax(run))
    moved = Path(shutil.move(str(run), str(tmp_path / "somewhere else")))  # relative URLs survive a move
    dom = _render(moved / "01_formulas.html", tmp_path / "profile")
    # MathJax 2 replaced both formulas by its output (HTML-CSS with the bundled STIX web fonts)
    assert 'id="MathJax-Element-1-Frame"' in dom and 'id="MathJax-Element-2-Frame"' in dom
    assert 'class="MathJax_Display"' in dom and "STIXMathJax_Main" in dom
    assert "Math Processing Error" not in dom
    # no raw TeX with its dollar delimiters is left in what the page shows
    assert "\\theta" not in _shown(dom) and "$" not in _shown(dom)


NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))
WITH_MATH = [p for p in NOTEBOOKS if "$" in p.read_text(encoding="utf-8")]


@needs_chromium
@pytest.mark.parametrize("notebook", WITH_MATH, ids=lambda p: p.stem)
def test_every_formula_of_the_notebooks_renders(tmp_path: Path, notebook: Path) -> None:
    copy = tmp_path / "run" / notebook.name
    copy.parent.mkdir()
    shutil.copy(notebook, copy)
    dom = _render(export_html(copy, mathjax_dir=install_mathjax(copy.parent)), tmp_path / "profile")
    sources = re.findall(r'<script type="math/tex[^"]*"', dom)  # MathJax keeps each formula's TeX here
    frames = re.findall(r'id="MathJax-Element-\d+-Frame"', dom)
    assert sources and len(frames) == len(sources)  # every formula was typeset
    assert not re.search(r'class="[^"]*\b(noError|merror|MJXp-merror)\b', dom)  # none is a TeX error
    assert "Math Processing Error" not in dom and "$" not in _shown(dom)
