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

Example:
    >>> import papermill as pm  # doctest: +SKIP
    >>> pm.execute_notebook("in.ipynb", "out.ipynb", kernel_manager_class=SlicedKernelManager)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from queue import Empty
from typing import Any

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.channels import AsyncZMQSocketChannel
from jupyter_client.manager import AsyncKernelManager
from traitlets import Type

__all__ = ["SLICE_S", "SlicedChannel", "SlicedKernelClient", "SlicedKernelManager"]

SLICE_S = 0.5  # longest a missed wake-up can delay a message (seconds)


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
