"""Training and results views (``medmeta_lib.viz.training_plots``): the site-invariance remedy figure."""

from __future__ import annotations

import pytest

from medmeta_lib.viz.training_plots import site_remedy_figure


def _result() -> dict:
    per = {"training_sites": {"acc": 0.6, "ci95": 0.02}, "held_out": {"acc": 0.55, "ci95": 0.03},
           "held_out_remote_labels": {"acc": 0.45, "ci95": 0.03}}  # fmt: skip
    better = {p: {"acc": v["acc"] + 0.05, "ci95": v["ci95"]} for p, v in per.items()}
    diff = {p: {"mean": 0.05, "ci95": 0.01, "episodes": 20} for p in per}
    return {"held_out_site": "hospital_D", "learner": "protonet", "encoders": {"plain": per, "site_invariant": better},
            "difference": diff}  # fmt: skip


def test_remedy_figure_groups_encoders_by_protocol_with_intervals_and_paired_differences() -> None:
    fig = site_remedy_figure(_result())
    assert [t.name for t in fig.data] == ["plain pretraining", "site-invariant pretraining"]
    assert list(fig.data[1].y) == pytest.approx([0.65, 0.6, 0.5]) and list(fig.data[0].error_y.array) == [
        0.02,
        0.03,
        0.03,
    ]
    assert len(fig.data[0].x) == 3 and "labels from" in fig.data[0].x[2]
    assert [a.text for a in fig.layout.annotations] == ["Δ +0.050 ± 0.010"] * 3
    assert "hospital_D" in fig.layout.title.text
