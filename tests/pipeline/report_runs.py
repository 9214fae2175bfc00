"""A finished run's folder and its metrics, built for the report tests, and a reader of the report's tables."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["STEMS", "TableRows", "random_png", "result_row", "run_dir", "run_metrics", "table_rows"]

STEMS = ["01_data_exploration", "02_contrastive_pretraining", "03_meta_training", "04_adaptation_visualisation"]


def result_row(name: str, acc: float, ci: float, *, auc: float | None = None, transductive: bool = False) -> dict:
    """One learner's evaluation result as notebook 03 records it."""
    return {
        "learner": name,
        "episodes": 600,
        "acc_mean": acc,
        "acc_ci95": ci,
        "auc_mean": auc,
        "auc_ci95": None if auc is None else 0.031,
        "per_site": {},
        "settings": {"n_way": 5, "k_shot": 5, "transductive": transductive},
    }


def run_metrics() -> dict[str, Any]:
    """A run's metrics.json: each notebook's record, with values whose formatting the tests check."""
    return {
        STEMS[0]: {
            "headline": {"source": "synthetic", "images": 720, "classes": 3, "sites": 4, "modalities": 2},
            "summary": {"split": "train", "class_counts": {"a/normal": 10, "a/tumour": 10, "b/normal": 10}},
        },
        STEMS[1]: {
            "label_efficiency": [
                {"encoder": "random init", "k_per_class": 1, "acc_mean": 0.31, "acc_ci95": 0.02},
                {"encoder": "SimCLR", "k_per_class": 1, "acc_mean": 0.452, "acc_ci95": 0.021},
                {"encoder": "SimCLR", "k_per_class": 5, "acc_mean": 0.6, "acc_ci95": 0.03},
            ]
        },
        STEMS[2]: {
            "headline": {"best_learner": "protonet"},
            "best_vs_runner_up": {"mean": 0.032, "ci95": 0.051, "episodes": 600},
            "settings": {"n_way": 5, "k_shot": 5, "transductive": False},
            "split": "held-out modalities",
            "results": {
                "maml": result_row("maml", 0.5912, 0.038),
                "protonet": result_row("protonet", 0.6234, 0.041),
                "anil": result_row("anil", 0.4, 0.05),
            },
            "cross_site": {
                "hospital_A": {
                    "held_out_acc": 0.5,
                    "held_out_ci95": 0.03,
                    "training_sites_acc": 0.6,
                    "training_sites_ci95": 0.04,
                    "held_out_remote_labels_acc": 0.45,
                    "held_out_remote_labels_ci95": 0.03,
                }
            },
        },
        STEMS[3]: {
            "transductive": False,
            "adaptation_curves": {"maml": {"query_acc_mean": [0.2, 0.5, 0.7], "query_acc_ci95": [0.0, 0.05, 0.04]}},
            "site_transfer": {
                "rows": ["A", "B"],
                "cols": ["A", "B"],
                "acc": [[0.7, 0.5], [0.4, 0.8]],
                "ci95": [[0.1] * 2] * 2,
            },
            "site_remedy": {
                "held_out_site": "hospital_D",
                "encoders": {
                    "plain": {"held_out_remote_labels": {"acc": 0.41, "ci95": 0.02}},
                    "site_invariant": {"held_out_remote_labels": {"acc": 0.47, "ci95": 0.02}},
                },
                "difference": {"held_out_remote_labels": {"mean": 0.06, "ci95": 0.015, "episodes": 100}},
            },
        },
    }


def random_png(path: Path, seed: int = 0, size: tuple[int, int] = (120, 80)) -> None:
    """A random RGB PNG of ``size`` at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(path)


def run_dir(tmp_path: Path, stems: list[str] = STEMS, metrics: dict | None = None) -> Path:
    """A finished run's folder: each notebook's HTML, notebook and one figure, and metrics.json."""
    run = tmp_path / "run"
    for i, stem in enumerate(stems):
        (run / f"{stem}.html").parent.mkdir(parents=True, exist_ok=True)
        (run / f"{stem}.html").write_text("<html></html>")
        (run / f"{stem}.ipynb").write_text("{}")
        random_png(run / stem / "figures" / ("test_accuracy.png" if i == 2 else f"fig{i}.png"), seed=i)
    (run / "metrics.json").write_text(json.dumps(metrics if metrics is not None else run_metrics()))
    return run


class TableRows(HTMLParser):
    """Rows (lists of cell texts) of every table under the element with a given id."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target, self.depth, self.rows, self.cell = target, 0, [], None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth:
            self.depth += tag not in ("br", "img", "meta")
        elif dict(attrs).get("id") == self.target:
            self.depth = 1
        if self.depth and tag == "tr":
            self.rows.append([])
        if self.depth and tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(" ".join(self.cell.split()))
            self.cell = None
        if self.depth:
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.depth and self.cell is not None:
            self.cell += data


def table_rows(html: str, element_id: str) -> list[list[str]]:
    """The rows of the tables under ``element_id`` in ``html``."""
    p = TableRows(element_id)
    p.feed(html)
    return p.rows
