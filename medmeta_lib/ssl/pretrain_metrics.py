"""What a pretraining run records (notebook 02's ``metrics.json``): headline, label-efficiency rows, settings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medmeta_lib.ssl.simclr import PretrainResult
from medmeta_lib.ssl.simclr_config import SimCLRConfig

__all__ = ["pretrain_metrics"]


def pretrain_metrics(
    result: PretrainResult,
    rows: Sequence[dict[str, Any]],
    *,
    config: SimCLRConfig,
    backbone: str,
    hidden: int,
    data_source: str,
    k_ref: int = 10,
) -> dict[str, Any]:
    """The metrics of one SimCLR run and its label-efficiency curve, for the run report and notebook 03.

    Args:
        result: :func:`~medmeta_lib.ssl.simclr.pretrain_simclr`'s result.
        rows: :func:`~medmeta_lib.ssl.probe.label_efficiency`'s rows.
        config: the run's SimCLR settings.
        backbone: the encoder's registry name.
        hidden: its width.
        data_source: the source string the images came from (MedSynth's re-rendered positives read labels).
        k_ref: the labels per class whose probe accuracies are the headline; the first K of ``rows`` when
            ``rows`` has no ``k_ref`` (an all-label point, ``None``, last).

    Returns:
        ``{"headline", "label_efficiency", "history", "settings"}``: the headline holds the final loss, each
        encoder's probe accuracy at the reference K as ``probe_acc_k<K>_<encoder>`` (``kall`` when every
        point uses all labels) and the checkpoint path;
        ``settings["labels_used_in_pretraining"]`` says whether the positives read labels.

    Raises:
        ValueError: if ``rows`` is empty or ``result.history`` holds no loss.

    Example:
        >>> from pathlib import Path
        >>> from torch import nn
        >>> res = PretrainResult(nn.Identity(), [{"loss": 5.1}, {"loss": 4.2}], Path("encoder.safetensors"))
        >>> rows = [{"encoder": "SimCLR", "k_per_class": 10, "acc_mean": 0.8}]
        >>> m = pretrain_metrics(res, rows, config=SimCLRConfig(epochs=2), backbone="conv4", hidden=32,
        ...                      data_source="synthetic")
        >>> m["headline"]["final_loss"], m["headline"]["probe_acc_k10_SimCLR"], m["settings"]["epochs"]
        (4.2, 0.8, 2)
    """
    if not rows:
        raise ValueError("pretrain_metrics: no label-efficiency rows; run label_efficiency first")
    losses = [h["loss"] for h in result.history if "loss" in h]
    if not losses:
        raise ValueError("pretrain_metrics: the pretraining history holds no loss; did pretraining run?")
    shots = [r["k_per_class"] for r in rows]
    k = k_ref if k_ref in shots else next((s for s in shots if s is not None), None)
    probe = {r["encoder"]: r["acc_mean"] for r in rows if r["k_per_class"] == k}
    return {
        "headline": {
            "final_loss": losses[-1],
            **{f"probe_acc_k{k or 'all'}_{name.replace(' ', '_')}": acc for name, acc in probe.items()},
            "encoder_checkpoint": str(result.checkpoint),
        },
        "label_efficiency": list(rows),
        "history": result.history,
        "settings": {
            "backbone": backbone,
            "hidden": hidden,
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "temperature": config.temperature,
            "augment_preset": config.augment_preset,
            "site_invariance": config.site_invariance,
            "site_views": config.site_views,
            "labels_used_in_pretraining": bool(
                config.site_invariance and config.site_views == "auto" and data_source == "synthetic"
            ),
        },
    }
