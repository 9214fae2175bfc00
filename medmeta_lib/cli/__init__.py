"""The ``medmeta`` command line (``medmeta run | lab | data | meta-train | evaluate | pretrain | docs-params``).

``python -m medmeta_lib.cli`` is the same program (the entry point ``torchrun`` launches).

Example:
    >>> from medmeta_lib.cli import build_parser
    >>> build_parser().parse_args(["run", "--smoke"]).smoke
    True
"""

from __future__ import annotations

from medmeta_lib.cli.commands import build_parser, main

__all__ = ["build_parser", "main"]
