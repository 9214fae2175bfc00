"""Contrastive pretraining (SimCLR) of the encoder on unlabelled images, and frozen-feature probes.

* :mod:`~medmeta_lib.ssl.simclr` and :mod:`~medmeta_lib.ssl.simclr_config` — SimCLR with exact resume,
  monitors and distributed runs; :mod:`~medmeta_lib.ssl.ntxent` — its NT-Xent loss;
* :mod:`~medmeta_lib.ssl.views` — positive pairs: two augmentations, or the same patient at another
  hospital (site-invariant positives);
* :mod:`~medmeta_lib.ssl.features` — inductive frozen features (population statistics);
* :mod:`~medmeta_lib.ssl.probe` — cosine kNN, linear probe and label-efficiency curves over label draws.

Example:
    >>> from medmeta_lib.ssl import SimCLRConfig
    >>> SimCLRConfig(epochs=1).epochs
    1
"""

from __future__ import annotations

from medmeta_lib.ssl.features import CONV4_BLOCKS_2_4, PooledLayers, extract_features, with_population_stats
from medmeta_lib.ssl.ntxent import nt_xent_loss
from medmeta_lib.ssl.probe import knn_accuracy, label_efficiency, linear_probe, probe_predictor
from medmeta_lib.ssl.simclr import PretrainResult, pretrain_simclr, projection_head
from medmeta_lib.ssl.simclr_config import SimCLRConfig
from medmeta_lib.ssl.views import ContrastiveViews

__all__ = [
    "CONV4_BLOCKS_2_4",
    "ContrastiveViews",
    "PooledLayers",
    "PretrainResult",
    "SimCLRConfig",
    "extract_features",
    "knn_accuracy",
    "label_efficiency",
    "linear_probe",
    "nt_xent_loss",
    "pretrain_simclr",
    "probe_predictor",
    "projection_head",
    "with_population_stats",
]
