"""``python -m medmeta_lib.cli``: the ``medmeta`` command (also what ``torchrun -m`` launches)."""

from __future__ import annotations

from medmeta_lib.cli.program import main

raise SystemExit(main())
