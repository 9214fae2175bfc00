"""The notebook pipeline behind ``medmeta run``: parameters, headless execution, HTML exports, the report.

* :mod:`~medmeta_lib.pipeline.parameters` — a notebook's ``parameters`` cell as papermill sees it, and
  typed checks of ``-p name=value`` overrides;
* :mod:`~medmeta_lib.pipeline.runner` — the notebook registry and the run (01 → 04, artifacts by path);
* :mod:`~medmeta_lib.pipeline.execution` — the kernel client that executes one notebook headless (the
  kernel process's own output in a log beside it; failures as one message);
* :mod:`~medmeta_lib.pipeline.html_export` — HTML exports whose formulas render offline;
* :mod:`~medmeta_lib.pipeline.report` and :mod:`~medmeta_lib.pipeline.report_summary` — the run report
  (its site-effect parts in :mod:`~medmeta_lib.pipeline.report_sites`, number formats in
  :mod:`~medmeta_lib.pipeline.report_format`), and :mod:`~medmeta_lib.pipeline.reproduce`, the command that
  reproduces a run and the code it ran, shown at the report's top.

Nothing in the core imports this package.

Example:
    >>> from medmeta_lib.pipeline import parse_overrides
    >>> parse_overrides(["k_shot=5"])
    {'k_shot': 5}
"""

from __future__ import annotations

from medmeta_lib.pipeline.parameters import ParameterError, check_value, notebook_parameters, parse_overrides
from medmeta_lib.pipeline.report import write_report
from medmeta_lib.pipeline.runner import (
    NOTEBOOKS,
    NotebookSpec,
    PipelineError,
    RunResult,
    parameters_markdown,
    resolve_parameters,
    run_pipeline,
)

__all__ = [
    "NOTEBOOKS",
    "NotebookSpec",
    "ParameterError",
    "PipelineError",
    "RunResult",
    "check_value",
    "notebook_parameters",
    "parameters_markdown",
    "parse_overrides",
    "resolve_parameters",
    "run_pipeline",
    "write_report",
]
