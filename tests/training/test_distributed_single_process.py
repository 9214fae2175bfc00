"""Distributed helpers in one process (no process group): no-op collectives, meta-batch sharding, the rendezvous
errors and the ``torchrun`` command line. The 2-rank runs are in ``test_distributed.py``."""

from __future__ import annotations

import argparse
import time

import pytest
import torch

from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.training import collectives as C
from medmeta_lib.training import distributed as D
from medmeta_lib.training.launch import torchrun_command
from tests.conftest import free_port, make_collection

WORLD = 2


def test_helpers_are_no_ops_in_one_process() -> None:
    assert (D.get_rank(), D.get_world_size(), D.is_main_process(), D.is_distributed()) == (0, 1, True, False)
    assert D.init_distributed() == (0, 1)
    assert C.all_reduce_mean({"loss": 2.0}) == {"loss": 2.0}
    z1, z2 = C.gather_views(torch.arange(8.0).reshape(4, 2))
    assert z1.tolist() == [[0, 1], [2, 3]] and z2.tolist() == [[4, 5], [6, 7]]
    with pytest.raises(ValueError, match=r"\(2b, D\)"):
        C.gather_views(torch.ones(3, 2))


def test_shards_of_all_ranks_are_the_one_process_meta_batch(monkeypatch) -> None:
    col = make_collection(n_classes=6, per_class=8, size=8)
    whole = EpisodeSampler(col, n_way=3, k_shot=2, q_query=3, seed=0)
    want = [whole.sample() for _ in range(4)]
    got, states = [], []
    for rank in range(WORLD):
        sampler = EpisodeSampler(col, n_way=3, k_shot=2, q_query=3, seed=0)
        monkeypatch.setattr(D, "get_rank", lambda r=rank: r)
        monkeypatch.setattr(D, "get_world_size", lambda: WORLD)
        got += D.shard_meta_batch(sampler, 4)
        states.append(sampler._rng.bit_generator.state)
    assert [e.support_idx.tolist() + e.query_idx.tolist() for e in got] == [
        e.support_idx.tolist() + e.query_idx.tolist() for e in want
    ]
    assert states[0] == states[1] == whole._rng.bit_generator.state  # the stream advanced by the global batch
    with pytest.raises(ValueError, match="meta_batch = 3 is not divisible by the world size 2"):
        D.shard_meta_batch(sampler, 3)


def test_sharding_bounds() -> None:
    assert [D.shard_bounds(8, r, 4) for r in range(4)] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    with pytest.raises(ValueError, match="choose meta_batch = 3"):
        D.check_world_divides(2, 3, setting="meta_batch")
    with pytest.raises(ValueError, match=r"rank must be in 0\.\.1"):
        D.shard_bounds(4, 2, 2)


def test_missing_or_unreachable_rendezvous(monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(RuntimeError, match="no rendezvous: MASTER_ADDR and MASTER_PORT not set"):
        D.init_distributed()
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(RuntimeError, match=r"RANK='5' is not a rank in 0..1"):
        D.init_distributed()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))  # nobody listens there
    t = time.time()
    with pytest.raises(RuntimeError, match=r"could not join the rendezvous at 127\.0\.0\.1:\d+ within 1 s"):
        D.init_distributed(timeout_s=1)
    assert time.time() - t < 20 and not D.is_distributed()
    monkeypatch.setenv(D.TIMEOUT_ENV, "soon")
    with pytest.raises(ValueError, match="MEDMETA_DIST_TIMEOUT='soon' must be a number of seconds"):
        D.init_distributed()
    with pytest.raises(ValueError, match="timeout_s must be a finite number"):
        D.init_distributed(timeout_s=0)


def test_torchrun_command() -> None:
    args = {"learner": "protonet", "meta_batch": 4, "out": "runs/my run", "no_progress": True, "encoder": None}
    one = torchrun_command("meta-train", args, nproc_per_node=2)
    assert one == (
        "torchrun --standalone --nproc_per_node=2 -m medmeta_lib.cli meta-train --learner protonet "
        "--meta-batch 4 --out 'runs/my run' --no-progress"
    )
    multi = torchrun_command("meta-train", args, nproc_per_node=2, nnodes=2, rdzv_endpoint="node1:29500")
    assert multi.startswith("torchrun --nnodes=2 --nproc_per_node=2 --rdzv_backend=c10d --rdzv_endpoint=node1:29500")
    slurm = torchrun_command("pretrain", {"batch_size": 256, "out": "enc.safetensors"}, nnodes=4, launcher="slurm")
    first, second = slurm.splitlines()
    assert first.startswith("MASTER_ADDR=$(scontrol show hostnames")
    assert second.startswith("srun --nodes=4 --ntasks-per-node=1 torchrun --nnodes=4 --nproc_per_node=2")
    assert '--rdzv_id="$SLURM_JOB_ID"' in second and second.endswith("pretrain --batch-size 256 --out enc.safetensors")
    with pytest.raises(ValueError, match="rdzv_endpoint must be 'HOST:PORT'"):
        torchrun_command("meta-train", args, nnodes=2)
    with pytest.raises(ValueError, match="meta_batch = 4 is not divisible by the world size 3"):
        torchrun_command("meta-train", args, nproc_per_node=3)
    with pytest.raises(ValueError, match="subcommand must be"):
        torchrun_command("evaluate", args)


@pytest.fixture
def exit_codes(monkeypatch) -> list[int]:
    """The codes ``os._exit`` is called with; the stub raises SystemExit instead of ending the test process."""
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        raise SystemExit(code)

    monkeypatch.setattr(D.os, "_exit", fake_exit)
    return codes


def test_exit_failed_session_flushes_and_exits_with_the_code(exit_codes: list[int], capsys) -> None:
    print("reported before the exit")
    with pytest.raises(SystemExit):
        D.exit_failed_session(3)
    assert exit_codes == [3] and "reported before the exit" in capsys.readouterr().out
    for bad in (-1, 256, True, 1.0):
        with pytest.raises(ValueError, match=r"code must be an int in 0\.\.255"):
            D.exit_failed_session(bad)  # type: ignore[arg-type]


def test_cli_leaves_a_failed_multi_process_session_through_exit_failed_session(
    exit_codes: list[int], monkeypatch, capsys
) -> None:
    from contextlib import contextmanager

    from medmeta_lib.cli import commands

    @contextmanager
    def two_ranks(**_: object):
        yield 0, 2

    @contextmanager
    def one_process(**_: object):
        yield 0, 1

    def body(a: object, rank: int) -> int:
        raise RuntimeError("rank 0/2: the gradient all-reduce failed: another rank stopped")

    monkeypatch.setattr(D, "distributed_session", two_ranks)
    args = argparse.Namespace(cmd="meta-train", dist_timeout=None)
    with pytest.raises(SystemExit):
        commands._distributed(args, body)
    assert exit_codes == [1] and "another rank stopped" in capsys.readouterr().err
    # one process (no group joined): the error is returned as before, the interpreter exits normally
    monkeypatch.setattr(D, "distributed_session", one_process)
    assert commands._distributed(args, body) == 1 and exit_codes == [1]
