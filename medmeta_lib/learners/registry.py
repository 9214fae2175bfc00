"""One registry and one factory for learners (``create_learner(name, backbone, n_way=..., **kw)``)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["create_learner", "learner_class", "learner_kwargs", "list_learners", "register_learner"]

_REGISTRY: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_learner(name: str) -> Callable[[T], T]:
    """Class decorator that registers a :class:`~medmeta_lib.learners.base.Learner` under ``name``.

    Example:
        >>> @register_learner("my-learner")  # doctest: +SKIP
        ... class MyLearner(Learner): ...
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"learner name must be a non-empty string, got {name!r}")

    def deco(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"learner name {name!r} is already registered by {_REGISTRY[name].__name__}")
        _REGISTRY[name] = cls
        return cls

    return deco


def _ensure_builtins() -> None:
    import medmeta_lib.learners  # noqa: F401  (importing the package registers the built-in learners)


def list_learners() -> list[str]:
    """Names of the registered learners, sorted.

    Example:
        >>> "maml" in list_learners()
        True
    """
    _ensure_builtins()
    return sorted(_REGISTRY)


def learner_class(name: str) -> type:
    """The class registered under ``name`` (``ValueError`` listing the names if unknown).

    Example:
        >>> learner_class("protonet").__name__, learner_class("baseline++").__name__
        ('ProtoNet', 'BaselinePlusPlus')
    """
    _ensure_builtins()
    if name not in _REGISTRY:
        raise ValueError(f"unknown learner {name!r}; choose one of {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def learner_kwargs(name: str) -> dict[str, Any]:
    """The keyword arguments ``name`` accepts (beyond ``backbone`` and ``n_way``) and their defaults.

    Example:
        >>> learner_kwargs("maml")["inner_steps"]
        5
    """
    sig = inspect.signature(learner_class(name))
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in sig.parameters.values()
        if p.name not in ("backbone", "n_way") and p.kind is p.KEYWORD_ONLY
    }


def create_learner(name: str, backbone: nn.Module, *, n_way: int, transductive: bool = False, **kw: Any) -> Any:
    """Build the learner ``name`` around ``backbone``.

    Args:
        name: one of :func:`list_learners` (``maml``, ``fomaml``, ``metasgd``, ``anil``,
            ``protonet``, ``baseline``, ``baseline++``, ``scratch``).
        backbone: feature extractor with an ``out_features`` attribute.
        n_way: classes per task.
        transductive: normalise queries with the statistics of the batch they are predicted in
            (and meta-train that way) instead of the support set's; off by default, so that a
            prediction depends on the support set and the image alone (see ``Learner.transductive``).
        **kw: the learner's hyper-parameters (see :func:`learner_kwargs`).

    Raises:
        ValueError: unknown name, unknown keyword, or an invalid hyper-parameter.

    Example:
        >>> from medmeta_lib.models.backbones import create_backbone  # doctest: +SKIP
        >>> learner = create_learner("maml", create_backbone("conv4"), n_way=5, inner_steps=5)  # doctest: +SKIP
    """
    cls = learner_class(name)
    allowed = learner_kwargs(name)
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(f"learner {name!r} does not take {unknown}; it accepts {sorted(allowed)}")
    learner = cls(backbone, n_way=n_way, **kw)
    learner.transductive = transductive
    return learner
