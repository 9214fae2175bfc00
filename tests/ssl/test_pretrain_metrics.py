"""``pretrain_metrics``: notebook 02's record of a SimCLR run (headline, curve, settings) from real results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch import nn

from medmeta_lib.ssl import PretrainResult, SimCLRConfig, pretrain_metrics

ROWS = [
    {"encoder": enc, "k_per_class": k, "acc_mean": acc}
    for enc, accs in (
        ("raw pixels", (0.5, 0.55, 0.7)),
        ("random init", (0.55, 0.6, 0.75)),
        ("SimCLR", (0.7, 0.75, 0.9)),
    )
    for k, acc in zip((1, 5, None), accs, strict=True)
]


def _result(history: list) -> PretrainResult:
    return PretrainResult(nn.Identity(), history, Path("run/encoder.safetensors"))


def test_the_headline_holds_the_last_loss_and_each_encoders_probe_at_the_reference_k() -> None:
    history = [{"loss": 5.0}, {"step": 1, "knn_acc": 0.4, "probe_acc": 0.5}, {"loss": 4.1}, {"knn_acc": 0.6}]
    cfg = SimCLRConfig(epochs=3, batch_size=64, temperature=0.3, augment_preset="chest_xray")
    m = pretrain_metrics(_result(history), ROWS, config=cfg, backbone="conv4", hidden=32, data_source="x.npz", k_ref=5)
    assert m["headline"] == {
        "final_loss": 4.1,  # the last loss, not the last history entry (a monitor)
        "probe_acc_k5_raw_pixels": 0.55,
        "probe_acc_k5_random_init": 0.60,
        "probe_acc_k5_SimCLR": 0.75,
        "encoder_checkpoint": str(Path("run/encoder.safetensors")),
    }
    assert m["label_efficiency"] == ROWS and m["history"] == history
    assert m["settings"] == {
        "backbone": "conv4",
        "hidden": 32,
        "epochs": 3,
        "batch_size": 64,
        "temperature": 0.3,
        "augment_preset": "chest_xray",
        "site_invariance": False,
        "site_views": "auto",
        "labels_used_in_pretraining": False,
    }
    json.dumps(m)  # written as metrics.json


def test_the_reference_k_falls_back_to_the_first_k_measured_and_labels_used_is_flagged() -> None:
    res = _result([{"loss": 3.0}])
    cfg = SimCLRConfig(epochs=1, site_invariance=True)
    m = pretrain_metrics(res, ROWS, config=cfg, backbone="conv4", hidden=8, data_source="synthetic")  # no K = 10
    assert m["headline"]["probe_acc_k1_SimCLR"] == 0.7
    assert m["settings"]["labels_used_in_pretraining"]  # MedSynth re-rendering reads each image's class
    label_free = SimCLRConfig(epochs=1, site_invariance=True, site_views="scanner_shift")
    assert not pretrain_metrics(res, ROWS, config=label_free, backbone="conv4", hidden=8, data_source="synthetic")[
        "settings"
    ]["labels_used_in_pretraining"]
    assert not pretrain_metrics(res, ROWS, config=cfg, backbone="conv4", hidden=8, data_source="my.npz")["settings"][
        "labels_used_in_pretraining"
    ]  # outside MedSynth the positives are scanner shifts
    all_labels = [r for r in ROWS if r["k_per_class"] is None]
    m = pretrain_metrics(res, all_labels, config=cfg, backbone="conv4", hidden=8, data_source="x.npz")
    assert m["headline"]["probe_acc_kall_SimCLR"] == 0.9


def test_an_empty_curve_or_a_history_without_loss_is_refused() -> None:
    cfg = SimCLRConfig(epochs=1)
    with pytest.raises(ValueError, match="no label-efficiency rows"):
        pretrain_metrics(_result([{"loss": 1.0}]), [], config=cfg, backbone="conv4", hidden=8, data_source="x")
    with pytest.raises(ValueError, match="holds no loss"):
        pretrain_metrics(_result([{"knn_acc": 0.5}]), ROWS, config=cfg, backbone="conv4", hidden=8, data_source="x")
