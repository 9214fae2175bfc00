"""Learners from their spec, and back: build a backbone + learner, save it (with optimiser state), load it.

A learner built here carries a spec (learner, its keyword arguments, n_way, backbone name and
arguments, the encoder it started from) that is stored in every checkpoint, so
:func:`load_learner` rebuilds exactly the trained architecture from a safetensors file (no unpickling).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["build_learner", "load_learner", "save_learner"]


def build_learner(
    name: str,
    *,
    backbone: str = "conv4",
    backbone_kwargs: Mapping[str, Any] | None = None,
    n_way: int = 5,
    in_channels: int = 1,
    encoder: str | Path | None = None,
    learner_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> Any:
    """Create a backbone and a learner around it, optionally initialised from a notebook-02 encoder.

    The learner gets a ``spec`` attribute (everything needed to rebuild it from a checkpoint).

    Args:
        name: learner name (see ``medmeta_lib.learners.list_learners()``).
        backbone: backbone name.
        backbone_kwargs: its keyword arguments.
        n_way: classes per task.
        in_channels: image channels.
        encoder: path of an encoder checkpoint (``save_backbone`` / SimCLR) to start from; its
            backbone must match (name and arguments), else ``ValueError``.
        learner_kwargs: learner hyper-parameters (inner_lr, inner_steps, ...).
        seed: torch seed for the random initialisation (``torch.manual_seed``: the global generator).

    Example:
        >>> learner = build_learner("protonet", backbone_kwargs={"hidden": 32}, n_way=5)  # doctest: +SKIP
    """
    from medmeta_lib.learners import create_learner
    from medmeta_lib.models import create_backbone

    torch.manual_seed(seed)
    bkw = dict(backbone_kwargs or {})
    if encoder is not None:
        from medmeta_lib.training.checkpoint import load_backbone

        net = load_backbone(encoder, expected_name=backbone, in_channels=in_channels, **bkw)
        # the encoder fixes the architecture: record its arguments (arguments that contradict it were
        # refused above), so that load_learner rebuilds the backbone that was actually trained
        spec: dict[str, Any] = net.spec  # type: ignore[assignment]
        bkw = {k: v for k, v in spec["kwargs"].items() if k != "in_channels"}
    else:
        net = create_backbone(backbone, in_channels=in_channels, **bkw)
    lkw = dict(learner_kwargs or {})
    learner = create_learner(name, net, n_way=n_way, **lkw)
    learner.spec = {
        "learner": name,
        "learner_kwargs": lkw,
        "n_way": n_way,
        "backbone": {"name": backbone, "kwargs": {"in_channels": in_channels, **bkw}},
        "encoder": str(encoder) if encoder else None,
    }
    return learner


def save_learner(path: Path, learner: Any, optimizer: torch.optim.Optimizer | None, meta: dict[str, Any]) -> Path:
    """Write ``learner`` (its ``spec``, weights and, if given, the optimiser state) to a safetensors checkpoint.

    ``meta`` is stored as JSON beside the tensors (the training loop records step, history and the
    episode stream's state there). The write is atomic.

    Example:
        >>> save_learner(Path("runs/protonet.safetensors"), build_learner("protonet"), None, {})  # doctest: +SKIP
    """
    from medmeta_lib.training.checkpoint import save_checkpoint
    from medmeta_lib.training.train_state import optimizer_state_to_tensors

    tensors = {f"learner.{k}": v.detach().contiguous() for k, v in learner.state_dict().items()}
    meta = {**meta, "kind": "learner", "spec": getattr(learner, "spec", None)}
    if optimizer is not None:
        ot, om = optimizer_state_to_tensors(optimizer)
        tensors.update(ot)
        meta["optimizer"] = om
    return save_checkpoint(path, tensors, meta)


def load_learner(path: str | Path, *, expect_learner: str | None = None) -> Any:
    """Rebuild a learner from a ``meta_train`` checkpoint (no unpickling: safetensors + JSON).

    It is built with :func:`build_learner`, which seeds torch's global generator (``seed=0``), then given the
    checkpoint's weights; so loading also resets that generator, and a learner that draws a fresh head when it
    adapts (Baseline, Scratch) starts from the same state after every load. Documented figures rely on this.

    Raises:
        ValueError: the file is not a learner checkpoint, or holds another learner than expected.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     path = save_learner(Path(d) / "p.safetensors", build_learner("protonet", n_way=2), None, {})
        ...     learner = load_learner(path, expect_learner="protonet")
        >>> type(learner).__name__, learner.n_way, learner.spec["backbone"]
        ('ProtoNet', 2, {'name': 'conv4', 'kwargs': {'in_channels': 1}})
    """
    from medmeta_lib.training.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
    spec = ck.metadata.get("spec")
    if ck.metadata.get("kind") != "learner" or not isinstance(spec, dict):
        raise ValueError(
            f"{path}: not a learner checkpoint (kind={ck.metadata.get('kind')!r}); pass a meta-train checkpoint"
        )
    if expect_learner is not None and spec["learner"] != expect_learner:
        raise ValueError(f"{path}: holds learner {spec['learner']!r}, expected {expect_learner!r}")
    b = spec["backbone"]
    kw = {k: v for k, v in b["kwargs"].items() if k != "in_channels"}
    learner = build_learner(
        spec["learner"],
        backbone=b["name"],
        backbone_kwargs=kw,
        n_way=spec["n_way"],
        in_channels=b["kwargs"].get("in_channels", 1),
        learner_kwargs=spec["learner_kwargs"],
    )
    state = {k[len("learner.") :]: v for k, v in ck.tensors.items() if k.startswith("learner.")}
    learner.load_state_dict(state, strict=True)
    return learner
