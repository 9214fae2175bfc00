"""Normalisation layers for the backbones: one switch (``norm=``) for batch, group, instance or none.

Every layer made here keeps no running statistics, so it is safe inside ``torch.func`` transforms and a
prediction never depends on what the network saw before; ``"batch"`` is the task-aware
:class:`~medmeta_lib.models.task_norm.TaskBatchNorm2d`. :func:`replace_norm` applies the same rule to
third-party networks (MONAI).
"""

from __future__ import annotations

from torch import nn

from medmeta_lib.models.task_norm import TaskBatchNorm2d

__all__ = ["NORMS", "check_norm", "make_norm", "replace_norm"]


NORMS = ("batch", "group", "instance", "none")


def check_norm(norm: str) -> str:
    """``norm`` if it names a normalisation this module makes, else ``ValueError`` listing them.

    Example:
        >>> check_norm("group")
        'group'
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def _groups(channels: int, max_groups: int = 8) -> int:
    return max(g for g in range(1, max_groups + 1) if channels % g == 0)


def make_norm(norm: str, channels: int) -> nn.Module:
    """A 2-D normalisation layer without running statistics (safe inside ``torch.func`` transforms).

    Args:
        norm: ``"batch"`` (``TaskBatchNorm2d``: batch statistics, or a recorded context's), ``"group"``
            (GroupNorm, up to 8 groups), ``"instance"`` (InstanceNorm2d, affine) or ``"none"`` (Identity).
        channels: number of channels.

    Example:
        >>> make_norm("batch", 16).track_running_stats
        False
    """
    check_norm(norm)
    if norm == "batch":
        return TaskBatchNorm2d(channels)
    if norm == "group":
        return nn.GroupNorm(_groups(channels), channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)
    return nn.Identity()


_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


def replace_norm(module: nn.Module, norm: str) -> nn.Module:
    """Replace every batch/group/instance norm inside ``module`` by ``make_norm(norm, channels)``, in place.

    Used to make third-party networks (MONAI) free of running statistics.

    Returns:
        ``module`` (or the new layer when ``module`` itself is a norm layer).

    Example:
        >>> m = replace_norm(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4)), "group")
        >>> type(m[1]).__name__
        'GroupNorm'
    """
    check_norm(norm)
    if isinstance(module, _NORM_TYPES):
        return make_norm(norm, _channels(module))
    for child_name, child in module.named_children():
        if isinstance(child, _NORM_TYPES):
            setattr(module, child_name, make_norm(norm, _channels(child)))
        else:
            replace_norm(child, norm)
    return module


def _channels(layer: nn.Module) -> int:
    if isinstance(layer, nn.GroupNorm):
        return int(layer.num_channels)
    return int(layer.num_features)  # type: ignore[arg-type]
