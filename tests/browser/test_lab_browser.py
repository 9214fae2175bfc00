"""Real-browser test of the interactive workbench: JupyterLab driven by Debian's Chromium via Playwright.

What a person sees is checked the way a person sees it: JupyterLab is started from the venv on loopback
(random token, free port), Chromium (headless, Debian's package: Playwright's own browser download cannot
work offline) opens a *copy* of each notebook in a temporary directory, runs all cells through the Run menu,
and the test asserts on the rendered DOM: plotly figures, the TaskPicker's sampled grid, and that the grid
and its status follow a slider change; then the AdaptationExplorer's step slider in notebook 04.

The committed notebooks are never run or saved (they stay output-free). The copies get small parameters
injected with papermill's own ``parameterize_notebook`` (the same mechanism as ``medmeta run``), so the
test exercises the UI, not the compute. Screenshots go to ``tmp_path`` and the final ones are copied to
``/tmp/browser_*.png`` for a human to look at.

Run it with ``.venv/bin/pytest tests/browser -m browser -q`` (about a minute or two on 2 CPU cores).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from medmeta_lib.pipeline.runner import NOTEBOOKS as PIPELINE_NOTEBOOKS
from tests.browser.lab_driver import (
    RUN_ALL_TIMEOUT_S,
    Lab,
    assert_no_errors,
    count_outputs,
    img_srcs,
    kernels_idle,
    open_notebook,
    poll,
    reveal,
    run_all,
    set_slider,
    shot,
    slider,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
NB01 = "01_data_exploration.ipynb"
NB04 = "04_adaptation_visualisation.ipynb"

# Small parameters for the copies (injected after the tagged parameters cell, as papermill does).
# Only names a notebook declares are injected; the notebook's own defaults apply to the rest.
# Notebook 04 takes the pipeline's own smoke parameters (one source of truth) with a few more inner steps so
# that the explorer's step slider has positions to scrub; its full defaults (four learners meta-trained here,
# a 4 x 4 site-transfer map) need several minutes on 2 cores and timed out in CI.
SMALL_PARAMS: dict[str, dict[str, Any]] = {
    NB01: {"n_per_class_site": 6, "samples_per_class": 3, "projection_images": 300},
    NB04: {**next(s.smoke for s in PIPELINE_NOTEBOOKS if s.key == "04"), "adapt_steps": 4},
}


def _copy_notebook(name: str, dest: Path) -> Path:
    """Copy a committed notebook into ``dest`` with small parameters injected; return the copy's path."""
    import papermill
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    src = NOTEBOOKS / name
    declared = papermill.inspect_notebook(str(src))
    params = {k: v for k, v in SMALL_PARAMS.get(name, {}).items() if k in declared}
    nb = load_notebook_node(str(src))
    if params:
        nb = parameterize_notebook(nb, params)
    out = dest / name
    nbformat.write(nb, out)
    return out


# ---------------------------------------------------------------------------------------------- tests
def test_notebook01_task_picker_in_chromium(page: Any, lab: Lab, tmp_path: Path) -> None:
    """Notebook 01 runs in JupyterLab; plotly figures and the TaskPicker render; N 5→3 redraws the task."""
    _copy_notebook(NB01, lab.root)
    nb = open_notebook(page, lab, NB01)
    shot(page, tmp_path, "01_opened")
    run_all(page, lab, nb)
    saved = assert_no_errors(page, lab, NB01)

    n_plotly = count_outputs(saved, "application/vnd.plotly.v1+json")
    assert n_plotly >= 1, f"{NB01} produced no plotly figure"
    plots = nb.locator(".js-plotly-plot")
    poll(f"all {n_plotly} plotly figures to render", lambda: plots.count() >= n_plotly, timeout_s=60)
    first_plot = plots.first
    reveal(page, first_plot)
    assert first_plot.locator(".plot-container svg.main-svg").count() >= 1, "plotly figure has no SVG"
    box = first_plot.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100, f"plotly figure not laid out: {box}"
    shot(page, tmp_path, "01_plotly", keep=True)

    picker = nb.locator(".medmeta-task-picker").last  # TaskPicker.widget.add_class("medmeta-task-picker")
    picker.wait_for(state="attached")
    reveal(page, picker)
    poll("the TaskPicker's sampled grid (an <img> in its Output)", lambda: img_srcs(picker), timeout_s=60)
    status = picker.locator(".widget-html").first
    assert "5-way" in status.inner_text(), status.inner_text()
    before = img_srcs(picker)
    shot(page, tmp_path, "01_picker_5way", keep=True)

    n_way = slider(picker, "N (way)")
    set_slider(page, n_way, "3")
    poll("the status text to say 3-way", lambda: "3-way" in status.inner_text(), timeout_s=60)
    poll("the grid image to change", lambda: (s := img_srcs(picker)) and s != before, timeout_s=60)
    assert n_way.locator(".widget-readout").inner_text().strip() == "3"
    reveal(page, picker)
    shot(page, tmp_path, "01_picker_3way", keep=True)


@pytest.mark.skipif(not (NOTEBOOKS / NB04).exists(), reason="notebook 04 not yet present")
def test_notebook04_adaptation_explorer_in_chromium(page: Any, lab: Lab, tmp_path: Path) -> None:
    """Notebook 04 runs; the AdaptationExplorer runs an adaptation and its figure follows the step slider."""
    _copy_notebook(NB04, lab.root)
    nb = open_notebook(page, lab, NB04)
    run_all(page, lab, nb)
    assert_no_errors(page, lab, NB04)

    explorer = nb.locator(".medmeta-adaptation-explorer").last
    explorer.wait_for(state="attached")
    reveal(page, explorer)
    outputs = explorer.locator(".widget-output")

    def signature() -> str:
        return "".join(outputs.evaluate_all("els => els.map(e => e.innerHTML)"))

    initial = signature()
    explorer.locator("button.widget-button", has_text="Run adaptation").first.click()
    clicked = time.monotonic()

    def adapted() -> bool:
        # done when the figure changed, or (an explorer that already showed this figure) when it is present and
        # the kernel has been idle a few seconds after the click
        has_figure = outputs.locator("img, .js-plotly-plot").count() > 0
        settled = time.monotonic() - clicked > 5 and kernels_idle(lab)
        return has_figure and (signature() != initial or settled) and kernels_idle(lab)

    poll("the explorer's figure after 'Run adaptation'", adapted, timeout_s=RUN_ALL_TIMEOUT_S, interval_s=1.0)
    page.wait_for_timeout(1000)  # let the last redraw land before taking the reference
    before = signature()
    shot(page, tmp_path, "04_explorer_before", keep=True)

    step = slider(explorer, "step")
    handle = step.locator(".noUi-handle").first
    lo, hi, now = (handle.get_attribute(a) for a in ("aria-valuemin", "aria-valuemax", "aria-valuenow"))
    assert lo is not None and hi is not None, "the step slider's handle has no aria-valuemin/max"
    assert lo != hi, f"the step slider has a single position ({lo}) after 'Run adaptation': nothing to scrub"
    target = str(int(float(hi))) if now != hi else str(int(float(lo)))
    readout = step.locator(".widget-readout")
    if readout.get_attribute("contenteditable") == "true":
        set_slider(page, step, target)
    else:  # a selection slider has a read-only readout: use the keyboard on the handle
        handle.focus()
        page.keyboard.press("End" if now != hi else "Home")
    poll("the explorer's figure to change with the step slider", lambda: signature() != before, timeout_s=60)
    assert handle.get_attribute("aria-valuenow") != now, "the step slider did not move"
    reveal(page, explorer)
    shot(page, tmp_path, "04_explorer_after", keep=True)
