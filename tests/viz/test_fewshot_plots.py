"""The ``medmeta fewshot`` summary figure: one bar per method and metric, the floors it is read against."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from medmeta_lib.viz.fewshot_plots import fewshot_summary_figure


def _result(two_classes: bool) -> dict:
    def r(v: float) -> dict:
        out = {"acc_mean": v, "acc_lo95": v - 0.02, "acc_hi95": v + 0.02, "bal_acc_mean": v - 0.01}
        return {**out, **({"auc_mean": v + 0.05} if two_classes else {})}

    return {
        "results": {"simclr_protonet": r(0.84), "raw_pixels_probe": r(0.80)},
        "best": "simclr_protonet",
        "recipe": "simclr_protonet",
        "majority_rate": 0.625,
        "classes": ["normal", "pneumonia"] if two_classes else ["a", "b", "c"],
        "k_shot": 10,
        "draws": 100,
        "test_images": 624,
        "settings": {"head": "cl2_probe", "seed": 3, "meta_members": 3},
        "meta_train": {"seeds": [3, 4, 5]},
    }


@pytest.mark.parametrize("two_classes", [True, False])
def test_bars_floors_and_title(two_classes: bool) -> None:
    fig = fewshot_summary_figure(_result(two_classes))
    ax = fig.axes[0]
    n_metrics = 3 if two_classes else 2  # no AUC beyond two classes
    assert len(ax.patches) == 2 * n_metrics
    assert [t.get_text() for t in ax.get_xticklabels()] == ["accuracy", "balanced accuracy", "AUC"][:n_metrics]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "simclr_protonet (best)" in labels and "majority class 0.625" in labels and labels.count("chance") == 1
    chance_y = sorted(float(c.get_segments()[0][0][1]) for c in ax.collections if c.get_linestyle()[0][1])
    # majority class on accuracy; chance on balanced accuracy (1 / classes) and on AUC (0.5, two classes only)
    assert chance_y == pytest.approx([0.5, 0.5, 0.625] if two_classes else [1 / 3, 0.625])
    assert "recipe: simclr_protonet" in ax.get_title() and "cl2_probe" in ax.get_title()
    assert "one training seed (3)" in ax.get_title()
    assert "mean of 3 ProtoNets, meta-training seeds [3, 4, 5]" in ax.get_title()
    assert "the intervals do not cover a change of seed" in ax.get_title()
    plt.close(fig)


def test_each_class_recall_gets_a_group_up_to_four_classes() -> None:
    result = _result(True)
    for r in result["results"].values():
        r["recall_per_class"] = {"normal": {"mean": 0.9, "lo95": 0.85, "hi95": 0.95}, "pneumonia": {"mean": 0.8}}
    fig = fewshot_summary_figure(result)
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert ticks == ["accuracy", "balanced accuracy", "AUC", "recall:\nnormal", "recall:\npneumonia"]
    assert len(ax.patches) == 2 * 5 and sorted({round(p.get_height(), 3) for p in ax.patches})[-1] == 0.9
    plt.close(fig)
    many = _result(False)
    many["classes"] = list("abcde")
    for r in many["results"].values():
        r["recall_per_class"] = {c: {"mean": 0.5} for c in "abcde"}
    fig = fewshot_summary_figure(many)
    assert not any("recall" in t.get_text() for t in fig.axes[0].get_xticklabels())  # five classes: JSON only
    plt.close(fig)


def test_a_single_protonet_is_not_called_an_ensemble() -> None:
    result = _result(True)
    result["settings"]["meta_members"], result["meta_train"]["seeds"] = 1, [3]
    fig = fewshot_summary_figure(result)
    assert "mean of" not in fig.axes[0].get_title()
    assert "another seed can move the bars by more than the intervals" in fig.axes[0].get_title()
    plt.close(fig)


def test_the_probe_mix_is_named_in_the_title() -> None:
    result = _result(True)
    result["settings"]["mix_probe"] = True
    fig = fewshot_summary_figure(result)
    title = fig.axes[0].get_title()
    assert "(mean of 3 ProtoNets, meta-training seeds [3, 4, 5], then 1:1 with the probe head)" in title
    plt.close(fig)
    result["settings"]["tta_views"] = 8  # the probe's test-time views are named too
    title = fewshot_summary_figure(result).axes[0].get_title()
    assert "then 1:1 with the probe head on features averaged over 8 fixed views)" in title
    assert "pseudo-labelled" not in title
    result["settings"]["self_train"] = 100  # self-training (K <= 2) is named on a line of its own
    title = fewshot_summary_figure(result).axes[0].get_title()
    assert "views),\nrefitted once with 100 pseudo-labelled train images per class (self-training)" in title
    plt.close("all")


def test_a_single_protonet_with_the_probe_does_not_claim_seed_averaging() -> None:
    result = _result(True)
    result["settings"].update(meta_members=1, mix_probe=True)
    result["meta_train"]["seeds"] = [3]
    title = fewshot_summary_figure(result).axes[0].get_title()
    assert "(a ProtoNet, then 1:1 with the probe head)" in title and "mean of" not in title
    assert "another seed can move the bars by more than the intervals" in title
    plt.close("all")


def test_the_footer_gives_the_command_and_the_code_when_the_result_has_them() -> None:
    fig = fewshot_summary_figure(_result(True))
    assert fig.texts == []  # a study's result: no command to give
    plt.close(fig)
    result = {
        **_result(True),
        "command": "medmeta fewshot --data d.npz " + "--flag value " * 20,
        "code": "medmeta_lib 9",
    }
    fig = fewshot_summary_figure(result)
    (footer,) = fig.texts
    text = footer.get_text()
    assert text.startswith("reproduce: medmeta fewshot --data d.npz") and text.endswith("with medmeta_lib 9")
    assert text.replace("\n  ", " ").count("--flag value") == 20  # wrapped, nothing lost
    assert fig.axes[0].get_position().y0 > 0.05 * (text.count("\n") + 1)  # the axes make room for it
    plt.close(fig)
