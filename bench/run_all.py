"""Run every benchmark script in bench/ one after another (``make bench``); figures go to BENCHMARKS.md by hand.

Each script prints its own table; run them on an otherwise idle machine (ratios within one run
are the reliable figures on a noisy machine).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

SCRIPTS = [
    "batch_dependence.py",
    "bench_episodes.py",
    "bench_medsynth.py",
    "raw_pixel_medsynth.py",
    "bench_ssl.py",
    "bench_learners.py",
    "adaptation_speed.py",
    "bench_distributed.py",
    "ssl_site_invariance.py",
    "medsynth_results.py",
    "medsynth_fine_ceiling.py",
    "pneumonia_ssl_probe.py",
    "pneumonia_fewshot.py",
    "bench_pipeline.py",
]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=SCRIPTS, metavar="SCRIPT", help=f"run only these of: {SCRIPTS}")
    p.add_argument("--list", action="store_true", help="print the scripts in order and exit")
    a = p.parse_args(argv)
    if a.list:
        print("\n".join(SCRIPTS))
        return 0
    here = Path(__file__).resolve().parent
    failed = []
    for name in a.only or SCRIPTS:
        path = here / name
        if not path.exists():
            print(f"## {name}: not present, skipped")
            continue
        print(f"## {name}", flush=True)
        if subprocess.call([sys.executable, str(path)]) != 0:
            failed.append(name)
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
