"""Optimiser, LR-scheduler and RNG states as tensors plus JSON, for checkpoints that resume exactly.

Each ``*_to_*`` function splits a state into tensors (to store in a safetensors checkpoint, see
:mod:`medmeta_lib.training.checkpoint`) and JSON metadata; the matching ``load_*`` / ``restore_*`` function puts
it back. A run resumed from such a checkpoint continues bit for bit like an uninterrupted one (step
counters, Adam moments, every random stream), and nothing is ever unpickled.

Example:
    >>> from torch import nn
    >>> opt = torch.optim.Adam([nn.Parameter(torch.zeros(2))])
    >>> tensors, meta = optimizer_state_to_tensors(opt)
    >>> load_optimizer_state(opt, tensors, meta)
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medmeta_lib.training.checkpoint import from_json, to_json

__all__ = [
    "load_optimizer_state",
    "load_scheduler_state",
    "optimizer_state_to_tensors",
    "restore_rng_state",
    "rng_state_to_tensors",
    "scheduler_state_to_json",
]


def optimizer_state_to_tensors(
    optimizer: torch.optim.Optimizer, prefix: str = "optim."
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and JSON metadata (exact, including step counters).

    Example:
        >>> from torch import nn
        >>> opt = torch.optim.Adam([nn.Parameter(torch.zeros(2))])
        >>> tensors, meta = optimizer_state_to_tensors(opt)
        >>> load_optimizer_state(opt, tensors, meta)
    """
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}

    def split(entries: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
        # tensors go to the file under key + name; everything else stays in the JSON metadata
        out: dict[str, Any] = {}
        for k, v in entries.items():
            if isinstance(v, Tensor):
                tensors[f"{key}{k}"] = v
                out[k] = {"__stored__": True}
            else:
                out[k] = to_json(v, f"{where}.{k}")
        return out

    state = {str(pid): split(st, f"{prefix}state.{pid}.", f"optimizer state {pid}") for pid, st in sd["state"].items()}
    groups = [split(g, f"{prefix}group.{i}.", f"optimizer param_groups[{i}]") for i, g in enumerate(sd["param_groups"])]
    return tensors, {"type": type(optimizer).__name__, "state": state, "param_groups": groups}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, tensors: Mapping[str, Tensor], meta: Mapping[str, Any], prefix: str = "optim."
) -> None:
    """Restore an optimiser from :func:`optimizer_state_to_tensors` output.

    Raises:
        ValueError: the saved state belongs to another optimiser type or parameter layout.

    Example:
        >>> p = torch.nn.Parameter(torch.ones(2))
        >>> opt = torch.optim.Adam([p], lr=0.1); p.sum().backward(); opt.step()
        >>> fresh = torch.optim.Adam([p], lr=0.1)
        >>> load_optimizer_state(fresh, *optimizer_state_to_tensors(opt))
        >>> fresh.state_dict()["state"][0]["step"], fresh.state_dict()["state"][0]["exp_avg"]
        (tensor(1.), tensor([0.1000, 0.1000]))
    """
    if meta.get("type") != type(optimizer).__name__:
        raise ValueError(
            f"optimizer state is for {meta.get('type')!r}, got a {type(optimizer).__name__}; use the same optimiser"
        )

    def value(v: Any, key: str) -> Any:
        if isinstance(v, dict) and v == {"__stored__": True}:
            if key not in tensors:
                raise ValueError(
                    f"optimizer tensor {key!r} missing from the checkpoint; it was saved with another prefix?"
                )
            return tensors[key]
        return from_json(v)

    state = {
        int(pid): {k: value(v, f"{prefix}state.{pid}.{k}") for k, v in st.items()} for pid, st in meta["state"].items()
    }
    groups = [{k: value(v, f"{prefix}group.{i}.{k}") for k, v in g.items()} for i, g in enumerate(meta["param_groups"])]
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except ValueError as err:
        raise ValueError(
            f"optimizer state does not fit this optimiser ({err}); build it over the same parameters"
        ) from None


def scheduler_state_to_json(scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict[str, Any]:
    """JSON form of ``scheduler.state_dict()`` (tuples and small tensors tagged for an exact round trip).

    Example:
        >>> from torch import nn
        >>> opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
        >>> load_scheduler_state(sched, scheduler_state_to_json(sched))
    """
    return {"type": type(scheduler).__name__, "state": to_json(scheduler.state_dict(), "scheduler state")}


def load_scheduler_state(scheduler: torch.optim.lr_scheduler.LRScheduler, state: Mapping[str, Any]) -> None:
    """Restore a scheduler from :func:`scheduler_state_to_json` output.

    Raises:
        ValueError: the state belongs to another scheduler type.

    Example:
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
        >>> for _ in range(3): opt.step(); sched.step()
        >>> fresh = torch.optim.lr_scheduler.StepLR(opt, step_size=2)
        >>> load_scheduler_state(fresh, scheduler_state_to_json(sched))
        >>> fresh.last_epoch
        3
    """
    if state.get("type") != type(scheduler).__name__:
        raise ValueError(
            f"scheduler state is for {state.get('type')!r}, got a {type(scheduler).__name__}; use the same scheduler"
        )
    scheduler.load_state_dict(from_json(state["state"]))


def rng_state_to_tensors(
    prefix: str = "rng.", *, generators: Mapping[str, torch.Generator | np.random.Generator] | None = None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Capture the torch (CPU and CUDA), numpy-global and python ``random`` states, plus named generators.

    Args:
        prefix: tensor-name prefix.
        generators: extra ``torch.Generator`` / ``numpy.random.Generator`` objects to capture (e.g. an
            episode sampler's), restored by passing the same mapping to :func:`restore_rng_state`.

    Example:
        >>> t, m = rng_state_to_tensors()
        >>> a = torch.rand(1); restore_rng_state(t, m); bool(torch.rand(1) == a)
        True
    """
    tensors: dict[str, Tensor] = {f"{prefix}torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{prefix}cuda.{i}"] = s
    # The legacy global numpy RNG is what np.random.* functions use, so it is the state to capture.
    name, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)  # type: ignore[misc]  # noqa: NPY002
    tensors[f"{prefix}numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, py_state, py_gauss = random.getstate()
    tensors[f"{prefix}python.state"] = torch.tensor(py_state, dtype=torch.int64)
    meta: dict[str, Any] = {
        "numpy": {"name": name, "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "gauss_next": py_gauss},
        "generators": {},
    }
    for key, g in (generators or {}).items():
        if isinstance(g, torch.Generator):
            tensors[f"{prefix}gen.{key}"] = g.get_state()
            meta["generators"][key] = "torch"
        elif isinstance(g, np.random.Generator):
            meta["generators"][key] = {"numpy": to_json(g.bit_generator.state, f"generator {key}")}
        else:
            raise ValueError(
                f"generators[{key!r}] must be a torch.Generator or numpy.random.Generator, got {type(g).__name__}"
            )
    return tensors, meta


def restore_rng_state(
    tensors: Mapping[str, Tensor],
    meta: Mapping[str, Any],
    prefix: str = "rng.",
    *,
    generators: Mapping[str, torch.Generator | np.random.Generator] | None = None,
) -> None:
    """Restore the states captured by :func:`rng_state_to_tensors` (same ``generators`` keys).

    Example:
        >>> g = torch.Generator().manual_seed(1)
        >>> tensors, meta = rng_state_to_tensors(generators={"g": g})
        >>> a, b = random.random(), torch.rand(2, generator=g)
        >>> restore_rng_state(tensors, meta, generators={"g": g})
        >>> random.random() == a, torch.equal(torch.rand(2, generator=g), b)
        (True, True)
    """
    torch.set_rng_state(tensors[f"{prefix}torch"].to(torch.uint8))
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(t for t in tensors if t.startswith(f"{prefix}cuda."))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    npm = meta["numpy"]
    keys = tensors[f"{prefix}numpy.keys"].numpy().astype(np.uint32)
    np.random.set_state((npm["name"], keys, npm["pos"], npm["has_gauss"], npm["gauss"]))  # noqa: NPY002
    py = meta["python"]
    state = tuple(int(x) for x in tensors[f"{prefix}python.state"].tolist())
    random.setstate((py["version"], state, py["gauss_next"]))
    for key, g in (generators or {}).items():
        saved = meta.get("generators", {}).get(key)
        if saved is None:
            raise ValueError(f"no saved state for generator {key!r}; saved: {sorted(meta.get('generators', {}))}")
        kind = "torch" if isinstance(g, torch.Generator) else "numpy"
        saved_kind = "torch" if saved == "torch" else "numpy"
        if kind != saved_kind:
            raise ValueError(
                f"generator {key!r} was saved as a {saved_kind} generator; pass a {saved_kind} one, not {kind}"
            )
        if isinstance(g, torch.Generator):
            g.set_state(tensors[f"{prefix}gen.{key}"])
        else:
            g.bit_generator.state = from_json(saved["numpy"])
