"""The ``medmeta`` command line: run, lab, data, pretrain, meta-train, evaluate, fewshot, predict (and docs-params).

``program`` parses the arguments and dispatches to the bodies in ``commands``, ``evaluate``, ``fewshot`` and
``predict``.

``python -m medmeta_lib.cli`` is the same program (the entry point ``torchrun`` launches).

Example:
    >>> from medmeta_lib.cli import build_parser
    >>> build_parser().parse_args(["run", "--smoke"]).smoke
    True
"""

from __future__ import annotations

from medmeta_lib.cli.program import build_parser, main

__all__ = ["build_parser", "main"]
