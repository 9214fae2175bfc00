"""Adaptation views return figures with the expected traces, columns and colours."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.learners import create_learner
from medmeta_lib.models import create_backbone
from medmeta_lib.studies.adaptation import adaptation_curves
from medmeta_lib.viz.adaptation_plots import (
    RIGHT,
    UNDECIDED,
    WRONG,
    adaptation_curves_figure,
    cross_site_map_figure,
    data_efficiency_figure,
    decision_grid_figure,
    pick_query_rows,
    select_steps,
    trace_figure,
)
from tests.conftest import make_collection


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def episode():
    col = make_collection(n_classes=4, per_class=12, n_sites=2, size=16)
    return EpisodeSampler(col, 3, 2, 3, seed=0).sample()


@pytest.fixture(scope="module")
def maml_trace(episode):
    torch.manual_seed(0)
    m = create_learner("maml", create_backbone("conv4", hidden=8), n_way=3)
    _, tr = m.adapt(episode.support_x, episode.support_y, steps=4, query_x=episode.query_x, query_y=episode.query_y)
    return tr


def test_adaptation_curves_figure_bands_lines_and_carried_protonet(episode):
    torch.manual_seed(0)
    learners = {
        "maml": create_learner("maml", create_backbone("conv4", hidden=8), n_way=3),
        "protonet": create_learner("protonet", create_backbone("conv4", hidden=8), n_way=3),
    }
    sampler = EpisodeSampler(make_collection(n_classes=4, per_class=12, size=16), 3, 2, 3, seed=1)
    curves = adaptation_curves(learners, sampler.fixed(3, seed=2), steps=4)
    fig = adaptation_curves_figure(curves)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["maml", "maml", "protonet", "protonet"]  # accuracy and loss panels
    assert list(lines[0].x) == [0, 1, 2, 3, 4] and list(lines[2].x) == [0, 1]  # ProtoNet's data ends at step 1
    dashed = [t for t in fig.data if t.line.dash == "dash"]
    assert len(dashed) == 2 and list(dashed[0].x) == [1, 2, 3, 4]
    assert sum(t.fill == "toself" for t in fig.data) >= 2  # CI bands
    assert any(s.y0 == pytest.approx(1 / 3) for s in fig.layout.shapes)  # chance line
    with pytest.raises(ValueError, match=r"curves is empty"):
        adaptation_curves_figure({})


def test_data_efficiency_figure():
    rows = [
        {"learner": n, "k_shot": k, "acc_mean": 0.4 + 0.02 * k, "acc_ci95": 0.03}
        for n in ("a", "b")
        for k in (1, 5, 10)
    ]
    fig = data_efficiency_figure(rows)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["a", "b"] and list(lines[0].x) == [1, 5, 10]
    assert fig.layout.xaxis.type == "log" and list(fig.layout.xaxis.tickvals) == [1, 5, 10]
    with pytest.raises(ValueError, match="auc_mean"):
        data_efficiency_figure(rows, metric="auc")


def test_decision_grid_columns_and_mistakes(episode, maml_trace):
    tr = maml_trace
    fig = decision_grid_figure(tr, episode.query_x, episode.query_y, max_images=4, class_names=["a", "b", "c"])
    axes = np.array(fig.axes).reshape(4, -1)
    assert axes.shape[1] == 5  # before + 4 steps
    rows = pick_query_rows(episode.query_y, 4)
    for r, q in enumerate(rows):
        for s in range(5):
            p = tr.query_probs[s][q]
            title = axes[r, s].title
            if float(p.max() - p.min()) < 1e-4:
                assert title.get_text().startswith("uniform") and title.get_color() == UNDECIDED
            else:
                k = int(p.argmax())
                assert title.get_text().startswith(["a", "b", "c"][k])
                assert title.get_color() == (WRONG if k != int(episode.query_y[q]) else RIGHT)
    assert axes[0, 0].get_ylabel() in ("a", "b", "c")
    plt.close(fig)
    sel = decision_grid_figure(tr, episode.query_x, episode.query_y, steps=[0, 4], max_images=2)
    assert len(sel.axes) == 4
    plt.close(sel)
    with pytest.raises(ValueError, match="not in the trace"):
        decision_grid_figure(tr, episode.query_x, episode.query_y, steps=[9])


def test_select_steps_and_rows():
    assert select_steps(3) == [0, 1, 2]
    assert select_steps(101, max_columns=5) == [0, 25, 50, 75, 100]
    assert pick_query_rows(torch.tensor([0, 0, 0, 1, 1, 1]), 3) == [0, 1, 3]


def test_trace_figure_marks_the_step(maml_trace):
    fig = trace_figure(maml_trace, step=2)
    assert {t.name for t in fig.data} == {"support", "query"} and len(fig.data) == 4
    assert [s.x0 for s in fig.layout.shapes] == [2, 2]
    assert "step 2" in fig.layout.title.text


def test_cross_site_map_figure_three_inputs():
    m = {"rows": ["A", "B"], "cols": ["A", "B"], "acc": [[0.9, 0.6], [0.5, 0.8]], "ci95": [[0.01] * 2] * 2}
    fig = cross_site_map_figure({**m, "learner": "protonet"})
    assert fig.data[0].type == "heatmap" and fig.data[0].text[0][1] == "0.60 ± 0.01"
    assert fig.layout.yaxis.autorange == "reversed" and "protonet" in fig.layout.title.text
    loso = {
        "A": {"held_out_acc": 0.5, "held_out_ci95": 0.1, "training_sites_acc": 0.8, "training_sites_ci95": 0.1},
        "B": {"held_out_acc": 0.6, "held_out_ci95": 0.1, "training_sites_acc": 0.7, "training_sites_ci95": 0.1},
    }
    f2 = cross_site_map_figure(loso)
    assert list(f2.data[0].y) == ["training sites", "held-out site, labels there"] and f2.data[0].z[1][1] == 0.6
    remote = {s: r | {"held_out_remote_labels_acc": 0.3, "held_out_remote_labels_ci95": 0.1} for s, r in loso.items()}
    f2b = cross_site_map_figure(remote)
    assert list(f2b.data[0].y)[2] == "held-out site, labels from training sites" and f2b.data[0].z[2][0] == 0.3
    f3 = cross_site_map_figure({"maml": loso, "protonet": loso})
    assert list(f3.data[0].y) == ["maml", "protonet"] and list(f3.data[0].x) == ["A", "B"]
    with pytest.raises(ValueError, match="expected"):
        cross_site_map_figure({"x": 1})
