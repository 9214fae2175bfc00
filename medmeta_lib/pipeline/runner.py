"""The notebook pipeline: registry, parameter resolution and the papermill runner.

Reading and checking one notebook's ``parameters`` cell is :mod:`medmeta_lib.pipeline.parameters`; its
names are re-exported here.

``medmeta run`` executes the registered notebooks in order into a run directory, passing
artifacts forward by path (02's encoder → 03, 03's checkpoints and metrics → 04)::

    runs/<timestamp>/
      params.yaml          resolved parameters of every notebook
      metrics.json         merged metrics ({notebook: metrics})
      index.html           report: the command that reproduces it, summary (data, learners ± 95% CI, ...), figures
      01_data_exploration.ipynb / .html     executed notebook and its HTML export
      01_data_exploration.kernel.log        what the kernel process itself printed (only if it printed anything)
      01_data_exploration/                  the notebook's output_dir (metrics.json, figures/, ...)
      mathjax/             MathJax for the HTML exports (formulas render offline; medmeta_lib.pipeline.html_export)

On success ``medmeta run`` prints one line per notebook (its time, or that it was skipped) and nothing
else: kernels talk over IPC (:mod:`medmeta_lib.pipeline.execution`), so ipykernel has no TCP warning to print,
and what a kernel process writes outside its cells goes to its ``.kernel.log``. A kernel that dies (out of
memory, a native crash) stops the run with a message that ends with that log's last lines.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medmeta_lib.config import PROJECT_ROOT, code_version, runs_dir
from medmeta_lib.data.sources import check_source
from medmeta_lib.pipeline.html_export import export_html, install_mathjax
from medmeta_lib.pipeline.parameters import (
    ParameterError,
    check_value,
    did_you_mean,
    notebook_parameters,
)
from medmeta_lib.pipeline.report import write_report
from medmeta_lib.pipeline.reproduce import reproduce_command
from medmeta_lib.runio import atomic_write_text

# every registered learner (the smoke chain exercises them all; the defaults train fewer)
_SMOKE_LEARNERS = ["protonet", "anil", "fomaml", "maml", "metasgd", "baseline", "baseline++", "scratch", "weightgen"]

__all__ = [
    "NOTEBOOKS",
    "NotebookSpec",
    "PipelineError",
    "RunResult",
    "parameters_markdown",
    "resolve_parameters",
    "run_pipeline",
]

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
DONE_FILE = ".medmeta_done.json"


class PipelineError(RuntimeError):
    """A notebook failed; the message names the notebook, the cell and the error."""


@dataclass(frozen=True)
class NotebookSpec:
    """One registered notebook.

    Attributes:
        key: short id used on the command line (``"01"``).
        stem: file name without ``.ipynb``; also the name of its output folder.
        smoke: tiny parameters for ``--smoke`` runs (documented in the README).
        chain: maps the run directory to parameters taken from earlier notebooks' outputs.
    """

    key: str
    stem: str
    smoke: Mapping[str, Any] = field(default_factory=dict)
    chain: Callable[[Path], dict[str, Any]] | None = None

    @property
    def path(self) -> Path:
        """The committed (output-free) notebook."""
        return NOTEBOOK_DIR / f"{self.stem}.ipynb"


def _chain_03(run_dir: Path) -> dict[str, Any]:
    enc = run_dir / "02_contrastive_pretraining" / "encoder.safetensors"
    return {"encoder_checkpoint": str(enc)} if enc.exists() else {}


def _chain_04(run_dir: Path) -> dict[str, Any]:
    d = run_dir / "03_meta_training"
    out = {"meta_dir": str(d)} if (d / "metrics.json").exists() else {}
    return {**out, **_chain_03(run_dir)}


NOTEBOOKS: list[NotebookSpec] = [
    NotebookSpec(
        "01",
        "01_data_exploration",
        smoke={"n_per_class_site": 6, "projection_images": 300, "pneumonia_npz": ""},
    ),
    NotebookSpec(
        "02",
        "02_contrastive_pretraining",
        smoke={
            "n_per_class_site": 6,
            "hidden": 8,
            "epochs": 1,
            "batch_size": 64,
            "probe_shots": [1, 5],
            "probe_draws": 2,
        },
    ),
    NotebookSpec(
        "03",
        "03_meta_training",
        smoke={
            "n_per_class_site": 8,
            # every learner, not only the defaults: the smoke chain is where all nine are exercised
            "learners": _SMOKE_LEARNERS,
            "hidden": 8,
            "k_shot": 1,
            "q_query": 2,
            "meta_steps": 2,
            "meta_batch": 2,
            "inner_steps": 1,
            "val_every": 2,
            "val_episodes": 2,
            "eval_episodes": 6,
            "cross_site_steps": 1,
        },
        chain=_chain_03,
    ),
    NotebookSpec(
        "04",
        "04_adaptation_visualisation",
        smoke={
            "n_per_class_site": 8,
            "hidden": 8,
            "k_shot": 2,
            "q_query": 3,
            "adapt_steps": 2,
            "curve_episodes": 3,
            "shots": [1, 2],
            "efficiency_episodes": 2,
            "efficiency_skip": [],  # scratch too: the smoke chain exercises every path
            "fallback_steps": 2,
            "cross_site_learner": "protonet",  # off by default (time); the smoke chain exercises it
            "cross_site_steps": 1,
            "cross_site_episodes": 2,
            "remedy_epochs": 1,
            "remedy_episodes": 2,
        },
        chain=_chain_04,
    ),
]


# ---------------------------------------------------------------- parameters
#: parameters that name a file or folder; a relative one is taken from where ``medmeta run`` is called
_PATH_PARAMETERS = ("data_source", "encoder_checkpoint", "meta_dir", "pneumonia_npz")


def _absolute(value: Any) -> Any:
    """``value`` made absolute if it is a relative path (not ``""``, ``"auto"``, ``"synthetic"`` or ``medmnist:``)."""
    if not isinstance(value, str) or value in ("", "auto", "synthetic") or value.startswith("medmnist:"):
        return value
    path = Path(value).expanduser()
    return value if path.is_absolute() else str(path.resolve())


def resolve_parameters(
    specs: Sequence[NotebookSpec],
    overrides: Mapping[str, Any],
    *,
    smoke: bool = False,
) -> dict[str, dict[str, Any]]:
    """Validate overrides against every notebook's parameters cell and resolve per-notebook values.

    Global names apply to each notebook that declares them; ``"02.name"`` targets notebook 02.
    ``output_dir`` and chained paths are added by :func:`run_pipeline`. A relative path in ``data_source``,
    ``encoder_checkpoint``, ``meta_dir`` or ``pneumonia_npz`` is made absolute from the current folder: each
    notebook runs in its own output folder, where it would not be found.

    Raises:
        ParameterError: an unknown name (declared by no selected notebook), a wrongly typed value, or a
            ``data_source`` that names no file, folder or MedMNIST file present (``check_source``; no image
            is read), naming the notebook and the parameter; papermill itself would only warn.

    Example:
        >>> resolve_parameters(NOTEBOOKS[:2], {"seed": 3, "02.epochs": 2})  # doctest: +SKIP
        {'01': {'seed': 3}, '02': {'seed': 3, 'epochs': 2}}
    """
    declared = {s.key: notebook_parameters(s.path) for s in specs}
    resolved: dict[str, dict[str, Any]] = {s.key: dict(s.smoke) if smoke else {} for s in specs}
    for name, value in overrides.items():
        if "." in name and name.split(".", 1)[0] in {s.key for s in NOTEBOOKS}:
            key, pname = name.split(".", 1)
            targets = [s for s in specs if s.key == key]
            if not targets:
                continue  # targets a notebook not selected in this run
            if pname not in declared[key]:
                raise ParameterError(
                    f"{targets[0].stem}: unknown parameter {pname!r}{did_you_mean(pname, declared[key])}; "
                    f"it declares {sorted(declared[key])}. Fix the name (papermill would silently ignore it)"
                )
        else:
            pname = name
            targets = [s for s in specs if pname in declared[s.key]]
            if not targets:
                known = sorted({p for d in declared.values() for p in d})
                raise ParameterError(
                    f"unknown parameter {pname!r}{did_you_mean(pname, known)}: no selected notebook declares it; "
                    f"known: {known}. Fix the name (papermill would silently ignore it) or select the notebook "
                    "that declares it"
                )
        for s in targets:
            t = declared[s.key][pname]["inferred_type_name"]
            if not check_value(t, value):
                raise ParameterError(
                    f"{s.stem}: parameter {pname!r} must be {t}, got {value!r} ({type(value).__name__}); "
                    f"pass a value of type {t} (default: {declared[s.key][pname]['default']})"
                )
            resolved[s.key][pname] = value
    for key, params in resolved.items():
        for pname in _PATH_PARAMETERS:  # each notebook runs in its own folder: anchor relative paths here
            if pname in params:
                params[pname] = _absolute(params[pname])
        if "data_source" in params:  # a data source that names nothing fails now, not minutes into the run
            try:
                check_source(params["data_source"], image_size=params.get("image_size", 28))
            except (FileNotFoundError, ValueError) as e:
                stem = next(s.stem for s in specs if s.key == key)
                raise ParameterError(f"{stem}: parameter 'data_source': {e}") from e
    return resolved


def _hash(params: Mapping[str, Any], path: Path) -> str:
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    h.update(path.read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- running
@dataclass
class RunResult:
    """What a pipeline run produced."""

    run_dir: Path
    executed: list[str]
    skipped: list[str]
    metrics: dict[str, Any]


def _select(only: Sequence[str] | None, from_: str | None) -> list[NotebookSpec]:
    keys = [s.key for s in NOTEBOOKS]
    for k in list(only or []) + ([from_] if from_ else []):
        if k not in keys:
            raise ParameterError(f"unknown notebook {k!r}; registered: {keys}")
    specs = list(NOTEBOOKS)
    if from_:
        specs = specs[keys.index(from_) :]
    if only:
        specs = [s for s in specs if s.key in only]
    return specs


def _done_hash(done: Path) -> str | None:
    """The parameter hash recorded by a completed notebook, or None (absent or unreadable: run it again)."""
    try:
        value = json.loads(done.read_text(encoding="utf-8")).get("hash")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def run_pipeline(
    *,
    out: Path | str | None = None,
    overrides: Mapping[str, Any] | None = None,
    smoke: bool = False,
    only: Sequence[str] | None = None,
    from_: str | None = None,
    force: bool = False,
    progress: bool = True,
    cell_timeout: int | None = 3600,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Execute the registered notebooks headless with papermill into a run directory.

    Args:
        out: run directory (default ``runs/<timestamp>``); an existing one is resumed.
        overrides: parameter overrides (see :func:`resolve_parameters`).
        smoke: use each notebook's tiny smoke parameters (the whole chain in a few minutes).
        only: run just these notebook keys (e.g. ``["02"]``).
        from_: start at this notebook key.
        force: re-run notebooks already completed with the same parameters.
        progress: a per-cell progress bar on a terminal (erased when the notebook is done).
        cell_timeout: seconds one cell may run before the run fails (``None``: no limit); a
            stalled kernel then stops the run with a clear error instead of hanging it.
        log: where the one line per notebook goes.

    Raises:
        ParameterError: before anything runs, for unknown or wrongly typed parameters.
        PipelineError: when a cell fails (outputs so far are kept; the report is still written).

    Example:
        >>> result = run_pipeline(smoke=True, only=["01"])  # doctest: +SKIP
    """
    from medmeta_lib.pipeline.execution import run_notebook

    specs = _select(only, from_)
    resolved = resolve_parameters(specs, overrides or {}, smoke=smoke)
    run_dir = Path(out) if out else runs_dir() / _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = run_dir.expanduser().resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    params_file = run_dir / "params.yaml"
    all_params: dict[str, Any] = yaml.safe_load(params_file.read_text()) if params_file.exists() else {}
    executed: list[str] = []
    skipped: list[str] = []
    failure: str | None = None
    for spec in specs:
        nb_out = run_dir / spec.stem
        nb_out.mkdir(exist_ok=True)
        params = {**(spec.chain(run_dir) if spec.chain else {}), **resolved[spec.key], "output_dir": str(nb_out)}
        all_params[spec.stem] = params
        atomic_write_text(params_file, yaml.safe_dump(all_params, sort_keys=False))
        digest = _hash(params, spec.path)
        done = nb_out / DONE_FILE
        if not force and _done_hash(done) == digest:
            log(f"[medmeta] {spec.stem}: skipped, already completed with these parameters (--force re-runs)")
            skipped.append(spec.stem)
            continue
        done.unlink(missing_ok=True)
        executed_nb = run_dir / f"{spec.stem}.ipynb"
        t0 = time.time()
        try:
            # IPC kernel whose client never waits out a missed message; the kernel's own output in a log (nbexec)
            failure = run_notebook(
                spec.path,
                executed_nb,
                parameters=params,
                cwd=nb_out,
                cell_timeout=cell_timeout,
                progress=progress,
                label=spec.stem,
            )
        finally:
            if executed_nb.exists():
                export_html(executed_nb, mathjax_dir=install_mathjax(run_dir))
        if failure:
            failure = f"{spec.stem}: {failure}"
        if failure:
            break
        atomic_write_text(done, json.dumps({"hash": digest, "seconds": round(time.time() - t0, 1)}))
        executed.append(spec.stem)
        # the one line per notebook (bench/bench_pipeline.py parses "[medmeta] <stem> done in <s> s")
        log(f"[medmeta] {spec.stem} done in {time.time() - t0:.0f} s → {executed_nb.with_suffix('.html')}")
    metrics = {
        s.stem: json.loads(p.read_text()) for s in NOTEBOOKS if (p := run_dir / s.stem / "metrics.json").exists()
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=str))
    command, code = reproduce_command(run_dir, NOTEBOOKS), code_version()
    write_report(run_dir, [s.stem for s in NOTEBOOKS], metrics, failure=failure, command=command, code=code)
    if failure:
        raise PipelineError(failure)
    return RunResult(run_dir, executed, skipped, metrics)


def parameters_markdown() -> str:
    """The README's parameter table, generated from every registered notebook's parameters cell.

    Example:
        >>> "| notebook | parameter |" in parameters_markdown()
        True
    """
    lines = ["| notebook | parameter | type | default | smoke | meaning |", "|---|---|---|---|---|---|"]
    for spec in NOTEBOOKS:
        for name, p in notebook_parameters(spec.path).items():
            smoke = repr(spec.smoke[name]) if name in spec.smoke else ""
            default = str(p["default"]).replace("|", "\\|")
            lines.append(
                f"| {spec.key} | `{name}` | {p['inferred_type_name']} | `{default}` | {smoke} | "
                f"{p['help'].replace('|', '/')} |"
            )
    return "\n".join(lines)
