"""The summary figure of ``medmeta fewshot``: every method's metrics and each class's recall, with intervals."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any

__all__ = ["fewshot_summary_figure"]

_METRICS = (("acc", "accuracy"), ("bal_acc", "balanced accuracy"), ("auc", "AUC"))
#: each class's recall gets its own group up to this many classes (two: specificity and sensitivity)
_MAX_RECALL_GROUPS = 4


def _stat(r: Mapping[str, Any], metric: str) -> tuple[float, float, float] | None:
    """``(mean, lo95, hi95)`` of a metric in one method's row (``recall: NAME``: that class's recall)."""
    if metric.startswith("recall: "):
        st = (r.get("recall_per_class") or {}).get(metric.removeprefix("recall: "))
        return None if st is None else (st["mean"], st.get("lo95", st["mean"]), st.get("hi95", st["mean"]))
    if f"{metric}_mean" not in r:
        return None
    m = r[f"{metric}_mean"]
    return m, r.get(f"{metric}_lo95", m), r.get(f"{metric}_hi95", m)


def fewshot_summary_figure(result: Mapping[str, Any], *, title: str | None = None) -> Any:
    """Grouped bars (one group per metric, one bar per method) with the draw-and-test-image 95% intervals.

    The groups are accuracy, balanced accuracy, AUC (two classes) and, up to four classes, each class's recall:
    the two halves of balanced accuracy, which show which class a method misses (specificity and sensitivity
    when the second class is the finding).

    The majority-class rate is drawn as a dashed line on the accuracy group: an accuracy below it is no
    better than always predicting the most frequent class. Dotted lines mark chance on balanced accuracy
    (1 / classes) and AUC (0.5). The title names the training seed and, for the recipe's ensemble, its
    members' meta-training seeds: the intervals cover the label draws and the test images, not these seeds,
    which can matter more for a single ProtoNet (BENCHMARKS.md sections 11 and 12).

    A footer gives ``result["command"]`` (and ``result["code"]``), when ``medmeta fewshot`` has added them.

    Args:
        result: :func:`~medmeta_lib.studies.fewshot.fewshot_study`'s output.
        title: figure title (default: K, draws and the number of test images).

    Example:
        >>> fig = fewshot_summary_figure(fewshot_study(train, test, k_shot=10))  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    import numpy as np

    methods = list(result["results"])
    if not methods:
        raise ValueError("fewshot_summary_figure: the result has no methods")
    classes = list(result.get("classes", ()))
    recalls = [(f"recall: {c}", f"recall:\n{c}") for c in classes] if len(classes) <= _MAX_RECALL_GROUPS else []
    metrics = [(m, label) for m, label in [*_METRICS, *recalls] if all(_stat(result["results"][n], m) for n in methods)]
    fig, ax = plt.subplots(figsize=(8.5 + 0.8 * max(len(metrics) - 3, 0), 3.4))
    width = 0.8 / len(methods)
    for i, name in enumerate(methods):
        r = result["results"][name]
        x = np.arange(len(metrics)) + (i - (len(methods) - 1) / 2) * width
        mean, lo, hi = np.array([_stat(r, m) for m, _ in metrics]).T
        best = name == result.get("best")
        ax.bar(x, mean, width * 0.92, label=name + (" (best)" if best else ""), edgecolor="black" if best else None)
        ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], fmt="none", ecolor="black", capsize=2, lw=0.8)
    rate = result.get("majority_rate")
    if rate is not None:
        ax.hlines(rate, -0.45, 0.45, colors="grey", linestyles="dashed", label=f"majority class {rate:.3f}")
    n_classes = len(classes)
    chance = {"auc": 0.5, **({"bal_acc": 1 / n_classes} if n_classes else {})}  # what guessing scores
    floors = [(i, chance[m]) for i, (m, _) in enumerate(metrics) if m in chance]
    for j, (i, y) in enumerate(floors):
        ax.hlines(y, i - 0.45, i + 0.45, colors="grey", linestyles="dotted", label="_nolegend_" if j else "chance")
    ax.set_xticks(np.arange(len(metrics)), [label for _, label in metrics])
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    settings = result.get("settings", {})
    head, seed, members = settings.get("head"), settings.get("seed"), settings.get("meta_members", 0)
    seeds = (result.get("meta_train") or {}).get("seeds", [])
    averaged = members > 1 and bool(seeds)  # several ProtoNets: their mean damps the meta-training seed
    ensemble = f"mean of {members} ProtoNets, meta-training seeds {seeds}" if averaged else ""
    if settings.get("mix_probe"):
        views = settings.get("tta_views", 0)
        on = f" on features averaged over {views} fixed views" if views else ""
        ensemble = f"{ensemble or 'a ProtoNet'}, then 1:1 with the probe head{on}"
    ensemble = f" ({ensemble})" if ensemble else ""
    if settings.get("self_train"):  # K <= 2 by default: the recipe refitted with pseudo-labelled train images
        ensemble += (
            f",\nrefitted once with {settings['self_train']} pseudo-labelled train images per class (self-training)"
        )
    ax.set_title(
        title
        or f"K = {result['k_shot']} labelled images per class, {result['draws']} label draws, "
        f"{result['test_images']} test images (95% intervals over draws and test images)\n"
        f"recipe: {result.get('recipe', '?')}{ensemble}"
        + (f"\n*_probe rows: the {head} head" if head else "")
        + (
            f"; one training seed ({seed}): "
            + (
                "the intervals do not cover a change of seed (averaging the ProtoNets damps it)"
                if averaged
                else "another seed can move the bars by more than the intervals"
            )
            if seed is not None
            else ""
        ),
        fontsize=8,
    )
    fig.tight_layout()
    if result.get("command"):  # the figure carries the command that redraws it (and the code it ran)
        footer = textwrap.fill(f"reproduce: {result['command']}", width=150, subsequent_indent="  ")
        footer += f"\n  with {result['code']}" if result.get("code") else ""
        lines = footer.count("\n") + 1
        fig.subplots_adjust(bottom=fig.subplotpars.bottom + 0.045 * lines)
        fig.text(0.01, 0.01, footer, fontsize=6, family="monospace", color="0.35", va="bottom")
    return fig
