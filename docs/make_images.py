"""Regenerate the README's pictures from a run directory of ``medmeta run``.

Writes, each under 200 KB:

- ``docs/images/report.png``: the top of the run report (``index.html``) as headless Chromium shows it;
- ``docs/images/adaptation_curves.png``: notebook 04's adaptation curves (query accuracy after each
  inner step, mean ± 95% CI per learner). Notebook 04 shows them as an interactive plotly figure and
  saves no PNG, so they are drawn here from its ``metrics.json`` (a saved
  ``04_*/figures/adaptation_curves.png`` is used instead when there is one).

Usage::

    .venv/bin/medmeta run --smoke --out runs/smoke          # or any run directory
    .venv/bin/python docs/make_images.py --run runs/smoke   # --render re-renders index.html first

Needs Debian's ``chromium`` for the report picture (``--skip-report`` leaves it out).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["adaptation_png", "main", "report_png", "shrink_png"]

OUT_DIR = Path(__file__).resolve().parent / "images"
MAX_BYTES = 200_000


def shrink_png(src: Path, dst: Path, *, width: int, max_bytes: int = MAX_BYTES) -> Path:
    """Resize ``src`` to ``width`` pixels wide and save it as a palette PNG of at most ``max_bytes``.

    Fewer colours are tried until it fits (text and flat figures keep well with 64-256).

    Example:
        >>> shrink_png(Path("big.png"), Path("docs/images/small.png"), width=960)  # doctest: +SKIP
        PosixPath('docs/images/small.png')
    """
    im = Image.open(src).convert("RGB")
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
    dst.parent.mkdir(parents=True, exist_ok=True)
    for colours in (256, 128, 64, 32):
        im.quantize(colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(dst, optimize=True)
        if dst.stat().st_size <= max_bytes:
            return dst
    raise RuntimeError(f"{dst}: {dst.stat().st_size} bytes even with 32 colours; use a smaller width")


def report_png(run: Path, dst: Path, *, height: int = 1500, width: int = 1000) -> Path:
    """Screenshot the top ``height`` pixels of ``run/index.html`` (1280 px wide) with headless Chromium.

    Example:
        >>> report_png(Path("runs/smoke"), Path("docs/images/report.png"))  # doctest: +SKIP
        PosixPath('docs/images/report.png')
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium); or pass --skip-report")
    index = run / "index.html"
    if not index.exists():
        raise SystemExit(f"{index} does not exist: pass --render to write it from the run's metrics")
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
        cmd += [f"--user-data-dir={tmp}/profile", f"--screenshot={shot}", f"--window-size=1280,{height}"]
        subprocess.run([*cmd, index.resolve().as_uri()], capture_output=True, timeout=120, check=True)
        return shrink_png(shot, dst, width=width)


def _draw_curves(curves: Mapping[str, Mapping[str, Any]], png: Path, mode: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7.5, 3.6), dpi=120)
    n_way, first = 0, 0
    for name, c in curves.items():
        m = np.asarray(c["query_acc_mean"], dtype=float)
        h = np.nan_to_num(np.asarray(c.get("query_acc_ci95") or np.zeros_like(m), dtype=float))
        steps = np.asarray(c.get("steps") or range(len(m)))
        native = min(int(c.get("native_steps", steps[-1])), len(m) - 1)  # ProtoNet: one step, then carried flat
        (line,) = ax.plot(steps[: native + 1], m[: native + 1], marker="o", lw=2, label=name)
        ax.plot(steps[native:], m[native:], color=line.get_color(), lw=1.5, ls="--")
        ax.fill_between(steps, m - h, m + h, color=line.get_color(), alpha=0.12, lw=0)
        n_way, first = n_way or int(c.get("n_way") or 0), int(steps[0])
    if n_way:
        ax.axhline(1 / n_way, color="grey", ls=":", lw=1)
        ax.annotate("chance", (first, 1 / n_way), xytext=(4, -11), textcoords="offset points", fontsize=8, color="grey")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    episodes = next(iter(curves.values())).get("episodes")
    ax.set(xlabel="inner step (0 = before adaptation)", ylabel="query accuracy", ylim=(0, 1.02))
    ax.set_title(f"Adapting to new tasks ({mode}, {episodes} tasks, mean ± 95% CI)", fontsize=10)
    ax.legend(fontsize=8, ncol=2, frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def adaptation_png(run: Path, dst: Path, *, width: int = 900) -> Path:
    """Notebook 04's adaptation curves as a PNG: its saved figure if any, else drawn from its metrics.

    Example:
        >>> adaptation_png(Path("runs/smoke"), Path("docs/images/adaptation_curves.png"))  # doctest: +SKIP
        PosixPath('docs/images/adaptation_curves.png')
    """
    nb04 = sorted(p for p in run.glob("04_*") if p.is_dir())
    if not nb04:
        raise SystemExit(f"{run} has no notebook 04 folder: run the whole chain (medmeta run --smoke)")
    saved = nb04[0] / "figures" / "adaptation_curves.png"
    if saved.exists():
        return shrink_png(saved, dst, width=width)
    metrics = json.loads((nb04[0] / "metrics.json").read_text(encoding="utf-8"))
    curves = {k: v for k, v in (metrics.get("adaptation_curves") or {}).items() if v.get("query_acc_mean")}
    if not curves:
        raise SystemExit(f"{nb04[0] / 'metrics.json'} has no adaptation curves")
    mode = "transductive" if metrics.get("transductive") else "inductive"
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "curves.png"
        _draw_curves(curves, png, mode)
        return shrink_png(png, dst, width=width)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python docs/make_images.py --run RUN_DIR [--out DIR] [--render] [--skip-report]``.

    Example:
        >>> main(["--run", "runs/smoke"])  # doctest: +SKIP
        0
    """
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a run directory of `medmeta run`")
    ap.add_argument("--out", type=Path, default=OUT_DIR, help=f"where the PNGs go (default {OUT_DIR})")
    ap.add_argument("--render", action="store_true", help="re-render RUN/index.html from its metrics first")
    ap.add_argument("--skip-report", action="store_true", help="leave out the report picture (no chromium)")
    args = ap.parse_args(argv)
    run = args.run.expanduser().resolve()
    if args.render:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from medmeta_lib.pipeline.report import write_report
        from medmeta_lib.pipeline.runner import NOTEBOOKS

        merged = run / "metrics.json"
        write_report(run, [s.stem for s in NOTEBOOKS], json.loads(merged.read_text()) if merged.exists() else {})
    written = [] if args.skip_report else [report_png(run, args.out / "report.png")]
    written.append(adaptation_png(run, args.out / "adaptation_curves.png"))
    for p in written:
        print(f"{p} ({p.stat().st_size // 1000} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
