"""Support-set predictors on precomputed embeddings that ``fewshot_recipes.py`` scores beside the library's.

- :func:`prototype_predictor`: a ProtoNet's own rule (softmax of minus the squared distance to each class mean
  of the support embeddings), for ``--meta-tta``;
- :func:`soft_kmeans_predictor`: the same, with the prototypes refined once by soft k-means over the unlabelled
  train images (Ren et al. 2018, "Meta-Learning for Semi-Supervised Few-Shot Classification"), for ``--meta-skm``;
- :func:`self_trained_recipe`: the command's recipe with ``medmeta_lib.ssl.self_training``, for ``--self-train``.

Each returns ``support indices -> class probabilities of the scored images``; no scored image is used by another's
prediction (the unlabelled images are the train pool's).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medmeta_lib.learners.protonet import prototype_logits, prototypes
from medmeta_lib.ssl.heads import HEAD_C
from medmeta_lib.studies.fewshot_recipe import self_trained_recipe as recipe_predictor

__all__ = ["prototype_predictor", "self_trained_recipe", "soft_kmeans_predictor"]


def prototype_predictor(ftr: np.ndarray, fte: np.ndarray, labels: np.ndarray) -> Any:
    """Softmax of minus the squared distance of each scored embedding to each class mean of the support's."""
    emb, n_way = torch.from_numpy(fte), int(labels.max()) + 1

    def predict(idx: np.ndarray) -> np.ndarray:
        protos = prototypes(torch.from_numpy(ftr[idx]), torch.from_numpy(labels[idx]), n_way)
        return prototype_logits(emb, protos).softmax(-1).numpy()

    return predict


def soft_kmeans_predictor(ftr: np.ndarray, fte: np.ndarray, labels: np.ndarray) -> Any:
    """:func:`prototype_predictor` after one soft k-means step over the pool's other images (Ren et al. 2018).

    Each unlabelled pool image j gets z_jc = softmax_c(-||h_j - p_c||^2) from the support prototypes p_c; then
    p_c <- (sum of the support embeddings of c + sum_j z_jc h_j) / (K_c + sum_j z_jc). Only the support
    indices' labels are read.
    """
    emb, pool, n_way = torch.from_numpy(fte), torch.from_numpy(ftr), int(labels.max()) + 1

    def predict(idx: np.ndarray) -> np.ndarray:
        y = torch.from_numpy(labels[idx])
        protos = prototypes(pool[idx], y, n_way)
        free = torch.ones(len(pool), dtype=torch.bool)
        free[torch.from_numpy(idx)] = False
        unl = pool[free]
        z = prototype_logits(unl, protos).softmax(-1)  # (M, n_way) soft assignments
        counts = torch.bincount(y, minlength=n_way).to(pool.dtype)
        refined = (protos * counts[:, None] + z.T @ unl) / (counts + z.sum(0))[:, None]
        return prototype_logits(emb, refined).softmax(-1).numpy()

    return predict


def self_trained_recipe(
    enc: str,
    per_class: int,
    learners: dict[str, Any],
    probe_feats: tuple[np.ndarray, np.ndarray],
    train: Any,
    test: Any,
) -> Any:
    """``--self-train ENCODER:M``: the command's recipe (the mean of ``ENC/protonet300``, ``_m1``, ``_m2``, 1:1 with
    ``ENC/probe+tta``), refitted once on support + M pseudo-labelled train-pool images per class
    (``medmeta_lib.studies.fewshot_recipe.self_trained_recipe``, what the command scores)."""
    names = (f"{enc}/protonet300", f"{enc}/protonet300_m1", f"{enc}/protonet300_m2")
    if any(n not in learners for n in names):
        raise SystemExit(f"--self-train {enc}:{per_class} needs --meta {enc}:protonet:300 with seeds 0, 1 and 2")
    protonets = [learners[n] for n in names]
    labels = train.labels.numpy()
    return lambda: recipe_predictor(
        protonets, train.images, test.images, labels, per_class=per_class, probe_features=probe_feats, C=HEAD_C["probe"]
    )
