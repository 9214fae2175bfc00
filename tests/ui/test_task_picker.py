from __future__ import annotations

from medmeta_lib.ui.task_picker import ONE_SITE, TaskPicker
from tests.conftest import make_collection


def test_picker_resamples_on_value_changes():
    col = make_collection(n_classes=6, per_class=12, n_sites=3)
    p = TaskPicker(col, n_way=5, k_shot=1, q_query=2, seed=0)
    assert p.episode is not None and p.episode.n_way == 5 and p.error is None
    assert len(p.figure.axes) == 5 * (1 + 1 + 2)
    first = p.episode.support_idx.tolist()
    p.controls["n_way"].value = 3
    assert p.episode.n_way == 3 and len(p.figure.axes) == 3 * 4
    p.controls["k_shot"].value = 2
    assert p.episode.k_shot == 2
    p.controls["seed"].value = 5
    assert p.episode.support_idx.tolist() != first
    p.controls["site"].value = "s2"
    assert p.episode.site == 2
    p.controls["site"].value = ONE_SITE
    assert p.episode.site in (0, 1, 2)


def test_explicit_classes_set_n():
    col = make_collection(n_classes=6, per_class=12, n_sites=1)
    p = TaskPicker(col, n_way=5)
    p.controls["classes"].value = (1, 4)
    assert set(p.episode.classes) == {1, 4} and p.episode.n_way == 2


def test_impossible_request_shows_message_not_traceback():
    col = make_collection(n_classes=4, per_class=6, n_sites=1)
    p = TaskPicker(col, n_way=2, k_shot=1, q_query=1)
    p.controls["k_shot"].value = 10
    assert p.episode is None and "K+Q=11" in p.error and "cannot sample" in p.status.value
    p.controls["k_shot"].value = 2
    assert p.episode is not None and p.error is None


def test_switch_source():
    a = make_collection(n_classes=4, per_class=8, n_sites=2)
    b = make_collection(n_classes=2, per_class=8, n_sites=1, seed=3)
    p = TaskPicker({"a": a, "b": b}, n_way=3)
    p.controls["source"].value = "b"
    assert p.collection is b and p.controls["n_way"].max == 2
    assert p.controls["site"].options == ("any",)
    p.controls["n_way"].value = 2
    assert p.episode is not None and p.episode.n_way == 2
