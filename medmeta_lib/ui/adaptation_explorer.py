"""``AdaptationExplorer``: pick a task and a learner, run the adaptation, scrub through its steps."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import Episode
from medmeta_lib.learners.base import Learner, Predictor
from medmeta_lib.learners.trace import AdaptationTrace
from medmeta_lib.studies.adaptation import embedding_trajectory
from medmeta_lib.studies.weights import generated_head, writes_weights
from medmeta_lib.ui.task_picker import TaskPicker
from medmeta_lib.viz.adaptation_plots import decision_grid_figure, trace_figure
from medmeta_lib.viz.embeddings import trajectory_figure
from medmeta_lib.viz.weightgen_plots import generated_weights_figure

__all__ = ["AdaptationExplorer"]


class AdaptationExplorer:
    """Watch a learner adapt to a task of your choice, one inner step at a time.

    The task controls (source, modality, classes or N, K, Q, site, seed) are a
    :class:`~medmeta_lib.ui.task_picker.TaskPicker`, which shows the task's images. Choosing the
    learner and the number of steps costs nothing; **Run adaptation** runs ``learner.adapt`` once
    on the current task, recording the embeddings and query predictions of every step. The
    **step** slider then scrubs the recorded trace (no recomputation): the accuracy/loss curves
    mark the step, the embedding view (one PCA fitted on all steps) shows where the support, query
    and prototypes are, and the decision grid compares each query's prediction before adaptation
    and at that step. For a learner whose second network writes the task head (``weightgen``), a
    **K (writer)** slider shows what that network wrote from the first K support images of each class
    (generated class weights against the class prototypes), recomputed with one forward pass per move.

    Args:
        collections: one collection, or ``name -> collection`` for the *source* drop-down.
        learners: ``name -> learner`` (e.g. meta-trained MAML and ProtoNet, Scratch).
        n_way: initial N; k_shot: initial K; q_query: initial Q; seed: initial episode seed.
        steps: initial number of adaptation steps.
        max_images: query images in the decision grid.

    Attributes:
        trace: the :class:`AdaptationTrace` of the last run (``None`` before the first).
        episode: the episode of the last run.
        predictor: the adapted model of the last run.
        trajectory: the 2-D embedding trajectory of the last run.
        figures: the current figures: ``"curves"`` and ``"embedding"`` (plotly), ``"decision"`` (matplotlib),
            and ``"generated"`` (plotly) for weight-generating learners.
        error: the message of the last failed run, else ``None``.
        controls: the widgets by name: the task picker's, plus ``learner``, ``steps``, ``run`` (button), ``step``,
            ``gen_k`` (the K of the generated-weights view).

    Example:
        >>> ex = AdaptationExplorer(col, {"maml": maml, "protonet": proto}, n_way=5, k_shot=5)  # doctest: +SKIP
        >>> ex.run(); ex.controls["step"].value = 3  # doctest: +SKIP
        >>> ex  # in a notebook: shows the widget  # doctest: +SKIP
    """

    def __init__(
        self,
        collections: ImageCollection | Mapping[str, ImageCollection],
        learners: Mapping[str, Learner],
        *,
        n_way: int = 5,
        k_shot: int = 5,
        q_query: int = 10,
        steps: int = 10,
        seed: int = 0,
        max_images: int = 8,
    ) -> None:
        if not learners:
            raise ValueError("learners is empty: give a mapping name -> Learner, e.g. {'maml': maml}")
        for name, value in (("steps", steps), ("max_images", max_images)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        self.learners: dict[str, Learner] = dict(learners)
        self.max_images = max_images
        self.picker = TaskPicker(collections, n_way=n_way, k_shot=k_shot, q_query=q_query, seed=seed)
        self.trace: AdaptationTrace | None = None
        self.episode: Episode | None = None
        self.predictor: Predictor | None = None
        self.trajectory: dict[str, Any] | None = None
        self.class_names: list[str] = []
        self.figures: dict[str, Any] = {}
        self.error: str | None = None
        style = {"description_width": "80px"}
        self.controls: dict[str, Any] = dict(self.picker.controls)
        self.controls.update(
            learner=W.Dropdown(
                options=list(self.learners), description="learner", layout=W.Layout(width="320px"), style=style
            ),
            steps=W.IntSlider(
                value=steps, min=1, max=max(100, steps), description="steps", continuous_update=False, style=style
            ),
            run=W.Button(description="Run adaptation", button_style="primary", icon="play"),
            step=W.IntSlider(
                value=0, min=0, max=steps, description="step", continuous_update=False, disabled=True, style=style
            ),
            gen_k=W.IntSlider(
                value=1, min=1, max=2, description="K (writer)", continuous_update=False, disabled=True, style=style
            ),
        )
        self.status = W.HTML("choose a task and a learner, then press <b>Run adaptation</b>")
        self.outputs = {k: W.Output() for k in ("curves", "embedding", "decision", "generated")}
        self._render = {
            k: out.capture(clear_output=True, wait=True)(self._show_figure_fn(k)) for k, out in self.outputs.items()
        }
        self._running = False
        self.controls["run"].on_click(self._on_run)
        self.controls["step"].observe(self._on_step, names="value")
        self.controls["gen_k"].observe(self._on_gen_k, names="value")
        self.generated_box = W.VBox([self.controls["gen_k"], self.outputs["generated"]])
        self.generated_box.layout.display = "none"  # shown for weight-generating learners only
        c = self.controls
        self.outputs["embedding"].layout = W.Layout(width="58%")
        self.outputs["decision"].layout = W.Layout(width="42%")
        self.widget = W.VBox(
            [
                self.picker.widget,
                W.HBox([c["learner"], c["steps"], c["run"]]),
                self.status,
                c["step"],
                self.outputs["curves"],
                W.HBox([self.outputs["embedding"], self.outputs["decision"]]),
                self.generated_box,
            ]
        )
        self.widget.add_class("medmeta-adaptation-explorer")

    # ------------------------------------------------------------ state
    @property
    def step(self) -> int:
        """The step shown (the value of the *step* slider)."""
        return int(self.controls["step"].value)

    @property
    def learner(self) -> Learner:
        """The selected learner."""
        return self.learners[self.controls["learner"].value]

    def _fail(self, message: str) -> None:
        self.error = message
        self.status.value = f"<span style='color:#b00'>cannot run: {message}</span>"

    def run(self) -> AdaptationTrace | None:
        """Adapt the selected learner to the current task (what the button does); returns the trace."""
        ep = self.picker.episode
        if ep is None:
            self._fail(f"no task ({self.picker.error})")
            return None
        name, learner = self.controls["learner"].value, self.learner
        self.status.value = f"adapting <b>{name}</b>…"
        t0 = time.perf_counter()
        try:
            if learner.n_way != ep.n_way:
                learner.set_n_way(ep.n_way)
            pred, trace = learner.adapt(
                ep.support_x,
                ep.support_y,
                steps=int(self.controls["steps"].value),
                query_x=ep.query_x,
                query_y=ep.query_y,
                record_embeddings=True,
            )
            traj = embedding_trajectory(trace, ep.support_y, ep.query_y)
        except ValueError as err:  # e.g. a learner tied to another n_way
            self._fail(str(err))
            return None
        seconds = time.perf_counter() - t0
        self.episode, self.predictor, self.trace, self.trajectory, self.error = ep, pred, trace, traj, None
        names = self.picker.collection.class_names
        self.class_names = [names[c] for c in ep.classes]
        accs = [a for a in trace.query_acc if a is not None]
        self.status.value = (
            f"<b>{name}</b> adapted to a {ep.n_way}-way {ep.k_shot}-shot task in {trace.steps[-1]} step(s) "
            f"({seconds:.1f} s): query accuracy {accs[0]:.0%} before → {accs[-1]:.0%} after"
        )
        slider = self.controls["step"]
        last = trace.steps[-1]
        self._running = True
        try:
            slider.disabled = False
            slider.max = max(last, 1)  # ipywidgets needs max > min; ProtoNet has one step
            slider.value = last
        finally:
            self._running = False
        self.show_step(last)
        self._setup_generated(ep)
        return trace

    def _setup_generated(self, ep: Episode) -> None:
        self.figures.pop("generated", None)
        slider = self.controls["gen_k"]
        if not writes_weights(self.learner):
            self.generated_box.layout.display = "none"
            slider.disabled = True
            self._render["generated"]()
            return
        self.generated_box.layout.display = None
        self._running = True
        try:
            slider.max = max(ep.k_shot, 2)  # ipywidgets needs max > min
            slider.value = ep.k_shot
            slider.disabled = ep.k_shot < 2
        finally:
            self._running = False
        self.show_generated(ep.k_shot)

    def show_generated(self, k: int) -> None:
        """Redraw what the weight generator writes from the first ``k`` support images of each class."""
        if self.episode is None or not writes_weights(self.learner):
            return
        ep = self.episode
        k = min(max(1, int(k)), ep.k_shot)
        head = generated_head(self.learner, ep.support_x, ep.support_y, k=k)
        self.figures["generated"] = generated_weights_figure(head, class_names=self.class_names)
        self._render["generated"]()

    def _on_gen_k(self, change: Any) -> None:
        if not self._running and self.trace is not None:
            self.show_generated(int(change["new"]))

    def _on_run(self, _button: Any = None) -> None:
        self.run()

    def _on_step(self, change: Any) -> None:
        if not self._running and self.trace is not None:
            self.show_step(int(change["new"]))

    def show_step(self, step: int) -> None:
        """Redraw the curves, embedding view and decision grid for ``step`` of the recorded trace."""
        if self.trace is None or self.trajectory is None or self.episode is None:
            return
        step = min(max(0, int(step)), self.trace.steps[-1])
        old = self.figures.get("decision")
        if old is not None:
            plt.close(old)
        ep = self.episode
        generated = self.figures.get("generated")
        self.figures = {
            "curves": trace_figure(self.trace, step=step),
            "embedding": trajectory_figure(
                self.trajectory, step=step, class_names=self.class_names, animate=False, height=480
            ),
            "decision": decision_grid_figure(
                self.trace,
                ep.query_x,
                ep.query_y,
                steps=sorted({0, step}),
                max_images=self.max_images,
                class_names=self.class_names,
            ),
        }
        if generated is not None:
            self.figures["generated"] = generated
        # half the width of the notebook: the legend goes below the points instead of beside them
        self.figures["embedding"].update_layout(legend={"orientation": "h", "y": -0.18, "font": {"size": 10}})
        plt.close(self.figures["decision"])  # shown through the Output widget only, not twice
        for key in ("curves", "embedding", "decision"):
            self._render[key]()

    def _show_figure_fn(self, key: str) -> Any:
        def show() -> None:
            fig = self.figures.get(key)
            if fig is not None:
                display(fig)

        return show

    def _ipython_display_(self) -> None:
        display(self.widget)
