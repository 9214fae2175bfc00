"""A kernel client for headless notebook runs that cannot miss a kernel message.

Why this exists: nbclient (under papermill) waits for a cell's ``execute_reply`` and its final
``idle`` status with *one* ``await socket.poll(timeout)`` on an asyncio ZeroMQ socket, where the
timeout is the whole cell timeout. Now and then that wake-up is missed although the message has
arrived; then the run sits idle until the cell timeout (here: an hour) even though the kernel
finished long ago. It happens mostly in cells that display ipywidgets (many comm messages at
once): measured here, 1 run in 20 of a notebook that shows one ``TaskPicker``. The upstream report
is jupyter/nbclient#312 (open; the proposed fix, jupyter/nbclient#311, also polls in short steps).

The fix is small and local: the channels below wait in slices of ``SLICE_S`` seconds. Every new
``poll`` first asks the socket whether a message is ready, so a missed wake-up costs at most one
slice, and the overall timeout callers asked for is kept exactly. No nbclient code is copied or
patched; :class:`SlicedKernelManager` is passed to papermill as nbclient's documented
``kernel_manager_class`` option.

The pipeline's kernels also talk over IPC (Unix sockets in Jupyter's private runtime directory)
instead of loopback TCP: :class:`PipelineKernelManager`. Nothing then listens on a port that other
local users could reach, and ipykernel has no reason to print its "Kernel is running over TCP without
encryption" warning into every ``medmeta run``. :func:`execute_notebook` is the pipeline's one call
into papermill. It can send what the kernel *process* writes to its own stdout and stderr to a log file
instead of the console: ipykernel's own messages, native libraries' output outside a cell (ipykernel copies
what a cell writes at the file-descriptor level into the notebook *and* there), and now and then libzmq's
``Assertion failed: pfd.revents & POLLIN (src/signaler.cpp:238)``, printed while a finished kernel shuts down
(seen once here, at the end of a smoke run). :func:`run_notebook` is how ``medmeta run`` uses it: the log
sits beside the executed notebook, and a kernel that dies is reported with the log's last lines.

Example:
    >>> import papermill as pm  # doctest: +SKIP
    >>> pm.execute_notebook("in.ipynb", "out.ipynb", kernel_manager_class=SlicedKernelManager)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import Type, default

__all__ = [
    "SLICE_S",
    "PipelineKernelManager",
    "SlicedChannel",
    "SlicedKernelClient",
    "SlicedKernelManager",
    "execute_notebook",
    "ipc_prefix",
    "run_notebook",
]

SLICE_S = 0.5  # longest a missed wake-up can delay a message (seconds)
# a Unix socket path holds at most 107 bytes on Linux and 103 on macOS; "-<port>" is appended to the prefix
_MAX_IPC_PREFIX = 96


class SlicedChannel(AsyncZMQSocketChannel):
    """An asyncio ZeroMQ channel whose ``get_msg`` waits in short slices (same contract as its parent)."""

    async def get_msg(self, timeout: float | None = None) -> dict[str, Any]:  # type: ignore[override]
        """Return the next message, or raise ``queue.Empty`` once ``timeout`` seconds have passed.

        Args:
            timeout: seconds to wait in all (``None``: no limit).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = SLICE_S if deadline is None else max(0.0, min(SLICE_S, deadline - time.monotonic()))
            try:
                return await super().get_msg(timeout=left)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise


class SlicedKernelClient(AsyncKernelClient):
    """``AsyncKernelClient`` with :class:`SlicedChannel` for the shell, IOPub and control channels."""

    shell_channel_class = Type(SlicedChannel)  # type: ignore[assignment]
    iopub_channel_class = Type(SlicedChannel)  # type: ignore[assignment]
    control_channel_class = Type(SlicedChannel)  # type: ignore[assignment]


class SlicedKernelManager(AsyncKernelManager):
    """``AsyncKernelManager`` whose clients are :class:`SlicedKernelClient`.

    nbclient sets ``client_class`` to the stock async client after constructing the manager, so the
    factory is chosen here, when a client is made.
    """

    def client(self, **kwargs: Any) -> AsyncKernelClient:  # type: ignore[override]
        """A :class:`SlicedKernelClient` connected to this manager's kernel."""
        self.client_factory = SlicedKernelClient
        return super().client(**kwargs)


def ipc_prefix() -> str | None:
    """A fresh path prefix for one kernel's IPC sockets in Jupyter's runtime directory, or ``None``.

    ``None`` where IPC is not available (not POSIX) or the path would be too long for a Unix socket;
    the kernel then uses loopback TCP as before.

    Example:
        >>> p = ipc_prefix()
        >>> p is None or os.path.basename(p).startswith("medmeta-")
        True
    """
    if os.name != "posix":
        return None
    from jupyter_core.paths import jupyter_runtime_dir

    runtime = Path(jupyter_runtime_dir())
    prefix = str(runtime / f"medmeta-{uuid.uuid4().hex[:12]}-ipc")
    if len(os.fsencode(prefix)) > _MAX_IPC_PREFIX:
        return None
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: only this user can connect
    return prefix


class PipelineKernelManager(SlicedKernelManager):
    """The manager ``medmeta run`` uses: :class:`SlicedKernelManager` with IPC transport where available.

    The sockets are ``<ipc_prefix()>-<n>`` files in Jupyter's runtime directory (mode 0700); jupyter_client
    removes them when the kernel shuts down. Where :func:`ipc_prefix` gives ``None`` the transport stays TCP.
    """

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc" if self._ipc_prefix is not None else "tcp"

    def _ip_default(self) -> str:
        return self._ipc_prefix if self.transport == "ipc" and self._ipc_prefix is not None else super()._ip_default()

    @property
    def _ipc_prefix(self) -> str | None:
        if not hasattr(self, "_prefix"):
            self._prefix = ipc_prefix()
        return self._prefix

    async def _async_interrupt_kernel(self) -> None:
        # jupyter_client sends SIGINT before every shutdown request; a kernel that is still finishing up when
        # it arrives logs "KeyboardInterrupt caught in kernel" to the console of a successful run. The
        # shutdown request that follows ends the kernel anyway (then SIGTERM/SIGKILL if it does not).
        if self.shutting_down:
            return
        await super()._async_interrupt_kernel()

    kernel_log: str | None = None  # set on a per-run subclass by :func:`execute_notebook`

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        if self.kernel_log is None:
            await super()._async_launch_kernel(kernel_cmd, **kw)
            return
        # the kernel process gets its own copy of the descriptor; ours is closed once it has started
        fd = os.open(self.kernel_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            await super()._async_launch_kernel(kernel_cmd, **{**kw, "stdout": fd, "stderr": fd})
        finally:
            os.close(fd)


def execute_notebook(
    src: str | Path,
    dst: str | Path,
    *,
    parameters: Mapping[str, Any] | None = None,
    cwd: str | Path | None = None,
    cell_timeout: int | None = 3600,
    progress: bool = False,
    label: str = "",
    kernel_log: str | Path | None = None,
) -> Any:
    """Run a notebook headless with papermill, the way ``medmeta run`` does; returns the executed notebook.

    The kernel is a ``python3`` kernel started by :class:`PipelineKernelManager` (IPC, sliced waits).
    papermill's errors (``PapermillExecutionError`` for a failing cell, ``TimeoutError``, nbclient's
    ``DeadKernelError`` for a kernel that died) propagate.

    Args:
        src: the notebook to run (not modified).
        dst: where the executed copy is written (also while it runs).
        parameters: injected after the cell tagged ``parameters``.
        cwd: working directory of the kernel.
        cell_timeout: seconds one cell may run (``None``: no limit).
        progress: a per-cell progress bar on stderr, shown only on a terminal and erased when done.
        label: the progress bar's title.
        kernel_log: a file that receives what the kernel process itself writes to stdout and stderr
            (appended; cell outputs still go into the notebook as well). ``None``: the console, as inherited.

    Raises:
        ValueError: ``cell_timeout`` is not a positive int or ``None``.

    Example:
        >>> nb = execute_notebook("in.ipynb", "out.ipynb", parameters={"seed": 1})  # doctest: +SKIP
    """
    import papermill as pm

    if cell_timeout is not None and (
        isinstance(cell_timeout, bool) or not isinstance(cell_timeout, int) or cell_timeout < 1
    ):
        raise ValueError(f"cell_timeout must be a positive int (seconds) or None, got {cell_timeout!r}")
    # tqdm: disable=None hides the bar when stderr is not a terminal (logs, CI); leave=False erases it when done
    bar: bool | dict[str, Any] = False
    if progress:
        bar = {"desc": label or Path(src).stem, "leave": False, "disable": None}
    return pm.execute_notebook(
        str(src),
        str(dst),
        parameters=dict(parameters or {}),
        kernel_name="python3",
        progress_bar=bar,
        cwd=None if cwd is None else str(cwd),
        execution_timeout=cell_timeout,
        kernel_manager_class=(
            PipelineKernelManager
            if kernel_log is None
            else type("LoggedKernelManager", (PipelineKernelManager,), {"kernel_log": str(kernel_log)})
        ),
    )


def run_notebook(
    src: str | Path,
    dst: str | Path,
    *,
    parameters: Mapping[str, Any] | None = None,
    cwd: str | Path | None = None,
    cell_timeout: int | None = 3600,
    progress: bool = False,
    label: str = "",
) -> str | None:
    """Run a notebook as ``medmeta run`` does; ``None`` on success, else one line saying what went wrong.

    Like :func:`execute_notebook`, with the kernel process's own output in ``<dst stem>.kernel.log`` beside
    ``dst`` (removed again when the kernel wrote nothing). A failing cell, a cell over ``cell_timeout``
    and a kernel that died become the returned message, which names the executed copy; for a dead
    kernel it ends with the last lines of the kernel log. Other errors propagate.

    Args:
        src: the notebook to run (not modified).
        dst: where the executed copy is written.
        parameters: injected after the cell tagged ``parameters``.
        cwd: working directory of the kernel.
        cell_timeout: seconds one cell may run (``None``: no limit).
        progress: a per-cell progress bar on a terminal.
        label: the progress bar's title.

    Example:
        >>> failure = run_notebook("in.ipynb", "out.ipynb", parameters={"seed": 1})  # doctest: +SKIP
        >>> failure is None  # doctest: +SKIP
        True
    """
    import papermill as pm
    from nbclient.exceptions import DeadKernelError

    log = Path(dst).with_suffix(".kernel.log")
    log.unlink(missing_ok=True)
    failure: str | None = None
    try:
        execute_notebook(
            src,
            dst,
            parameters=parameters,
            cwd=cwd,
            cell_timeout=cell_timeout,
            progress=progress,
            label=label,
            kernel_log=log,
        )
    except pm.PapermillExecutionError as e:
        failure = f"cell {e.exec_count} failed with {e.ename}: {e.evalue} (executed copy with outputs so far: {dst})"
    except TimeoutError as e:
        failure = f"a cell ran longer than {cell_timeout} s ({e}); outputs so far: {dst}"
    except DeadKernelError:
        tail = log.read_text(errors="replace").strip().splitlines()[-20:] if log.exists() else []
        said = "\n".join(tail) if tail else "(it wrote nothing)"
        failure = (
            f"the kernel died (out of memory, or a crash in native code); outputs so far: {dst}; "
            f"the kernel's last words ({log}):\n{said}"
        )
    if log.exists() and log.stat().st_size == 0:
        log.unlink()
    return failure
