"""The sliced kernel channel: same contract as jupyter_client's, and a missed wake-up costs one slice.

And the pipeline's kernels: IPC transport, so no "running over TCP without encryption" warning; the kernel
process's own output in a log beside the executed notebook; failures as one message each.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from queue import Empty

import nbformat
import pytest
import zmq
import zmq.asyncio
from jupyter_client.session import Session

from medmeta_lib.pipeline import execution as nbexec
from medmeta_lib.pipeline.execution import (
    PipelineKernelManager,
    SlicedChannel,
    SlicedKernelClient,
    SlicedKernelManager,
    execute_notebook,
    run_notebook,
)


def _pair() -> tuple[zmq.asyncio.Context, zmq.asyncio.Socket, zmq.Socket, zmq.Context]:
    actx = zmq.asyncio.Context()
    recv = actx.socket(zmq.PAIR)
    port = recv.bind_to_random_port("tcp://127.0.0.1")
    sctx = zmq.Context()
    send = sctx.socket(zmq.PAIR)
    send.connect(f"tcp://127.0.0.1:{port}")
    return actx, recv, send, sctx


def test_returns_a_real_message_and_times_out_on_silence() -> None:
    async def go() -> None:
        actx, recv, send, sctx = _pair()
        session = Session(key=b"k")
        ch = SlicedChannel(recv, session)
        try:
            t0 = time.monotonic()
            with pytest.raises(Empty):
                await ch.get_msg(timeout=1.2)  # three slices of nothing: Empty after the whole timeout
            assert 1.1 < time.monotonic() - t0 < 3.0
            session.send(send, "execute_reply", {"status": "ok"})
            msg = await ch.get_msg(timeout=5)
            assert msg["msg_type"] == "execute_reply" and msg["content"] == {"status": "ok"}
        finally:
            send.close(0)
            sctx.term()
            recv.close(0)
            actx.term()

    asyncio.run(go())


class _ForgetfulSocket:
    """A socket whose first ``poll`` misses the wake-up: it waits its whole timeout and reports nothing.

    This is the failure mode of jupyter/nbclient#312: the message is there, the wait does not end.
    """

    def __init__(self) -> None:
        self.polls: list[float | None] = []

    async def poll(self, timeout_ms: int | None = None) -> int:
        self.polls.append(timeout_ms)
        if len(self.polls) == 1:
            await asyncio.sleep((timeout_ms or 10_000_000) / 1000)
            return 0
        return zmq.POLLIN


def test_a_missed_wake_up_costs_one_slice_not_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    sock = _ForgetfulSocket()

    async def fake_recv(self: SlicedChannel, **kwargs: object) -> dict:
        return {"msg_type": "status", "content": {"execution_state": "idle"}}

    monkeypatch.setattr(SlicedChannel, "_recv", fake_recv)
    ch = SlicedChannel.__new__(SlicedChannel)
    ch.socket = sock  # type: ignore[assignment]

    async def go() -> tuple[dict, float]:
        t0 = time.monotonic()
        msg = await asyncio.wait_for(ch.get_msg(timeout=3600), timeout=30)  # nbclient waits a whole cell timeout
        return msg, time.monotonic() - t0

    msg, took = asyncio.run(go())
    assert msg["content"]["execution_state"] == "idle"
    assert took < nbexec.SLICE_S + 1.0 and len(sock.polls) == 2
    assert sock.polls[0] == int(nbexec.SLICE_S * 1000)  # never one long wait


def test_manager_hands_out_sliced_clients() -> None:
    km = SlicedKernelManager(kernel_name="python3")
    km.client_class = "jupyter_client.asynchronous.AsyncKernelClient"  # what nbclient sets after creating it
    kc = km.client()
    assert isinstance(kc, SlicedKernelClient)
    assert kc.shell_channel_class is SlicedChannel and kc.iopub_channel_class is SlicedChannel


# ---------------------------------------------------------------- the pipeline's kernels: IPC, quiet
def test_pipeline_manager_uses_ipc_in_the_private_runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "rt"))
    km = PipelineKernelManager(kernel_name="python3")
    assert km.transport == "ipc"
    assert Path(km.ip).parent == tmp_path / "rt" and Path(km.ip).name.startswith("medmeta-")
    assert (tmp_path / "rt").stat().st_mode & 0o077 == 0  # only this user can reach the sockets
    assert PipelineKernelManager(kernel_name="python3").ip != km.ip  # one prefix per kernel
    assert isinstance(km.client(), SlicedKernelClient)


def test_pipeline_manager_falls_back_to_tcp_when_a_socket_path_would_be_too_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / ("d" * 120)))
    assert nbexec.ipc_prefix() is None
    km = PipelineKernelManager(kernel_name="python3")
    assert km.transport == "tcp" and km.ip in ("127.0.0.1", "localhost")


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "60"])
def test_execute_notebook_refuses_bad_cell_timeouts(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="cell_timeout must be a positive int"):
        execute_notebook(tmp_path / "in.ipynb", tmp_path / "out.ipynb", cell_timeout=bad)  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_notebook_runs_over_ipc_without_the_tcp_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # capfd: the kernel is a child process writing to the inherited file descriptors, where the warning went
    runtime = tmp_path / "rt"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("x: int = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(
                "from ipykernel.kernelapp import IPKernelApp\nprint(x * 2, IPKernelApp.instance().transport)"
            ),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    (tmp_path / "work").mkdir()
    out = execute_notebook(
        tmp_path / "tiny.ipynb", tmp_path / "tiny_out.ipynb", parameters={"x": 21}, cwd=tmp_path / "work"
    )
    captured = capfd.readouterr()
    assert out.cells[-1].outputs[0]["text"] == "42 ipc\n"  # the parameter arrived; the kernel itself says IPC
    assert nbformat.read(tmp_path / "tiny_out.ipynb", as_version=4).cells[-1].outputs[0]["text"] == "42 ipc\n"
    assert "without encryption" not in captured.out + captured.err
    assert "WARNING" not in captured.out + captured.err
    assert not [p.name for p in runtime.glob("medmeta-*")]  # the socket files are gone with the kernel


def _notebook(path: Path, code: str) -> Path:
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("x: int = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell(code),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_what_the_kernel_process_prints_goes_to_its_log_not_the_console(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # a native library writing straight to file descriptors 1 and 2, as libzmq's shutdown assertion did;
    # ipykernel copies such writes to the process's own descriptors from a thread, hence the pause
    code = 'import os, time\nos.write(2, b"native err\\n"); n = os.write(1, b"native out\\n"); time.sleep(1)'
    src = _notebook(tmp_path / "a.ipynb", code)
    assert run_notebook(src, tmp_path / "a_out.ipynb") is None
    console = capfd.readouterr()
    assert "native" not in console.out + console.err
    log = (tmp_path / "a_out.kernel.log").read_text()
    assert "native err" in log and "native out" in log


@pytest.mark.slow
def test_a_silent_kernel_leaves_no_log_and_a_rerun_starts_a_fresh_one(tmp_path: Path) -> None:
    (tmp_path / "a_out.kernel.log").write_text("from an earlier run\n")
    assert run_notebook(_notebook(tmp_path / "a.ipynb", "y = x + 1"), tmp_path / "a_out.ipynb") is None
    assert not (tmp_path / "a_out.kernel.log").exists()


@pytest.mark.slow
def test_a_kernel_that_dies_is_one_message_ending_with_its_last_words(tmp_path: Path) -> None:
    # what an out-of-memory kill looks like to the pipeline; the sleep lets ipykernel copy the line to the log
    code = 'import os, time\nos.write(2, b"last words\\n"); time.sleep(1); os.kill(os.getpid(), 9)'
    failure = run_notebook(_notebook(tmp_path / "b.ipynb", code), tmp_path / "b_out.ipynb")
    assert failure is not None
    assert failure.startswith("the kernel died") and str(tmp_path / "b_out.ipynb") in failure
    assert failure.endswith("b_out.kernel.log):\nlast words")


@pytest.mark.slow
def test_a_failing_cell_and_a_slow_cell_are_one_message_each(tmp_path: Path) -> None:
    failure = run_notebook(_notebook(tmp_path / "c.ipynb", "1 / 0"), tmp_path / "c_out.ipynb")
    assert failure is not None and failure.startswith("cell 2 failed with ZeroDivisionError: division by zero")
    failure = run_notebook(
        _notebook(tmp_path / "d.ipynb", "import time\ntime.sleep(30)"), tmp_path / "d_out.ipynb", cell_timeout=2
    )
    assert failure is not None and failure.startswith("a cell ran longer than 2 s")
