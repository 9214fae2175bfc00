"""Benchmark of distributed meta-training: episodes/s at 1 rank × 2 threads vs 2 ranks × 1 thread.

Setting (issue 7): Conv4-64, 5-way 5-shot 15-query, 28 px, meta-batch 4, 5 inner steps, Adam; the
real ``training.meta_train`` (2 ranks: launched with ``torchrun --standalone``, gloo on loopback,
one gradient all-reduce per step). Every configuration runs in its own process(es); the
configurations of one learner alternate over ``--repeats`` rounds; the median and the best round
are reported, with every round and the load average, because the machine is shared (a 2-thread
process suffers most when another process takes a core). ``1 × 1`` is the per-episode compute baseline of the
scaling model; the 2-rank workers also time the all-reduce of the parameter vector alone.

Usage::

    .venv/bin/python bench/bench_distributed.py                       # fomaml and protonet
    .venv/bin/python bench/bench_distributed.py --learners protonet --iters 5 --json out.json

Figures are printed, never asserted (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GRADIENT_BASED = ("maml", "fomaml", "metasgd", "anil")
CONFIGS = [("1 rank × 2 threads", 1, 2), ("2 ranks × 1 thread", 2, 1), ("1 rank × 1 thread", 1, 1)]


# ----------------------------------------------------------------------------- worker side (one rank)
def worker(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    import torch.distributed as dist

    from medmeta_lib.data.collection import ImageCollection
    from medmeta_lib.data.episodes import EpisodeSampler
    from medmeta_lib.training.distributed import distributed_session
    from medmeta_lib.training.learner_io import build_learner
    from medmeta_lib.training.meta_training import MetaTrainConfig, meta_train

    with distributed_session(timeout_s=600) as (rank, world):
        g = torch.Generator().manual_seed(0)
        n_classes, per_class, size = 20, 40, args.size
        col = ImageCollection(
            images=torch.rand(n_classes * per_class, 1, size, size, generator=g),
            labels=torch.arange(n_classes * per_class) % n_classes,
            class_names=tuple(f"c{i}" for i in range(n_classes)),
            source="bench",
        )
        sampler = EpisodeSampler(col, n_way=args.n_way, k_shot=args.k_shot, q_query=args.q_query, seed=0)
        kw = {"inner_steps": args.inner_steps} if args.name in GRADIENT_BASED else {}
        learner = build_learner(
            args.name,
            backbone_kwargs={"hidden": args.hidden},
            n_way=args.n_way,
            in_channels=col.channels,
            learner_kwargs=kw,
        )
        steps = args.warmup + args.iters
        cfg = MetaTrainConfig(steps=steps, meta_batch=args.meta_batch, val_every=0, checkpoint_every=0, seed=0)
        res = meta_train(learner, sampler, config=cfg, progress=False)
        stamps = [0.0] + [r["time"] for r in res.history]
        step_s = [b - a for a, b in itertools.pairwise(stamps)][args.warmup :]
        n_params = sum(p.numel() for p in learner.parameters())
        comm_ms = None
        if world > 1:
            flat = torch.zeros(n_params)
            times = []
            for _ in range(25):
                dist.barrier()
                t0 = time.perf_counter()
                dist.all_reduce(flat)
                times.append((time.perf_counter() - t0) * 1000)
            comm_ms = statistics.median(times[5:])
        if rank == 0:
            out = {
                "learner": args.name,
                "world": world,
                "threads": args.threads,
                "step_ms": statistics.median(step_s) * 1000,
                "params": n_params,
                "allreduce_ms": comm_ms,
            }
            print("RESULT " + json.dumps(out), flush=True)


# ----------------------------------------------------------------------------- driver side
def run_config(args: argparse.Namespace, name: str, world: int, threads: int) -> dict:
    tail = [__file__, "--worker", "--name", name, "--threads", str(threads)]
    for key in ("hidden", "size", "n_way", "k_shot", "q_query", "meta_batch", "inner_steps", "warmup", "iters"):
        tail += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if world == 1:
        cmd = [sys.executable, *tail]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}", *tail]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--name", default="fomaml", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--learners", default="fomaml,protonet")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, default=5)
    p.add_argument("--q-query", type=int, default=15)
    p.add_argument("--meta-batch", type=int, default=4)
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds per learner")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0

    load_before = os.getloadavg()
    print(
        f"# bench_distributed: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Conv4-{args.hidden}, {args.n_way}-way {args.k_shot}-shot {args.q_query}-query, {args.size} px, "
        f"meta-batch {args.meta_batch}, {args.inner_steps} inner steps; load average before "
        f"{', '.join(f'{x:.2f}' for x in load_before)}",
        flush=True,
    )
    rows = []
    for name in [n for n in args.learners.split(",") if n]:
        runs: dict[str, list[dict]] = {label: [] for label, _, _ in CONFIGS}
        for r in range(args.repeats):
            order = CONFIGS if r % 2 == 0 else CONFIGS[::-1]  # alternate against drift of the shared load
            for label, world, threads in order:
                runs[label].append(run_config(args, name, world, threads))
                print(f"  {name} {label}: {runs[label][-1]['step_ms']:.0f} ms/step", flush=True)
        base = statistics.median(x["step_ms"] for x in runs[CONFIGS[0][0]])
        base_best = min(x["step_ms"] for x in runs[CONFIGS[0][0]])
        for label, world, threads in CONFIGS:
            all_ms = [x["step_ms"] for x in runs[label]]
            ms, best = statistics.median(all_ms), min(all_ms)
            comm = [x["allreduce_ms"] for x in runs[label] if x["allreduce_ms"] is not None]
            rows.append(
                {
                    "learner": name,
                    "config": label,
                    "world": world,
                    "threads": threads,
                    "step_ms": ms,
                    "best_ms": best,
                    "rounds_ms": all_ms,
                    "episodes_per_s": args.meta_batch / ms * 1000,
                    "best_episodes_per_s": args.meta_batch / best * 1000,
                    "vs_1x2": base / ms,
                    "best_vs_1x2": base_best / best,
                    "params": runs[label][0]["params"],
                    "allreduce_ms": statistics.median(comm) if comm else None,
                }
            )
    load_after = os.getloadavg()
    print(
        "\n| learner | configuration | ms / meta-step, median (best) | episodes / s, median (best) "
        "| vs 1 × 2, median (best) | every round, ms | all-reduce of θ |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        comm = f"{r['allreduce_ms']:.2f} ms ({r['params'] * 4 / 1e6:.2f} MB)" if r["allreduce_ms"] else ""
        print(
            f"| {r['learner']} | {r['config']} | {r['step_ms']:.0f} ({r['best_ms']:.0f}) | "
            f"{r['episodes_per_s']:.2f} ({r['best_episodes_per_s']:.2f}) | "
            f"{r['vs_1x2']:.2f}× ({r['best_vs_1x2']:.2f}×) | "
            f"{', '.join(f'{x:.0f}' for x in r['rounds_ms'])} | {comm} |"
        )
    print(f"\nload average after: {', '.join(f'{x:.2f}' for x in load_after)}")
    for name in {r["learner"] for r in rows}:
        one = next(r for r in rows if r["learner"] == name and r["config"] == CONFIGS[2][0])
        two = next(r for r in rows if r["learner"] == name and r["world"] == 2)
        per_ep = one["best_ms"] / args.meta_batch
        print(
            f"scaling model, {name}: compute {per_ep:.0f} ms per episode per rank (1 thread), all-reduce of "
            f"{two['params'] * 4 / 1e6:.2f} MB {two['allreduce_ms']:.2f} ms on loopback; "
            f"t_step(W) ≈ {per_ep:.0f} ms · {args.meta_batch}/W + t_allreduce(W)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"load_before": load_before, "load_after": load_after, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
