"""Paired differences between learners scored on the same fixed episodes, across result files.

``bench/medsynth_results.py`` stores every learner's per-episode test accuracies. Learners run in
separate processes (to use both cores) are scored on the same seeded episodes, so their differences can
be paired afterwards: this script merges the files and prints, per setting, the best learner minus every
other one (mean ± 95% CI over episodes).

Run::

    .venv/bin/python bench/paired_results.py bench/out/medsynth_heldout_a.json bench/out/medsynth_heldout_b.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medmeta_lib.evaluation.episodic import EvalResult, paired_episode_difference


def load_results(paths: list[Path]) -> dict[str, dict[str, EvalResult]]:
    """``{setting: {learner: EvalResult}}`` from one or more result files (same episodes checked)."""
    merged: dict[str, dict[str, EvalResult]] = {}
    seeds: dict[str, tuple] = {}
    for path in paths:
        data = json.loads(path.read_text())
        for setting, rows in data.get("results", {}).items():
            for name, row in rows.items():
                test = row["test"]
                if not test.get("per_episode_acc"):
                    raise ValueError(f"{path}: {setting}/{name} has no per-episode accuracies; rerun the benchmark")
                key = (test["settings"].get("episode_seed"), test["settings"].get("split"), test["episodes"])
                if seeds.setdefault(setting, key) != key:
                    msg = f"{path}: {setting}/{name} was scored on other episodes ({key} vs {seeds[setting]})"
                    raise ValueError(msg)
                merged.setdefault(setting, {})[name] = EvalResult(**test)
    return merged


def paired_vs_best(evals: Mapping[str, EvalResult]) -> tuple[str, dict[str, dict[str, Any]]]:
    """The best learner by mean accuracy and its paired difference against every other, best first."""
    ranked = sorted(evals, key=lambda n: evals[n].acc_mean, reverse=True)
    return ranked[0], {n: paired_episode_difference(evals[ranked[0]], evals[n]) for n in ranked[1:]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", type=Path)
    a = p.parse_args()
    for setting, evals in load_results(a.files).items():
        best, paired = paired_vs_best(evals)
        print(f"{setting}: best {best} {evals[best].acc_mean:.3f} ± {evals[best].acc_ci95:.3f}")
        for name, d in paired.items():
            print(f"  {best} - {name:10s} ({evals[name].acc_mean:.3f}): {d['mean']:+.3f} ± {d['ci95']:.3f}")


if __name__ == "__main__":
    main()
