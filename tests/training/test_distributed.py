"""Distributed meta-training and SimCLR: 2 gloo ranks on 127.0.0.1 against one process.

The 2-rank jobs are spawned processes (``multiprocessing`` spawn, the environment torchrun would
set); the CLI test runs the real ``torchrun``. Every run uses one thread per process so that the
per-episode computations are the same in both settings, and tiny Conv4 (``hidden=8``, 28 px).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.ssl.ntxent import nt_xent_loss
from medmeta_lib.training import collectives as C
from medmeta_lib.training import distributed as D
from medmeta_lib.training.checkpoint import load_checkpoint
from medmeta_lib.training.launch import cli_arguments, torchrun_command
from medmeta_lib.training.learner_io import build_learner, load_learner
from medmeta_lib.training.meta_training import MetaTrainConfig, meta_train
from tests.conftest import free_port, make_collection

WORLD = 2
TOL = 1e-5
# key -> (learner, conv4 norm); the tests below run every key at world sizes 1 and 2, and STRICT ones
# also through a checkpoint written at one world size and resumed at the other.
CONFIGS = {"fomaml": ("fomaml", "none"), "protonet": ("protonet", "none"), "protonet_bn": ("protonet", "batch")}
STRICT = ("fomaml", "protonet")


# ----------------------------------------------------------------------------- shared by both sides
def _train(key: str, out: Path, steps: int, *, meta_batch: int = 4, patch: Any = None) -> Any:
    name, norm = CONFIGS[key]
    col = make_collection(n_classes=6, per_class=8, n_sites=2, size=28)
    sampler = EpisodeSampler(col, n_way=3, k_shot=2, q_query=3, seed=0)
    val = sampler.fixed(5, seed=1)  # odd: rank 0 scores 3 episodes, rank 1 scores 2
    kw = {"inner_steps": 2} if name == "fomaml" else {}
    learner = build_learner(name, backbone_kwargs={"hidden": 8, "norm": norm}, n_way=3, learner_kwargs=kw, seed=0)
    if patch is not None:
        patch(learner)
    cfg = MetaTrainConfig(steps=steps, meta_batch=meta_batch, lr=1e-2, val_every=2, checkpoint_every=2, seed=0)
    return meta_train(learner, sampler, config=cfg, val_episodes=val, out=out, progress=False)


def _ssl(out: Path | None, max_steps: int, batch_size: int = 16) -> Any:
    from medmeta_lib.ssl.simclr import pretrain_simclr  # MONAI: only the jobs that need it
    from medmeta_lib.ssl.simclr_config import SimCLRConfig

    cfg = SimCLRConfig(epochs=2, batch_size=batch_size, max_steps=max_steps, proj_dim=8, proj_hidden=16)
    col = make_collection(n_classes=4, per_class=8, size=28)
    return pretrain_simclr(col, backbone_kwargs={"hidden": 8}, config=cfg, out=out, progress=False)


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def _writes_by_this_rank(root: Path, rank: int) -> None:
    """Count checkpoint writes per rank (rank 0 alone may write)."""
    import medmeta_lib.ssl.simclr as simclr
    import medmeta_lib.training.checkpoint as ck

    real = ck.save_checkpoint

    def counted(*a: Any, **k: Any) -> Any:
        with open(root / f"writes_rank{rank}.txt", "a") as f:
            f.write(f"{a[0]}\n")
        return real(*a, **k)

    ck.save_checkpoint = counted  # type: ignore[assignment]
    simclr.save_checkpoint = counted  # type: ignore[assignment]


# ----------------------------------------------------------------------------- rank side
def _job_main(rank: int, root: Path) -> None:
    _writes_by_this_rank(root, rank)
    for key in CONFIGS:  # 4 steps at world size 2
        res = _train(key, root / "w2" / key, 4)
        save_file(_state(res.learner), str(root / "w2" / key / f"rank{rank}.safetensors"))
    for key in STRICT:
        _train(key, root / "w2_half" / key, 2)  # written at world size 2, resumed by one process
        _train(key, root / "r12" / key, 4)  # written by one process (2 steps), resumed here
    for what, fn in (
        ("meta", lambda: _train("protonet", root / "bad", 1, meta_batch=3)),
        ("ssl", lambda: _ssl(None, 1, 15)),
    ):
        try:
            fn()
        except ValueError as e:
            (root / f"bad_{what}_rank{rank}.txt").write_text(str(e))
    # NT-Xent over gathered projections of one global batch (test_nt_xent_negatives_gathered_across_ranks)
    z = torch.randn(2, 8, 4, generator=torch.Generator().manual_seed(0))  # (view, image, D)
    mine = z[:, rank * 4 : (rank + 1) * 4].flatten(0, 1).clone().requires_grad_(True)
    loss = nt_xent_loss(*C.gather_views(mine), temperature=0.5)
    loss.backward()
    save_file({"loss": loss.detach().reshape(1), "grad": mine.grad}, str(root / f"ntxent_rank{rank}.safetensors"))
    res = _ssl(root / "ssl.safetensors", 2)
    save_file(_state(res.encoder), str(root / f"ssl_rank{rank}.safetensors"))
    (root / f"ssl_history_rank{rank}.json").write_text(json.dumps(res.history))


def _job_die(rank: int, root: Path) -> None:
    def die_at_step_3(learner: Any) -> None:
        real, calls = learner.meta_step, [0]

        def step(*a: Any, **k: Any) -> Any:
            calls[0] += 1
            if calls[0] == 3:
                os._exit(1)  # rank 1 crashes during step 3, after the checkpoint of step 2
            return real(*a, **k)

        learner.meta_step = step

    t = time.time()
    try:
        _train("protonet", root / "die", 4, patch=die_at_step_3 if rank == 1 else None)
    except RuntimeError as e:
        (root / f"died_rank{rank}.json").write_text(json.dumps({"error": str(e), "seconds": time.time() - t}))
        raise SystemExit(3) from None


def _entry(rank: int, port: int, root: str, job: str) -> None:
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(WORLD), RANK=str(rank))
    try:
        with D.distributed_session(timeout_s=30):
            globals()[job](rank, Path(root))
    except SystemExit as e:  # a job's own failure code (rank 0 of _job_die): leave as the CLI does
        D.exit_failed_session(int(e.code or 0))
    except BaseException:
        Path(root, f"traceback_rank{rank}.txt").write_text(traceback.format_exc())
        D.exit_failed_session(1)


# ----------------------------------------------------------------------------- test side
def _spawn(job: str, root: Path, timeout: float = 150) -> list[int | None]:
    ctx = mp.get_context("spawn")
    port = free_port()
    procs = [ctx.Process(target=_entry, args=(r, port, str(root), job)) for r in range(WORLD)]
    for p in procs:
        p.start()
    deadline = time.time() + timeout
    for p in procs:
        p.join(max(1.0, deadline - time.time()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join()
    return [p.exitcode for p in procs]


def _tracebacks(root: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(root.glob("traceback_rank*.txt")))


def _learner_tensors(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_checkpoint(path).tensors.items() if k.startswith(("learner.", "optim."))}


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], skip: set[str] = frozenset()) -> None:
    assert set(a) == set(b)
    worst = {k: float((a[k].double() - b[k].double()).abs().max()) for k in a if k not in skip and a[k].numel()}
    bad = {k: v for k, v in worst.items() if v > TOL}
    assert not bad, f"differ by more than {TOL}: {bad}"


def _history(path: Path) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "time"} for r in load_checkpoint(path).metadata["history"]]


def _assert_same_history(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b):
        assert set(ra) == set(rb)
        for k in ra:
            assert ra[k] == pytest.approx(rb[k], abs=TOL), (ra["step"], k)


def _gradient_free(key: str) -> set[str]:
    """Parameters (and their Adam moments) on which the meta-loss does not depend: gradient exactly 0.

    * a conv bias followed by batch-statistics BatchNorm (the norm subtracts it again);
    * ProtoNet's last shift before the final ReLU (the last conv's bias, and the last BatchNorm's β when a
      norm follows that conv): it shifts every embedding by the same vector wherever its ReLU is on, and
      Euclidean distances to prototypes ignore a common shift. (With support-statistics normalisation the
      last block sees 1×1 maps of a handful of support images, so a channel's ReLU is often on for every
      image of an episode and β's gradient in it is rounding noise.)

    Their computed gradient is rounding noise, which Adam normalises into steps of up to ``lr``; so
    they differ between *any* two float summation orders (one process at 1 vs 2 threads as well).
    The tests check them through the function the learner computes instead (``_assert_same_function``).
    """
    name, norm = CONFIGS[key]
    learner = build_learner(name, backbone_kwargs={"hidden": 8, "norm": norm}, n_way=3)
    convs = [n for n, m in learner.named_modules() if isinstance(m, nn.Conv2d)]
    free = {f"{convs[-1]}.bias"} if name == "protonet" else set()
    norms = [n for n, m in learner.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if name == "protonet" and norms:
        free.add(f"{norms[-1]}.bias")
    for mname, m in learner.named_modules():
        if isinstance(m, nn.Sequential):
            for i, (a, b) in enumerate(zip(m, list(m)[1:])):
                if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                    free.add(f"{mname}.{i}.bias")
    out = {f"learner.{n}" for n in free}
    for pid, (n, _) in enumerate(learner.named_parameters()):
        if n in free:
            out |= {f"optim.state.{pid}.exp_avg", f"optim.state.{pid}.exp_avg_sq"}
    return out


def _assert_same_function(a_path: Path, b_path: Path) -> None:
    """Adapted query logits of the two checkpoints agree on fresh episodes (atol = rtol = TOL).

    Computed in float64: in float32 the squared distances alone carry rounding errors near TOL.
    """
    a, b = load_learner(a_path).double(), load_learner(b_path).double()
    sampler = EpisodeSampler(make_collection(n_classes=6, per_class=8, size=28), n_way=3, k_shot=2, q_query=3, seed=5)
    for _ in range(3):
        ep = sampler.sample()
        sx, qx = ep.support_x.double(), ep.query_x.double()
        pa, _ = a.adapt(sx, ep.support_y)
        pb, _ = b.adapt(sx, ep.support_y)
        with torch.no_grad():
            torch.testing.assert_close(pa(qx), pb(qx), atol=TOL, rtol=TOL)


def _assert_equivalent(a_path: Path, b_path: Path, key: str) -> None:
    free = _gradient_free(key)
    _assert_close(_learner_tensors(a_path), _learner_tensors(b_path), free)
    _assert_same_history(_history(a_path), _history(b_path))
    if free:
        _assert_same_function(a_path, b_path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One process (the references) and one 2-rank job; the tests below read what they wrote."""
    root = tmp_path_factory.mktemp("dist")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for key in CONFIGS:
            _train(key, root / "w1" / key, 4)
        for key in STRICT:
            _train(key, root / "r12" / key, 2)
        codes = _spawn("_job_main", root)
        assert codes == [0, 0], f"2-rank job failed {codes}:\n{_tracebacks(root)}"
        for key in STRICT:  # world size 2 -> 1: resume the 2-step checkpoint to step 4 in this process
            shutil.copytree(root / "w2_half" / key, root / "r21" / key)
            _train(key, root / "r21" / key, 4)
    finally:
        torch.set_num_threads(before)
    return root


def test_gradient_free_parameters() -> None:
    assert _gradient_free("fomaml") == set()  # fomaml: every parameter compared to TOL
    assert _gradient_free("protonet") == {
        "learner.backbone.features.12.bias",
        "optim.state.7.exp_avg",
        "optim.state.7.exp_avg_sq",
    }
    # 4 conv biases and the last BatchNorm β, and their two Adam moments each
    assert len(_gradient_free("protonet_bn")) == 15


@pytest.mark.slow  # the 2-rank job: about 40 s of process start-up and training on 2 cores
@pytest.mark.parametrize("key", CONFIGS)
def test_two_ranks_match_one_process(runs: Path, key: str, one_thread: None) -> None:
    last = "last.safetensors"
    _assert_equivalent(runs / "w2" / key / last, runs / "w1" / key / last, key)
    r0, r1 = (load_file(str(runs / "w2" / key / f"rank{r}.safetensors")) for r in range(WORLD))
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "ranks ended with different weights"


@pytest.mark.slow
@pytest.mark.parametrize("key", STRICT)
@pytest.mark.parametrize("route", ["r21", "r12"])
def test_resume_across_world_sizes(runs: Path, key: str, route: str, one_thread: None) -> None:
    resumed, uninterrupted = runs / route / key / "last.safetensors", runs / "w1" / key / "last.safetensors"
    assert load_checkpoint(resumed).metadata["step"] == 4
    _assert_equivalent(resumed, uninterrupted, key)


@pytest.mark.slow
def test_rank_zero_alone_writes(runs: Path) -> None:
    assert (runs / "writes_rank0.txt").read_text().count("\n") > 0
    assert not (runs / "writes_rank1.txt").exists()


@pytest.mark.slow
def test_meta_batch_not_divisible_by_world_size(runs: Path) -> None:
    for r in range(WORLD):
        msg = (runs / f"bad_meta_rank{r}.txt").read_text()
        assert "meta_batch (--meta-batch) = 3 is not divisible by the world size 2" in msg
        assert "choose MetaTrainConfig.meta_batch (--meta-batch) = 2 or 4" in msg
        assert "batch_size (--batch-size) = 15 is not divisible" in (runs / f"bad_ssl_rank{r}.txt").read_text()


@pytest.mark.slow
def test_nt_xent_negatives_gathered_across_ranks(runs: Path) -> None:
    z = torch.randn(2, 8, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    loss = nt_xent_loss(z[0], z[1], temperature=0.5)
    loss.backward()
    assert z.grad is not None
    for r in range(WORLD):
        got = load_file(str(runs / f"ntxent_rank{r}.safetensors"))
        assert float(got["loss"]) == pytest.approx(loss.item(), abs=1e-6)
        # every rank back-propagates the global loss; DDP then averages over the W ranks
        want = z.grad[:, r * 4 : (r + 1) * 4].flatten(0, 1)
        torch.testing.assert_close(got["grad"] / WORLD, want, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_simclr_under_ddp(runs: Path, one_thread: None) -> None:
    s0, s1 = (load_file(str(runs / f"ssl_rank{r}.safetensors")) for r in range(WORLD))
    assert all(torch.equal(s0[k], s1[k]) for k in s0), "DDP ranks diverged"
    ck = load_checkpoint(runs / "ssl.safetensors")
    assert ck.metadata["step"] == 2
    assert all(torch.equal(ck.tensors[f"encoder.{k}"], v) for k, v in s0.items())
    h0, h1 = (json.loads((runs / f"ssl_history_rank{r}.json").read_text()) for r in range(WORLD))
    assert h0 == h1 and len(h0) == 2 and all(torch.isfinite(torch.tensor(r["loss"])) for r in h0)
    # the world-size-2 checkpoint resumes in one process
    out = runs / "ssl_resumed.safetensors"
    shutil.copy(runs / "ssl.safetensors", out)
    res = _ssl(out, 3)
    assert [r["step"] for r in res.history] == [1, 2, 3] and res.history[:2] == h0


@pytest.mark.slow
def test_a_rank_dying_mid_run_fails_fast_and_leaves_a_loadable_checkpoint(
    runs: Path, tmp_path: Path, one_thread: None
) -> None:
    codes = _spawn("_job_die", tmp_path, timeout=120)
    assert codes == [3, 1], f"{codes}:\n{_tracebacks(tmp_path)}"
    died = json.loads((tmp_path / "died_rank0.json").read_text())
    assert "another rank stopped" in died["error"] and "relaunch the same torchrun command" in died["error"]
    assert died["seconds"] < 30  # the peer's closed connection is noticed, not waited out
    last = tmp_path / "die" / "last.safetensors"
    assert load_checkpoint(last).metadata["step"] == 2
    assert load_learner(last, expect_learner="protonet").name == "protonet"
    resumed = _train("protonet", tmp_path / "die", 4)  # relaunch (here: one process) continues the run
    assert resumed.history[-1]["step"] == 4
    _assert_equivalent(last, runs / "w1" / "protonet" / "last.safetensors", "protonet")


@pytest.mark.slow
def test_cli_meta_train_under_torchrun_matches_one_process(tmp_path: Path, one_thread: None, capsys) -> None:
    from medmeta_lib.cli import main

    args = {
        "learner": "protonet",
        "n_per_class_site": 4,
        "hidden": 8,
        "n_way": 3,
        "k_shot": 1,
        "q_query": 2,
        "steps": 2,
        "meta_batch": 2,
        "val_every": 2,
        "val_episodes": 4,
        "no_progress": True,
    }
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = torchrun_command("meta-train", {**args, "out": tmp_path / "w2"}, nproc_per_node=2, executable=torchrun)
    env = {**os.environ, D.TIMEOUT_ENV: "60"}
    done = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count('"best_checkpoint"') == 1  # rank 0 alone prints
    argv = ["meta-train", *cli_arguments({**args, "out": tmp_path / "w1"})]
    assert main(argv) == 0
    capsys.readouterr()
    w1, w2 = (tmp_path / w / "protonet" / "last.safetensors" for w in ("w1", "w2"))
    assert load_checkpoint(w2).metadata["step"] == 2
    _assert_same_history(_history(w2), _history(w1))
    assert load_learner(w2, expect_learner="protonet").n_way == 3
