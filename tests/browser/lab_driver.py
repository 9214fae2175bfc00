"""Driving JupyterLab in Debian's Chromium for the browser tests: the server, the page, and what a user does.

``running_lab`` starts JupyterLab from the venv on loopback (random token, free port, isolated settings) and always
stops it and its kernels; ``chromium_page`` opens a Playwright page in headless Chromium (Debian's package:
Playwright's own browser download cannot work offline). The other functions are the steps a person takes in the
page (open a notebook, Run All, save, move a slider, scroll) and wait for what they would see, polling rather than
sleeping blindly.
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

from tests.conftest import free_port

__all__ = [
    "RUN_ALL_TIMEOUT_S",
    "Lab",
    "assert_no_errors",
    "chromium_page",
    "count_outputs",
    "img_srcs",
    "kernels_idle",
    "open_notebook",
    "poll",
    "reveal",
    "run_all",
    "running_lab",
    "set_slider",
    "shot",
    "slider",
]

REPO = Path(__file__).resolve().parents[2]

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


@contextlib.contextmanager
def running_lab(tmp_path: Path) -> Iterator[Lab]:
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


@contextlib.contextmanager
def chromium_page() -> Iterator[Any]:
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


def shot(page: Any, tmp_path: Path, name: str, *, keep: bool = False) -> Path:
    path = tmp_path / f"browser_{name}.png"
    page.screenshot(path=str(path))
    if keep:  # the final screenshots, for a human to look at
        with contextlib.suppress(OSError):
            shutil.copyfile(path, f"/tmp/browser_{name}.png")
    return path


def poll(what: str, fn: Callable[[], Any], timeout_s: float, interval_s: float = 0.5) -> Any:
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


def kernels_idle(lab: Lab) -> bool:
    try:
        kernels = lab.api("/api/kernels") or []
    except (urllib.error.URLError, ConnectionError, TimeoutError):  # a kernel still starting can answer 500
        return False
    return bool(kernels) and all(k.get("execution_state") == "idle" for k in kernels)


def open_notebook(page: Any, lab: Lab, name: str) -> Any:
    """Open ``name`` in JupyterLab and wait until its kernel is idle; returns the notebook locator."""
    page.goto(f"{lab.url}/lab/tree/{name}?token={lab.token}")
    nb = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook").first
    nb.wait_for(state="visible", timeout=120_000)

    def ready() -> bool:
        _dismiss_dialogs(page)
        return kernels_idle(lab)

    poll("the kernel to start and be idle", ready, timeout_s=120)
    return nb


def run_all(page: Any, lab: Lab, nb: Any) -> None:
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
        return numbered == n_code or (numbered > 0 and kernels_idle(lab) and _no_running(page, nb))

    poll("Run All Cells to finish", done, timeout_s=RUN_ALL_TIMEOUT_S, interval_s=1.0)


def _no_running(page: Any, nb: Any) -> bool:
    page.wait_for_timeout(1500)  # a queued cell may not show its [*] yet: look twice
    return not any("*" in t for t in nb.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts())


def assert_no_errors(page: Any, lab: Lab, name: str) -> Any:
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

    nb = poll(f"{name} to be saved", saved, timeout_s=30)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, f"{name}: a cell failed: {errors[0].ename}: {errors[0].evalue}\n" + "\n".join(
        errors[0].traceback
    )
    not_run = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and not c.get("execution_count")]
    assert not not_run, f"{name}: cells {not_run} did not run"
    return nb


def count_outputs(nb: Any, mime: str) -> int:
    return sum(mime in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def slider(root: Any, label: str) -> Any:
    """The ipywidgets slider inside ``root`` whose description is exactly ``label``."""
    sliders = root.locator(".widget-slider")
    for i in range(sliders.count()):
        s = sliders.nth(i)
        if s.locator(".widget-label").first.inner_text().strip() == label:
            return s
    pytest.fail(f"no slider labelled {label!r}; found {sliders.locator('.widget-label').all_inner_texts()}")


def set_slider(page: Any, slider: Any, value: str) -> None:
    """Type ``value`` into the slider's editable readout and press Enter (what a user does)."""
    readout = slider.locator(".widget-readout")
    readout.scroll_into_view_if_needed()
    readout.click()
    page.keyboard.press("Control+a")
    page.keyboard.type(value)
    page.keyboard.press("Enter")


def reveal(page: Any, loc: Any) -> None:
    """Scroll ``loc`` to the middle (if tall: the top) of the notebook and wait until it stays in view.

    JupyterLab lays cells out lazily (content-visibility), so one scroll can land short: repeat.
    """

    def visible() -> bool:
        loc.evaluate("e => e.scrollIntoView({block: e.offsetHeight > window.innerHeight * 0.8 ? 'start' : 'center'})")
        page.wait_for_timeout(300)
        box, view = loc.bounding_box(), page.viewport_size
        return bool(box and view and box["y"] >= 0 and box["y"] < view["height"] * 0.9)

    poll("an element to scroll into view", visible, timeout_s=20)


def img_srcs(root: Any) -> list[str]:
    return [str(s) for s in root.locator(".widget-output img").evaluate_all("els => els.map(e => e.src)")]
