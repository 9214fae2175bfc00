"""Benchmark of the learners: meta-iteration time, evaluation time and peak memory.

Setting (issue 4): Conv4-64, 5-way 5-shot 15-query, 28 px, 4 tasks per meta-batch, 5 inner steps,
Adam outer optimiser. Every learner runs in its own subprocess, so its peak RSS
(``resource.getrusage(...).ru_maxrss``) is its own. For second-order MAML and FOMAML a plain
autograd loop reference (learn2learn-style: the ``nn.Module`` is cloned with non-leaf parameter
tensors and updated with ``torch.autograd.grad``) runs interleaved with the learner in one process:
the gradients are asserted equal, and the time ratio is measured under the same load.

Usage::

    .venv/bin/python bench/bench_learners.py                 # all learners, markdown table
    .venv/bin/python bench/bench_learners.py --learners maml,anil --iters 5 --json out.json

Figures are printed, never asserted (the machine is shared; see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ALL = ["maml", "fomaml", "metasgd", "anil", "protonet", "weightgen", "baseline", "baseline++", "scratch"]
WITH_REFERENCE = ["maml", "fomaml"]


def rss_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


# ----------------------------------------------------------------------------- worker side


def setup(args):
    import torch

    from medmeta_lib.data.episodes import Episode
    from medmeta_lib.models.backbones import create_backbone

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    n, k, q, size = args.n_way, args.k_shot, args.q_query, args.size
    episodes = []
    for t in range(args.tasks):
        sy = torch.arange(n).repeat_interleave(k)
        qy = torch.arange(n).repeat_interleave(q)
        classes = tuple(range(t * n, (t + 1) * n))
        episodes.append(
            Episode(
                torch.rand(n * k, 1, size, size, generator=g),
                sy,
                torch.rand(n * q, 1, size, size, generator=g),
                qy,
                classes,
                0,
                torch.zeros(n * k, dtype=torch.long),
                torch.zeros(n * q, dtype=torch.long),
                torch.arange(n * k),
                torch.arange(n * q),
            )
        )
    backbone = create_backbone("conv4", hidden=args.hidden)
    return torch, backbone, episodes


def make_learner(args, name, backbone):
    from medmeta_lib.learners import create_learner

    kw = {}
    if name in ("maml", "fomaml", "metasgd", "anil"):
        kw = {"inner_steps": args.inner_steps, "inner_lr": 0.01}
    if name.startswith("baseline"):
        kw = {"num_train_classes": args.n_way * args.tasks}
    return create_learner(name, backbone, n_way=args.n_way, **kw)


def clone_with(module, tensors):
    """learn2learn-style clone: the same modules holding the given (non-leaf) tensors as parameters."""
    clone = copy.copy(module)
    clone._parameters = {k: tensors[k] for k in module._parameters}
    clone._modules = {
        name: clone_with(child, {k[len(name) + 1 :]: v for k, v in tensors.items() if k.startswith(name + ".")})
        for name, child in module._modules.items()
    }
    return clone


def reference_meta_step(torch, backbone, episodes, optimizer, *, steps, lr, first_order, n_way):
    """Plain autograd loop MAML/FOMAML with a zero-initialised head (as the library's default).

    Inductive like the library: the query is normalised with the support's batch statistics at the
    adapted weights (one more support forward of the same clone, its statistics reused for the query).
    """
    import torch.nn.functional as F

    from medmeta_lib.models.task_norm import context_forward

    optimizer.zero_grad(set_to_none=True)
    params = dict(backbone.named_parameters())
    d = backbone.out_features
    for ep in episodes:
        fast = dict(params)
        w = torch.zeros(n_way, d, requires_grad=True)
        b = torch.zeros(n_way, requires_grad=True)
        for _ in range(steps):
            logits = F.linear(clone_with(backbone, fast)(ep.support_x), w, b)
            grads = torch.autograd.grad(
                F.cross_entropy(logits, ep.support_y), [*fast.values(), w, b], create_graph=not first_order
            )
            fast = {key: v - lr * gi for (key, v), gi in zip(fast.items(), grads)}
            w, b = w - lr * grads[-2], b - lr * grads[-1]
        _, query = context_forward(clone_with(backbone, fast), ep.support_x, ep.query_x)
        loss = F.cross_entropy(F.linear(query, w, b), ep.query_y)
        (loss / len(episodes)).backward()
    optimizer.step()


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


def worker(args) -> dict:
    torch, backbone, episodes = setup(args)
    name = args.name
    out: dict = {"learner": name, "mode": args.worker}
    if args.worker == "reference":
        opt = torch.optim.Adam(backbone.parameters(), lr=1e-3)
        base = rss_peak_mb()

        def step():
            reference_meta_step(
                torch,
                backbone,
                episodes,
                opt,
                steps=args.inner_steps,
                lr=0.01,
                first_order=name == "fomaml",
                n_way=args.n_way,
            )

        times = [timed(step) for _ in range(1 + args.mem_iters)][1:]  # for its memory; the time ratio is "pair"
        out.update(meta_ms=statistics.median(times), times=times, rss_mb=rss_peak_mb(), rss_base_mb=base)
        return out

    learner = make_learner(args, name, backbone)
    if args.worker == "pair":
        ref_backbone = copy.deepcopy(backbone)
        ref_opt = torch.optim.Adam(ref_backbone.parameters(), lr=1e-3)
        opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
        # identical gradients (same weights, before any step)
        zero = torch.optim.SGD(learner.parameters(), lr=0.0)
        zero_ref = torch.optim.SGD(ref_backbone.parameters(), lr=0.0)
        learner.meta_step(episodes, zero)
        kw = {"steps": args.inner_steps, "lr": 0.01, "first_order": name == "fomaml", "n_way": args.n_way}
        reference_meta_step(torch, ref_backbone, episodes, zero_ref, **kw)
        g1 = torch.cat([p.grad.reshape(-1) for p in learner.backbone.parameters()])
        g2 = torch.cat([p.grad.reshape(-1) for p in ref_backbone.parameters()])
        rel = float((g1 - g2).norm() / g2.norm())
        assert rel < 1e-5, f"{name}: gradient differs from the reference (relative error {rel:.2e})"
        ours, ref = [], []
        for i in range(args.warmup + args.iters):
            pair = [
                ("ours", lambda: learner.meta_step(episodes, opt)),
                ("ref", lambda: reference_meta_step(torch, ref_backbone, episodes, ref_opt, **kw)),
            ]
            for tag, fn in pair if i % 2 == 0 else pair[::-1]:  # alternate the order against drift
                (ours if tag == "ours" else ref).append(timed(fn))
        ours, ref = ours[args.warmup :], ref[args.warmup :]
        ratios = [a / b for a, b in zip(ours, ref)]
        out.update(
            meta_ms=statistics.median(ours),
            ref_ms=statistics.median(ref),
            ratio=statistics.median(ratios),
            grad_rel_err=rel,
        )
        return out

    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    base = rss_peak_mb()
    if learner.meta_trainable:
        times = [timed(lambda: learner.meta_step(episodes, opt)) for _ in range(args.warmup + args.iters)]
        out.update(meta_ms=statistics.median(times[args.warmup :]), times=times[args.warmup :])
    eval_times = [timed(lambda: learner.evaluate_episode(episodes[0])) for _ in range(1 + args.eval_iters)][1:]
    out.update(eval_ms=statistics.median(eval_times), rss_mb=rss_peak_mb(), rss_base_mb=base)
    return out


# ----------------------------------------------------------------------------- driver side


def run_worker(args, mode: str, name: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--name", name]
    for key in (
        "iters",
        "warmup",
        "eval_iters",
        "mem_iters",
        "threads",
        "tasks",
        "n_way",
        "k_shot",
        "q_query",
        "size",
        "hidden",
    ):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    cmd += ["--inner-steps", str(args.inner_steps)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"worker {mode}:{name} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def fmt(x, spec=".0f"):
    return "–" if x is None else format(x, spec)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--learners", default=",".join(ALL))
    p.add_argument("--iters", type=int, default=10, help="timed meta-iterations (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--eval-iters", type=int, default=3, help="timed evaluate_episode calls")
    p.add_argument("--mem-iters", type=int, default=3, help="iterations of the reference's memory-only run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tasks", type=int, default=4, help="episodes per meta-batch")
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, default=5)
    p.add_argument("--q-query", type=int, default=15)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--inner-steps", type=int, default=5)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--name", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0

    names = [n.strip() for n in args.learners.split(",") if n.strip()]
    results: dict[str, dict] = {}
    t0 = time.time()
    for name in names:
        results[name] = run_worker(args, "learner", name)
        if name in WITH_REFERENCE:
            results[name]["pair"] = run_worker(args, "pair", name)
            results[name]["reference"] = run_worker(args, "reference", name)
        print(f"# {name}: done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)

    import torch

    print(
        f"\nConv4-{args.hidden}, {args.n_way}-way {args.k_shot}-shot {args.q_query}-query, {args.size} px, "
        f"{args.tasks} tasks/meta-batch, {args.inner_steps} inner steps; torch {torch.__version__}, "
        f"{args.threads} threads, {platform.processor() or platform.machine()}, load avg "
        f"{os.getloadavg()[0]:.1f}; median of {args.iters} iterations after {args.warmup} warm-up.\n"
    )
    maml_ms = results.get("maml", {}).get("meta_ms")
    print(
        "| learner | meta-iteration (ms) | evaluate 1 episode (ms) | peak RSS (MB) | Δ RSS in loop (MB) "
        "| vs plain autograd loop (same run) | speed-up vs MAML |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        vs = ""
        if "pair" in r:
            pr, ref = r["pair"], r["reference"]
            vs = (
                f"{pr['meta_ms']:.0f} vs {pr['ref_ms']:.0f} ms: ×{pr['ratio']:.2f} "
                f"(ref peak {ref['rss_mb']:.0f} MB; grad rel. err {pr['grad_rel_err']:.1e})"
            )
        speed = ""
        if maml_ms and r.get("meta_ms") and name != "maml":
            speed = f"×{maml_ms / r['meta_ms']:.1f}"
        print(
            f"| {name} | {fmt(r.get('meta_ms'))} | {fmt(r.get('eval_ms'))} | {r['rss_mb']:.0f} | "
            f"{r['rss_mb'] - r['rss_base_mb']:.0f} | {vs} | {speed} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
