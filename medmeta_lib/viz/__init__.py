"""Plots for the notebooks: one module per topic; each draws what :mod:`medmeta_lib.studies` computes.

* :mod:`~medmeta_lib.viz.data_plots` — sample grids by class and site, balance, intensities, episodes;
* :mod:`~medmeta_lib.viz.augment_views` — augmentation views of a few images;
* :mod:`~medmeta_lib.viz.training_plots` — loss and meta-train/val curves, results with intervals;
* :mod:`~medmeta_lib.viz.adaptation_plots` — adaptation curves, data efficiency, decision grids, site maps;
* :mod:`~medmeta_lib.viz.embeddings` — embedding trajectories while a learner adapts;
* :mod:`~medmeta_lib.viz.saliency_plots` — saliency before and after adaptation;
* :mod:`~medmeta_lib.viz.weightgen_plots` — generated class weights against the class prototypes;
* :mod:`~medmeta_lib.viz.fewshot_plots` — the summary figure of ``medmeta fewshot``.

This package exports only :func:`setup_notebook` and :func:`save_figure` (importing it does not import
matplotlib or plotly); import the topic modules for the figures.

Example:
    >>> from medmeta_lib.viz import save_figure, setup_notebook
"""

from __future__ import annotations

__all__ = ["save_figure", "setup_notebook"]


def setup_notebook() -> None:
    """Configure plotly and matplotlib for JupyterLab and for papermill/HTML exports.

    Plotly figures render through JupyterLab's mimetype renderer and, in the HTML export, as
    self-contained HTML (plotly.js inlined once: the workbench runs offline).

    Example:
        >>> import matplotlib as mpl, plotly.io as pio
        >>> renderer = pio.renderers.default
        >>> with mpl.rc_context():  # the example restores matplotlib's and plotly's settings
        ...     setup_notebook()
        ...     pio.renderers.default, mpl.rcParams["image.cmap"]
        ('plotly_mimetype+notebook', 'gray')
        >>> pio.renderers.default = renderer
    """
    import matplotlib as mpl
    import plotly.io as pio

    pio.renderers.default = "plotly_mimetype+notebook"
    try:  # inside a Jupyter kernel, draw matplotlib figures inline even if MPLBACKEND says otherwise
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:  # pragma: no cover - IPython is a dependency
        shell = None
    if shell is not None and getattr(shell, "kernel", None) is not None:
        # a headless shell often exports MPLBACKEND=Agg; a kernel inherits it and plt.show() then
        # draws nothing, so figures would silently vanish from executed notebooks and HTML exports
        shell.run_line_magic("matplotlib", "inline")
    mpl.rcParams.update({"figure.dpi": 100, "savefig.dpi": 110, "image.cmap": "gray", "axes.titlesize": 9})


def save_figure(fig, output_dir, name: str, *, close: bool = False) -> str:
    """Save a matplotlib figure as ``<output_dir>/figures/<name>.png`` (for the run report); return the path.

    Example:
        >>> import matplotlib.pyplot as plt, tempfile
        >>> save_figure(plt.figure(), tempfile.mkdtemp(), "empty").endswith("empty.png")
        True
    """
    import os
    from pathlib import Path

    d = Path(output_dir) / "figures"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.png"
    tmp = d / f".{name}.tmp.png"
    fig.savefig(tmp, bbox_inches="tight")
    os.replace(tmp, path)
    if close:  # a figure made only for the report: keep the notebook from showing it a second time
        import matplotlib.pyplot as plt

        plt.close(fig)
    return str(path)
