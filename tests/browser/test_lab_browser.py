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

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import pytest

from medmeta_lib.pipeline.runner import NOTEBOOKS as PIPELINE_NOTEBOOKS
from tests.conftest import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
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

RUN_ALL_TIMEOUT_S = 240  # generous: the machine is shared; we poll, never sleep blindly
SERVER_START_TIMEOUT_S = 90
UI_TIMEOUT_MS = 60_000
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


# ---------------------------------------------------------------------------------------------- server
@dataclass
class Lab:
    """A running JupyterLab server: its base URL, token, notebook directory and process."""

    url: str
    token: str
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, method: str = "GET") -> Any:
        """Call the Jupyter REST API (``path`` like ``/api/kernels``); returns the decoded JSON or None."""
        req = urllib.request.Request(f"{self.url}{path}", method=method)
        req.add_header("Authorization", f"token {self.token}")
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def log_tail(self, n: int = 4000) -> str:
        """The end of the server log (for failure messages)."""
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (Linux /proc; empty elsewhere): the server's kernels."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(stat.parent.name))
    return kids


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server by its PID (SIGTERM, wait, SIGKILL), then any kernel of it that outlived it.

    Kernels run in their own sessions (jupyter_client starts them so), hence the explicit list.
    """
    kernels = _children(proc.pid)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for pid in kernels:  # normally gone already: the server shuts its kernels down on SIGTERM
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """JupyterLab on a free loopback port with a random token, serving ``tmp_path/work``; always stopped."""
    root = tmp_path / "work"
    root.mkdir()
    home = tmp_path / "jupyter"  # isolated config/runtime/settings: nothing from ~/.jupyter leaks in
    settings = home / "settings"
    # no announcements toast (it would ask about news and cover the page) and no update check (offline)
    notif = settings / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True)
    (notif / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    port, token = free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        f"--port={port}",
        "--ServerApp.ip=127.0.0.1",
        f"--IdentityProvider.token={token}",
        f"--notebook-dir={root}",
        f"--LabApp.user_settings_dir={settings}",
        f"--LabApp.workspaces_dir={home / 'workspaces'}",
        "--ServerApp.port_retries=0",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        # one BLAS/OpenMP/torch thread in the kernel: on a busy 2-core machine spin-waiting BLAS threads made
        # a 300-image LogisticRegression ~50x slower (15 s vs 0.3 s); the browser and server need CPU too
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MEDMETA_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    log = tmp_path / "jupyterlab.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = Lab(url=f"http://127.0.0.1:{port}", token=token, root=root, proc=proc, log=log)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{server.log_tail()}")
            try:
                server.api(f"/api/status?token={token}")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not answer within {SERVER_START_TIMEOUT_S} s:\n{server.log_tail()}")
                time.sleep(0.5)
        yield server
    finally:
        with contextlib.suppress(Exception):
            for k in server.api("/api/kernels") or []:
                server.api(f"/api/kernels/{k['id']}", method="DELETE")
        _stop(proc)


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


# ---------------------------------------------------------------------------------------------- browser
@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    """A Playwright page in Debian's headless Chromium; skips only when chromium is not installed."""
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium is not installed (Debian: `apt-get install chromium`; `make test` does it when it can)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            pg = context.new_page()
            pg.set_default_timeout(UI_TIMEOUT_MS)
            yield pg
        finally:
            browser.close()


def _shot(page: Any, tmp_path: Path, name: str, *, keep: bool = False) -> Path:
    path = tmp_path / f"browser_{name}.png"
    page.screenshot(path=str(path))
    if keep:  # the final screenshots, for a human to look at
        with contextlib.suppress(OSError):
            shutil.copyfile(path, f"/tmp/browser_{name}.png")
    return path


def _poll(what: str, fn: Callable[[], Any], timeout_s: float, interval_s: float = 0.5) -> Any:
    """Call ``fn`` until it returns something truthy; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def _dismiss_dialogs(page: Any) -> None:
    """Accept any modal dialog (e.g. 'Select Kernel': the default choice is the notebook's python3)."""
    for _ in range(3):
        dlg = page.locator(".jp-Dialog")
        if dlg.count() == 0:
            return
        accept = dlg.locator(".jp-Dialog-button.jp-mod-accept")
        if accept.count():
            accept.first.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(300)


def _kernels_idle(lab: Lab) -> bool:
    try:
        kernels = lab.api("/api/kernels") or []
    except (urllib.error.URLError, ConnectionError, TimeoutError):  # a kernel still starting can answer 500
        return False
    return bool(kernels) and all(k.get("execution_state") == "idle" for k in kernels)


def _open_notebook(page: Any, lab: Lab, name: str) -> Any:
    """Open ``name`` in JupyterLab and wait until its kernel is idle; returns the notebook locator."""
    page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}")
    nb = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first
    nb.wait_for(state="visible", timeout=120_000)

    def ready() -> bool:
        _dismiss_dialogs(page)
        return _kernels_idle(lab)

    _poll("the kernel to start and be idle", ready, timeout_s=120)
    return nb


def _run_all(page: Any, lab: Lab, nb: Any) -> None:
    """Run → Run All Cells from the menu bar; wait until every code cell has an execution count."""
    page.locator("#jp-MainMenu").get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
    code_prompts = nb.locator(".jp-CodeCell .jp-InputArea-prompt")
    n_code = code_prompts.count()
    assert n_code > 0

    def done() -> bool:
        _dismiss_dialogs(page)
        texts = code_prompts.all_inner_texts()
        if any("*" in t for t in texts):
            return False
        numbered = sum(any(ch.isdigit() for ch in t) for t in texts)
        # Run All stops at the first error: then the kernel is idle with cells left unnumbered
        return numbered == n_code or (numbered > 0 and _kernels_idle(lab) and _no_running(page, nb))

    _poll("Run All Cells to finish", done, timeout_s=RUN_ALL_TIMEOUT_S, interval_s=1.0)


def _no_running(page: Any, nb: Any) -> bool:
    page.wait_for_timeout(1500)  # a queued cell may not show its [*] yet: look twice
    return not any("*" in t for t in nb.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts())


def _assert_no_errors(page: Any, lab: Lab, name: str) -> Any:
    """Save the (temporary) copy and check its outputs with nbformat: no error output, every cell run.

    Returns the saved notebook (an ``nbformat`` node) for further checks.
    """
    path = lab.root / name
    before = path.stat().st_mtime_ns
    page.keyboard.press("Control+s")

    def saved() -> Any:
        _dismiss_dialogs(page)
        if path.stat().st_mtime_ns == before:
            return None
        try:
            return nbformat.read(path, as_version=4)
        except (ValueError, OSError):  # caught mid-write: look again
            return None

    nb = _poll(f"{name} to be saved", saved, timeout_s=30)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{name}: a cell failed: {errors[0].ename}: {errors[0].evalue}\n" + "\n".join(
        errors[0].traceback
    )
    not_run = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and not c.get("execution_count")]
    assert not not_run, f"{name}: cells {not_run} did not run"
    return nb


def _count_outputs(nb: Any, mime: str) -> int:
    return sum(mime in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def _slider(root: Any, label: str) -> Any:
    """The ipywidgets slider inside ``root`` whose description is exactly ``label``."""
    sliders = root.locator(".widget-slider")
    for i in range(sliders.count()):
        s = sliders.nth(i)
        if s.locator(".widget-label").first.inner_text().strip() == label:
            return s
    pytest.fail(f"no slider labelled {label!r}; found {sliders.locator('.widget-label').all_inner_texts()}")


def _set_slider(page: Any, slider: Any, value: str) -> None:
    """Type ``value`` into the slider's editable readout and press Enter (what a user does)."""
    readout = slider.locator(".widget-readout")
    readout.scroll_into_view_if_needed()
    readout.click()
    page.keyboard.press("Control+a")
    page.keyboard.type(value)
    page.keyboard.press("Enter")


def _reveal(page: Any, loc: Any) -> None:
    """Scroll ``loc`` to the middle (if tall: the top) of the notebook and wait until it stays in view.

    JupyterLab lays cells out lazily (content-visibility), so one scroll can land short: repeat.
    """

    def visible() -> bool:
        loc.evaluate("e => e.scrollIntoView({block: e.offsetHeight > window.innerHeight * 0.8 ? 'start' : 'center'})")
        page.wait_for_timeout(300)
        box, view = loc.bounding_box(), page.viewport_size
        return bool(box and view and box["y"] >= 0 and box["y"] < view["height"] * 0.9)

    _poll("an element to scroll into view", visible, timeout_s=20)


def _img_srcs(root: Any) -> list[str]:
    return [str(s) for s in root.locator(".widget-output img").evaluate_all("els => els.map(e => e.src)")]


# ---------------------------------------------------------------------------------------------- tests
def test_notebook01_task_picker_in_chromium(page: Any, lab: Lab, tmp_path: Path) -> None:
    """Notebook 01 runs in JupyterLab; plotly figures and the TaskPicker render; N 5→3 redraws the task."""
    _copy_notebook(NB01, lab.root)
    nb = _open_notebook(page, lab, NB01)
    _shot(page, tmp_path, "01_opened")
    _run_all(page, lab, nb)
    saved = _assert_no_errors(page, lab, NB01)

    n_plotly = _count_outputs(saved, "application/vnd.plotly.v1+json")
    assert n_plotly >= 1, f"{NB01} produced no plotly figure"
    plots = nb.locator(".js-plotly-plot")
    _poll(f"all {n_plotly} plotly figures to render", lambda: plots.count() >= n_plotly, timeout_s=60)
    first_plot = plots.first
    _reveal(page, first_plot)
    assert first_plot.locator(".plot-container svg.main-svg").count() >= 1, "plotly figure has no SVG"
    box = first_plot.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100, f"plotly figure not laid out: {box}"
    _shot(page, tmp_path, "01_plotly", keep=True)

    picker = nb.locator(".medmeta-task-picker").last  # TaskPicker.widget.add_class("medmeta-task-picker")
    picker.wait_for(state="attached")
    _reveal(page, picker)
    _poll("the TaskPicker's sampled grid (an <img> in its Output)", lambda: _img_srcs(picker), timeout_s=60)
    status = picker.locator(".widget-html").first
    assert "5-way" in status.inner_text(), status.inner_text()
    before = _img_srcs(picker)
    _shot(page, tmp_path, "01_picker_5way", keep=True)

    n_way = _slider(picker, "N (way)")
    _set_slider(page, n_way, "3")
    _poll("the status text to say 3-way", lambda: "3-way" in status.inner_text(), timeout_s=60)
    _poll("the grid image to change", lambda: (s := _img_srcs(picker)) and s != before, timeout_s=60)
    assert n_way.locator(".widget-readout").inner_text().strip() == "3"
    _reveal(page, picker)
    _shot(page, tmp_path, "01_picker_3way", keep=True)


@pytest.mark.skipif(not (NOTEBOOKS / NB04).exists(), reason="notebook 04 not yet present")
def test_notebook04_adaptation_explorer_in_chromium(page: Any, lab: Lab, tmp_path: Path) -> None:
    """Notebook 04 runs; the AdaptationExplorer runs an adaptation and its figure follows the step slider."""
    _copy_notebook(NB04, lab.root)
    nb = _open_notebook(page, lab, NB04)
    _run_all(page, lab, nb)
    _assert_no_errors(page, lab, NB04)

    explorer = nb.locator(".medmeta-adaptation-explorer").last
    explorer.wait_for(state="attached")
    _reveal(page, explorer)
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
        settled = time.monotonic() - clicked > 5 and _kernels_idle(lab)
        return has_figure and (signature() != initial or settled) and _kernels_idle(lab)

    _poll("the explorer's figure after 'Run adaptation'", adapted, timeout_s=RUN_ALL_TIMEOUT_S, interval_s=1.0)
    page.wait_for_timeout(1000)  # let the last redraw land before taking the reference
    before = signature()
    _shot(page, tmp_path, "04_explorer_before", keep=True)

    step = _slider(explorer, "step")
    handle = step.locator(".noUi-handle").first
    lo, hi, now = (handle.get_attribute(a) for a in ("aria-valuemin", "aria-valuemax", "aria-valuenow"))
    assert lo is not None and hi is not None, "the step slider's handle has no aria-valuemin/max"
    assert lo != hi, f"the step slider has a single position ({lo}) after 'Run adaptation': nothing to scrub"
    target = str(int(float(hi))) if now != hi else str(int(float(lo)))
    readout = step.locator(".widget-readout")
    if readout.get_attribute("contenteditable") == "true":
        _set_slider(page, step, target)
    else:  # a selection slider has a read-only readout: use the keyboard on the handle
        handle.focus()
        page.keyboard.press("End" if now != hi else "Home")
    _poll("the explorer's figure to change with the step slider", lambda: signature() != before, timeout_s=60)
    assert handle.get_attribute("aria-valuenow") != now, "the step slider did not move"
    _reveal(page, explorer)
    _shot(page, tmp_path, "04_explorer_after", keep=True)
