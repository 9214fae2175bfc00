"""Contrastive pretraining (SimCLR) of the encoder on unlabelled images, and frozen-feature probes.

* :mod:`~medmeta_lib.ssl.simclr` and :mod:`~medmeta_lib.ssl.simclr_config` — SimCLR with exact resume,
  monitors and distributed runs; :mod:`~medmeta_lib.ssl.ntxent` — its NT-Xent loss;
* :mod:`~medmeta_lib.ssl.views` — positive pairs: two augmentations, or the same patient at another
  hospital (site-invariant positives);
* :mod:`~medmeta_lib.ssl.features` — inductive frozen features (population statistics);
* :mod:`~medmeta_lib.ssl.probe` — cosine kNN, linear probe and label-efficiency curves over label draws;
* :mod:`~medmeta_lib.ssl.heads` — few-shot heads on frozen features: SimpleShot's centring + L2 transform,
  cosine nearest centroid, ensembles, test-time-augmented features, a head by name;
* :mod:`~medmeta_lib.ssl.finetune` — LP-FT: the probe, then the encoder fine-tuned on each support set;
* :mod:`~medmeta_lib.ssl.self_training` — self-training: class-balanced pseudo-labels from the unlabelled pool,
  one refit (still inductive on the scored images);
* :mod:`~medmeta_lib.ssl.pretrain_metrics` — what a pretraining run records (notebook 02's metrics).

Example:
    >>> from medmeta_lib.ssl import SimCLRConfig
    >>> SimCLRConfig(epochs=1).epochs
    1
"""

from __future__ import annotations

from medmeta_lib.ssl.features import CONV4_BLOCKS_2_4, PooledLayers, extract_features, with_population_stats
from medmeta_lib.ssl.finetune import finetune_predictor
from medmeta_lib.ssl.heads import (
    HEAD_C,
    HEAD_NAMES,
    centred_l2,
    ensemble_predictor,
    head_predictor,
    nearest_centroid_predictor,
    tta_features,
)
from medmeta_lib.ssl.ntxent import nt_xent_loss
from medmeta_lib.ssl.pretrain_metrics import pretrain_metrics
from medmeta_lib.ssl.probe import knn_accuracy, label_efficiency, linear_probe, probe_predictor
from medmeta_lib.ssl.self_training import probe_member, prototype_member, pseudo_label, self_trained_predictor
from medmeta_lib.ssl.simclr import PretrainResult, pretrain_simclr, projection_head
from medmeta_lib.ssl.simclr_config import SimCLRConfig
from medmeta_lib.ssl.views import ContrastiveViews

__all__ = [
    "CONV4_BLOCKS_2_4",
    "HEAD_C",
    "HEAD_NAMES",
    "ContrastiveViews",
    "PooledLayers",
    "PretrainResult",
    "SimCLRConfig",
    "centred_l2",
    "ensemble_predictor",
    "extract_features",
    "finetune_predictor",
    "head_predictor",
    "knn_accuracy",
    "label_efficiency",
    "linear_probe",
    "nearest_centroid_predictor",
    "nt_xent_loss",
    "pretrain_metrics",
    "pretrain_simclr",
    "probe_member",
    "probe_predictor",
    "projection_head",
    "prototype_member",
    "pseudo_label",
    "self_trained_predictor",
    "tta_features",
    "with_population_stats",
]
