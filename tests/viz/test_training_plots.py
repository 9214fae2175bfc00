"""Training and results views (``medmeta_lib.viz.training_plots``): the site-invariance remedy figure."""

from __future__ import annotations

import pytest

from medmeta_lib.viz.training_plots import (
    label_efficiency_figure,
    label_efficiency_matplotlib,
    results_table_figure,
    site_remedy_figure,
)


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


def test_both_label_efficiency_figures_order_labels_per_class_with_all_last() -> None:
    import matplotlib.pyplot as plt

    points = ((None, 0.3), (10, 0.2), (1, 0.0))  # "all" first: the figures must sort
    rows = [{"encoder": e, "k_per_class": k, "acc_mean": m0 + d, "acc_ci95": 0.01}
            for e, m0 in (("ssl", 0.5), ("raw", 0.3)) for k, d in points]  # fmt: skip
    fig = label_efficiency_figure(rows)
    assert [(t.name, tuple(t.x), tuple(t.y)) for t in fig.data] == [
        ("ssl", ("1", "10", "all"), pytest.approx((0.5, 0.7, 0.8))),
        ("raw", ("1", "10", "all"), pytest.approx((0.3, 0.5, 0.6))),
    ]
    static = label_efficiency_matplotlib(rows)
    ax = static.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "10", "all"]
    assert [list(c.lines[0].get_ydata()) for c in ax.containers] == [pytest.approx([0.5, 0.7, 0.8]),
                                                                  pytest.approx([0.3, 0.5, 0.6])]  # fmt: skip
    plt.close(static)


def test_results_table_shows_a_result_without_an_interval() -> None:
    res = {
        "scratch": {"acc_mean": 0.61, "acc_ci95": None, "episodes": 1},
        "protonet": {"acc_mean": 0.7, "acc_ci95": 0.02},
    }
    assert list(results_table_figure(res).data[0].cells.values[1]) == ["0.610", "0.700 ± 0.020"]


def test_results_bars_mark_chance_when_asked() -> None:
    """``chance`` draws what guessing scores (1 / N) on both the interactive and the static bars."""
    import matplotlib.pyplot as plt

    from medmeta_lib.viz.training_plots import results_bar_figure, results_bar_matplotlib

    res = {"protonet": {"acc_mean": 0.5, "acc_ci95": 0.01}, "maml": {"acc_mean": 0.46, "acc_ci95": 0.01}}
    assert not results_bar_figure(res).layout.shapes
    fig = results_bar_figure(res, chance=1 / 5)
    assert [s.y0 for s in fig.layout.shapes] == [pytest.approx(0.2)]
    assert fig.layout.annotations[0].text == "chance 0.20"
    static = results_bar_matplotlib(res, chance=1 / 5)
    (line,) = [ln for ln in static.axes[0].get_lines() if ln.get_linestyle() == ":"]  # not the error bars' caps
    assert list(line.get_ydata()) == [pytest.approx(0.2)] * 2 and line.get_label() == "chance 0.20"
    plt.close(static)
    assert [ln for ln in results_bar_matplotlib(res).axes[0].get_lines() if ln.get_linestyle() == ":"] == []
    plt.close("all")
