"""Embedding trajectory figure: one frame per step, fixed axes, prototypes where the projection puts them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.learners import create_learner
from medmeta_lib.models import create_backbone
from medmeta_lib.studies.adaptation import embedding_trajectory
from medmeta_lib.viz.embeddings import embedding_trajectory_figure, trajectory_figure
from tests.conftest import make_collection


@pytest.fixture(scope="module")
def adapted():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ep = EpisodeSampler(make_collection(n_classes=4, per_class=12, size=16), 3, 2, 3, seed=0).sample()
    m = create_learner("maml", create_backbone("conv4", hidden=8), n_way=3)
    _, tr = m.adapt(ep.support_x, ep.support_y, steps=4, query_x=ep.query_x, query_y=ep.query_y, record_embeddings=True)
    torch.set_num_threads(n)
    return ep, tr


def test_one_frame_per_step_with_slider(adapted):
    ep, tr = adapted
    fig = embedding_trajectory_figure(tr, ep.support_y, ep.query_y, class_names=["x/a", "x/b", "x/c"])
    assert len(fig.frames) == 4 + 1
    assert [f.name for f in fig.frames] == ["0", "1", "2", "3", "4"]
    assert len(fig.layout.sliders[0].steps) == 5 and fig.layout.sliders[0].active == 0
    n = len(fig.frames[0].data)
    assert n == 3 * 4 + 1 and all(len(f.data) == n for f in fig.frames)  # per class: support, query, trail, star
    assert [t.name for t in fig.data if t.showlegend is not False][:3] == ["a", "b", "c"]
    assert fig.layout.xaxis.range is not None  # fixed axes: the view does not jump between frames
    assert "step 4" in fig.frames[4].layout.title.text


def test_frames_show_the_projected_points(adapted):
    ep, tr = adapted
    traj = embedding_trajectory(tr, ep.support_y, ep.query_y)
    fig = trajectory_figure(traj, step=3)
    assert fig.layout.sliders[0].active == 3
    for s in (0, 3):
        data = fig.frames[s].data
        for c in range(3):
            sup, _, trail, star = data[4 * c : 4 * c + 4]
            np.testing.assert_allclose(np.c_[sup.x, sup.y], traj["support"][s][traj["support_y"] == c])
            np.testing.assert_allclose([star.x[0], star.y[0]], traj["prototypes"][s, c])
            assert len(trail.x) == s + 1  # where the prototype has been so far
        wrong = data[-1]
        assert len(wrong.x) == int((traj["query_pred"][s] != traj["query_y"]).sum())


def test_static_view_and_errors(adapted):
    ep, tr = adapted
    traj = embedding_trajectory(tr, ep.support_y, ep.query_y)
    fig = trajectory_figure(traj, step=2, animate=False)
    assert not fig.frames and "step 2" in fig.layout.title.text
    with pytest.raises(ValueError, match="not in the trajectory"):
        trajectory_figure(traj, step=7)
    with pytest.raises(ValueError, match="class_names"):
        trajectory_figure(traj, class_names=["only-one"])
    support_only = trajectory_figure(embedding_trajectory(tr, ep.support_y))
    assert len(support_only.frames) == 5
