"""``TaskPicker``: choose a few-shot task with widgets and see its support and query images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ipywidgets as W
import matplotlib.pyplot as plt
from IPython.display import display
from matplotlib.figure import Figure

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import Episode, EpisodeSampler
from medmeta_lib.viz.data_plots import episode_figure

__all__ = ["TaskPicker"]

ANY = "any"
ONE_SITE = "one site (random)"


class TaskPicker:
    """Widgets to pick a task — source, modality, classes or N, K, Q, site, seed — and show it.

    Every change re-samples the episode (sampling takes milliseconds) and redraws the
    support/query grid. Impossible requests (say, K+Q larger than a class has images at the chosen
    site) are shown as a message instead of a traceback.

    Args:
        collections: one collection, or a mapping ``name -> collection`` (e.g. synthetic and
            PneumoniaMNIST) offered in the *source* drop-down.
        n_way: initial N; k_shot: initial K; q_query: initial Q; seed: initial seed.

    Attributes:
        episode: the current :class:`Episode` (``None`` after an impossible request).
        figure: the current matplotlib figure.
        error: the message of the last impossible request, else ``None``.
        controls: the widgets by name (``source``, ``modality``, ``classes``, ``n_way``, ``k_shot``,
            ``q_query``, ``site``, ``seed``).

    Example:
        >>> from medmeta_lib import load_collection
        >>> picker = TaskPicker(load_collection("synthetic", n_per_class_site=4), n_way=3)  # doctest: +SKIP
        >>> picker.controls["k_shot"].value = 2  # doctest: +SKIP
        >>> picker  # in a notebook: shows the widgets and the task  # doctest: +SKIP
    """

    def __init__(
        self,
        collections: ImageCollection | Mapping[str, ImageCollection],
        *,
        n_way: int = 5,
        k_shot: int = 1,
        q_query: int = 3,
        seed: int = 0,
    ) -> None:
        if isinstance(collections, ImageCollection):
            collections = {collections.source: collections}
        if not collections:
            raise ValueError("collections is empty: give at least one ImageCollection")
        self.collections: dict[str, ImageCollection] = dict(collections)
        self.episode: Episode | None = None
        self.figure: Figure | None = None
        self.error: str | None = None
        first = next(iter(self.collections.values()))
        lay = W.Layout(width="320px")
        style = {"description_width": "80px"}
        self.controls: dict[str, Any] = {
            "source": W.Dropdown(options=list(self.collections), description="source", layout=lay, style=style),
            "modality": W.Dropdown(options=[ANY], value=ANY, description="modality", layout=lay, style=style),
            "classes": W.SelectMultiple(options=[], description="classes", rows=6, layout=lay, style=style),
            "n_way": W.IntSlider(
                value=n_way, min=2, max=10, description="N (way)", continuous_update=False, style=style
            ),
            "k_shot": W.IntSlider(
                value=k_shot, min=1, max=20, description="K (shot)", continuous_update=False, style=style
            ),
            "q_query": W.IntSlider(
                value=q_query, min=1, max=20, description="Q (query)", continuous_update=False, style=style
            ),
            "site": W.Dropdown(options=[ANY], value=ANY, description="site", layout=lay, style=style),
            "seed": W.IntText(value=seed, description="seed", layout=W.Layout(width="200px"), style=style),
        }
        self.status = W.HTML()
        self.output = W.Output()
        self._render = self.output.capture(clear_output=True, wait=True)(self._show_figure)
        self._updating = False
        self._refresh_options(first)
        for name, w in self.controls.items():
            w.observe(self._on_source if name == "source" else self._on_change, names="value")
        self.controls["modality"].observe(self._on_modality, names="value")
        left = W.VBox([self.controls[k] for k in ("source", "modality", "classes", "site")])
        right = W.VBox([self.controls[k] for k in ("n_way", "k_shot", "q_query", "seed")] + [self.status])
        self.widget = W.VBox([W.HBox([left, right]), self.output])
        self.widget.add_class("medmeta-task-picker")
        self.update()

    # ------------------------------------------------------------ state
    @property
    def collection(self) -> ImageCollection:
        """The collection of the selected source."""
        return self.collections[self.controls["source"].value]

    def _class_options(self, col: ImageCollection) -> list[tuple[str, int]]:
        mod = self.controls["modality"].value
        ids = range(col.num_classes) if mod == ANY else col.classes_of_modality(mod)
        return [(col.class_names[i], i) for i in ids]

    def _refresh_options(self, col: ImageCollection) -> None:
        self._updating = True
        try:
            c = self.controls
            c["modality"].options = [ANY, *col.modalities] if col.class_modalities else [ANY]
            c["modality"].value = ANY
            c["classes"].options = self._class_options(col)
            c["classes"].value = ()
            assert col.site_names is not None
            c["site"].options = [ANY, ONE_SITE, *col.site_names] if col.num_sites > 1 else [ANY]
            c["site"].value = ANY
            c["n_way"].max = max(2, min(10, col.num_classes))
        finally:
            self._updating = False

    def _on_source(self, _change: Any) -> None:
        self._refresh_options(self.collection)
        self.update()

    def _on_modality(self, _change: Any) -> None:
        if self._updating:
            return
        self._updating = True
        try:
            self.controls["classes"].options = self._class_options(self.collection)
            self.controls["classes"].value = ()
        finally:
            self._updating = False

    def _on_change(self, _change: Any) -> None:
        if not self._updating:
            self.update()

    def sampler(self) -> EpisodeSampler:
        """The :class:`EpisodeSampler` for the current widget values (raises ValueError if impossible)."""
        c = self.controls
        col = self.collection
        chosen = list(c["classes"].value)
        if len(chosen) == 1:
            raise ValueError("select at least two classes, or none to let N pick them")
        classes = chosen or [i for _, i in self._class_options(col)]
        n_way = len(chosen) if chosen else c["n_way"].value
        site = c["site"].value
        assert col.site_names is not None
        sites = None if site in (ANY, ONE_SITE) else [list(col.site_names).index(site)]
        return EpisodeSampler(
            col,
            n_way,
            c["k_shot"].value,
            c["q_query"].value,
            classes=classes,
            sites=sites,
            one_site=site == ONE_SITE,
            same_modality=c["modality"].value == ANY and col.class_modalities is not None and not chosen,
            seed=int(c["seed"].value),
        )

    def update(self) -> Episode | None:
        """Re-sample the task from the widget values and redraw; returns the episode (None if impossible)."""
        try:
            self.episode = self.sampler().sample()
            self.error = None
        except ValueError as e:
            self.episode, self.error = None, str(e)
        if self.figure is not None:
            plt.close(self.figure)
            self.figure = None
        if self.episode is not None:
            self.figure = episode_figure(self.episode, class_names=self.collection.class_names)
            plt.close(self.figure)  # shown through the Output widget only, not twice
            ep = self.episode
            self.status.value = (
                f"<b>{ep.n_way}-way {ep.k_shot}-shot</b>, {ep.q_query} queries/class; "
                f"classes {list(ep.classes)}; site {ep.site if ep.site is not None else 'mixed'}"
            )
        else:
            self.status.value = f"<span style='color:#b00'>cannot sample this task: {self.error}</span>"
        self._render()
        return self.episode

    def _show_figure(self) -> None:
        if self.figure is not None:
            display(self.figure)

    def _ipython_display_(self) -> None:
        display(self.widget)
