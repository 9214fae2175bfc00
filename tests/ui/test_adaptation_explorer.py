"""AdaptationExplorer driven like a user: set widget values, press the button, scrub the step slider."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from medmeta_lib.learners import create_learner
from medmeta_lib.models import create_backbone
from medmeta_lib.ui.adaptation_explorer import AdaptationExplorer
from tests.conftest import make_collection

pytestmark = pytest.mark.usefixtures("one_thread_module")


def learners():
    torch.manual_seed(0)
    return {
        "maml": create_learner("maml", create_backbone("conv4", hidden=8), n_way=3),
        "protonet": create_learner("protonet", create_backbone("conv4", hidden=8), n_way=3),
    }


def make_explorer(**kw):
    col = make_collection(n_classes=4, per_class=12, n_sites=2, size=16)
    return AdaptationExplorer(col, learners(), n_way=3, k_shot=2, q_query=3, steps=4, **kw)


def count_adapt_calls(monkeypatch, learner) -> list[int]:
    calls: list[int] = []
    original = learner.adapt

    def counted(*a, **k):
        calls.append(1)
        return original(*a, **k)

    monkeypatch.setattr(learner, "adapt", counted)
    return calls


def test_button_runs_adaptation_and_slider_scrubs(monkeypatch):
    ex = make_explorer()
    assert "medmeta-adaptation-explorer" in ex.widget._dom_classes
    assert ex.controls["run"].description == "Run adaptation" and ex.controls["step"].description == "step"
    assert ex.trace is None and ex.figures == {} and ex.controls["step"].disabled
    calls = count_adapt_calls(monkeypatch, ex.learners["maml"])
    ex.controls["run"].click()  # what the button does in the browser
    assert len(calls) == 1
    assert ex.trace is not None and ex.trace.steps == [0, 1, 2, 3, 4] and ex.trace.support_emb is not None
    assert ex.episode is ex.picker.episode and ex.error is None
    assert ex.step == 4 and ex.controls["step"].max == 4 and not ex.controls["step"].disabled
    assert set(ex.figures) == {"curves", "embedding", "decision"}
    assert isinstance(ex.figures["decision"], Figure)
    assert len(ex.figures["decision"].axes) == 2 * min(ex.max_images, ex.episode.query_y.numel())  # before, step 4
    assert "step 4" in ex.figures["embedding"].layout.title.text
    assert "query accuracy" in ex.status.value
    ex.controls["step"].value = 2  # scrubbing: no new adaptation, figures follow the step
    assert len(calls) == 1 and ex.step == 2
    assert "step 2" in ex.figures["embedding"].layout.title.text
    assert [s.x0 for s in ex.figures["curves"].layout.shapes] == [2, 2]
    grid = np.array(ex.figures["decision"].axes).reshape(-1, 2)  # columns: before, step 2
    assert grid.shape[0] == min(ex.max_images, ex.episode.query_y.numel())
    ex.controls["step"].value = 0
    assert len(ex.figures["decision"].axes) == grid.shape[0]  # before only


def test_task_controls_never_run_adaptation(monkeypatch):
    ex = make_explorer()
    calls = count_adapt_calls(monkeypatch, ex.learners["maml"])
    ex.controls["k_shot"].value = 3
    ex.controls["steps"].value = 2
    ex.controls["learner"].value = "protonet"
    ex.controls["seed"].value = 4
    assert calls == [] and ex.trace is None
    ex.run()
    assert ex.trace is not None and ex.trace.learner == "protonet" and ex.episode.k_shot == 3
    assert ex.controls["step"].max == 1 and ex.step == 1  # ProtoNet: one step (the prototypes)
    ex.controls["learner"].value = "maml"
    ex.run()
    assert ex.trace.steps == [0, 1, 2] and ex.step == 2 and len(calls) == 1


def test_n_way_change_and_errors_are_messages():
    ex = make_explorer()
    ex.controls["n_way"].value = 2
    ex.run()
    assert ex.trace is not None and ex.episode.n_way == 2 and ex.learners["maml"].n_way == 2
    ex.learners["fixed"] = create_learner("maml", create_backbone("conv4", hidden=8), n_way=3, head_init="learned")
    ex.controls["learner"].options = list(ex.learners)
    ex.controls["learner"].value = "fixed"
    before = ex.trace
    assert ex.run() is None
    assert "n_way is fixed" in ex.error and "cannot run" in ex.status.value and ex.trace is before
    ex.controls["k_shot"].value = 12  # impossible task
    assert ex.run() is None and "no task" in ex.error
    with pytest.raises(ValueError, match="learners is empty"):
        AdaptationExplorer(make_collection(), {})
    with pytest.raises(ValueError, match="steps"):
        AdaptationExplorer(make_collection(), learners(), steps=0)


def test_weight_generator_view_follows_the_k_slider(monkeypatch) -> None:
    from medmeta_lib.studies.weights import generated_head

    col = make_collection(n_classes=4, per_class=12, n_sites=2, size=16)
    torch.manual_seed(0)
    models = {**learners(), "weightgen": create_learner("weightgen", create_backbone("conv4", hidden=8), n_way=3)}
    ex = AdaptationExplorer(col, models, n_way=3, k_shot=4, q_query=3, steps=2)
    ex.run()  # maml first: no generator view
    assert "generated" not in ex.figures and ex.generated_box.layout.display == "none"
    ex.controls["learner"].value = "weightgen"
    ex.run()
    slider = ex.controls["gen_k"]
    assert ex.generated_box.layout.display is None and not slider.disabled
    assert slider.max == 4 and slider.value == 4
    fig = ex.figures["generated"]
    assert fig.data[0].type == "heatmap" and "K = 4" in fig.layout.title.text
    calls = []
    original = models["weightgen"].generate
    monkeypatch.setattr(models["weightgen"], "generate", lambda *a: calls.append(1) or original(*a))
    slider.value = 1  # one forward pass of the generator per move
    assert calls == [1] and "K = 1" in ex.figures["generated"].layout.title.text
    ep = ex.episode
    expected = generated_head(models["weightgen"], ep.support_x, ep.support_y, k=1)["cosine"]
    np.testing.assert_allclose(np.array(ex.figures["generated"].data[0].z), expected.numpy(), atol=1e-6)
    ex.controls["step"].value = 0  # scrubbing the adaptation steps keeps the generator view
    assert "generated" in ex.figures
    with pytest.raises(ValueError, match="does not generate weights"):
        generated_head(models["protonet"], ep.support_x, ep.support_y)
