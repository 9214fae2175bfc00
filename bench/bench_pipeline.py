"""Wall time and peak memory of `medmeta run`: the default run (target <= 20 min, <= 4 GB) and --smoke (<= 3 min).

Runs ``medmeta run`` as a subprocess and samples, every 0.25 s, the resident memory of the whole
process tree (the runner and the notebook kernel it starts; ``/proc/<pid>/status`` VmRSS summed over
all descendants), so the peak counts both processes at once. Per-notebook times come from the
runner's own log lines. Linux only (reads /proc).

Run (the figures in BENCHMARKS.md came from these commands, on an otherwise idle machine)::

    .venv/bin/python bench/bench_pipeline.py                # the default run (make run)
    .venv/bin/python bench/bench_pipeline.py --smoke
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def tree_rss_mb(root: int) -> float:
    """Resident memory of ``root`` and all its descendants, in MiB."""
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack += _children(pid)
        try:
            with open(f"/proc/{pid}/status") as f:
                m = re.search(r"VmRSS:\s+(\d+) kB", f.read())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total / 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out", default=None, help="run directory (default: a temporary one)")
    a = p.parse_args()
    medmeta = Path(sys.executable).parent / "medmeta"
    out = a.out or tempfile.mkdtemp(prefix="medmeta-bench-run-")
    cmd = [str(medmeta), "run", "--out", out, "--no-progress", *(["--smoke"] if a.smoke else [])]
    print(f"$ {' '.join(cmd)}\nload average before: {os.getloadavg()}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []

    def pump() -> None:  # the runner's log, echoed as it comes
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("[medmeta]"):
                print(line, end="", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, tree_rss_mb(proc.pid))
        time.sleep(0.25)
    reader.join(timeout=10)
    wall = time.perf_counter() - t0
    log = "".join(lines)
    times = re.findall(r"\[medmeta\] (\S+) done in (\d+) s", log)
    print("\n| notebook | seconds |\n|---|---|")
    for stem, s in times:
        print(f"| {stem} | {s} |")
    print(f"\nexit {proc.returncode}; wall {wall / 60:.1f} min; peak memory of runner + kernel {peak / 1024:.2f} GiB")
    print(f"load average after: {os.getloadavg()}; run directory {out}")
    if proc.returncode:
        print(log[-3000:])
    return proc.returncode


if __name__ == "__main__":
    raise SystemExit(main())
