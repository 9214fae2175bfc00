"""A benchmark's JSON results, rewritten after every finished piece so that an interrupted run keeps them.

The long scripts (an hour or more of meta-training) used to write their JSON only at the end, and a
machine restart once lost two runs' results. A script now builds its results in ``ResultFile.data``,
calls ``save()`` whenever a piece (a K, a learner, a held-out site) is finished, and ``finish()`` at the
end. Every write is atomic (``medmeta_lib.runio.write_metrics``: a temp file, then a rename) and stamps
``"complete"`` (false until ``finish``) and ``"seconds"`` since the file was opened. The file also says how it was
made: ``"command"`` (the script and its arguments, as typed) and ``"code"`` (the library version and git commit).

Used by the scripts next to it (run as ``python bench/<script>.py``, so this folder is on ``sys.path``).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from medmeta_lib.config import code_version
from medmeta_lib.runio import write_metrics

__all__ = ["ResultFile"]


class ResultFile:
    """Results held in ``data`` and written to ``path`` as they grow.

    Example:
        >>> import tempfile
        >>> rf = ResultFile(Path(tempfile.mkdtemp()) / "r.json", {"settings": {"k": 5}})
        >>> rf.data["acc"] = 0.7
        >>> _ = rf.save()
        >>> json.loads(rf.path.read_text())["complete"]
        False
    """

    def __init__(self, path: str | Path, data: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.data: dict[str, Any] = {} if data is None else data
        self.data.setdefault("command", "python " + shlex.join(sys.argv))
        self.data.setdefault("code", code_version())
        self._t0 = time.time()

    def save(self) -> Path:
        """Write what is there so far (``"complete": false``)."""
        return self._write(complete=False)

    def finish(self) -> Path:
        """Write the final results (``"complete": true``) and print where they went."""
        path = self._write(complete=True)
        print(json.dumps({"wrote": str(path), "seconds": round(self.data["seconds"])}), flush=True)
        return path

    def _write(self, *, complete: bool) -> Path:
        self.data["seconds"] = time.time() - self._t0
        self.data["complete"] = complete
        return write_metrics(self.path.parent, self.data, name=self.path.name)
