"""Meta-training tasks made from a dataset's own unlabelled images (CACTUs), for ``fewshot_recipes.py``.

CACTUs (Hsu, Levine & Finn, ICLR 2019, "Unsupervised Learning via Meta-Learning") clusters unlabelled images in an
unsupervised embedding several times over and treats each cluster of one clustering as a class: a task's classes
are clusters of one partition. Here the embedding is the SimCLR encoder's own (its pooled output, L2-normalised),
and the tasks then meta-train a ProtoNet from that encoder in place of MedSynth's
(``--meta ENCODER:protonet:300:tasks=cactus``; BENCHMARKS.md section 21, rule 17). No label is read.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.cluster import KMeans
from torch import nn

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.learners.base import check_int

__all__ = ["cactus_tasks"]


def cactus_tasks(
    encoder: nn.Module,
    images: torch.Tensor,
    *,
    partitions: int = 20,
    clusters: int = 50,
    min_size: int = 20,
    batch: int = 512,
) -> ImageCollection:
    """Every (partition, cluster) of ``partitions`` k-means runs on the encoder's embeddings, as a labelled set.

    Args:
        encoder: the encoder whose embeddings are clustered (set to eval mode).
        images: the unlabelled images, ``(N, C, H, W)``.
        partitions: k-means runs (seeds ``0 .. partitions - 1``); each is one task group.
        clusters: clusters per run.
        min_size: clusters with fewer images are dropped (a task needs support + query images of a class).
        batch: images embedded at a time.

    Returns:
        An ``ImageCollection`` with each image once per partition, one class per kept cluster, and
        ``class_modalities`` naming each class's partition (so tasks draw their classes within one partition).
        ``meta["cluster_sizes"]`` lists the kept clusters' sizes.

    Raises:
        ValueError: for a bad ``partitions``, ``clusters`` or ``min_size``.

    Example:
        >>> enc = create_backbone("conv4", hidden=8)  # doctest: +SKIP
        >>> cactus_tasks(enc, torch.rand(300, 1, 28, 28), partitions=2, clusters=5).num_classes  # doctest: +SKIP
        10
    """
    partitions = check_int("partitions", partitions, 1)
    clusters = check_int("clusters", clusters, 1)
    min_size = check_int("min_size", min_size, 1)
    encoder.eval()
    with torch.no_grad():
        emb = torch.cat([encoder(images[i : i + batch]) for i in range(0, len(images), batch)])
    emb = nn.functional.normalize(emb.flatten(1), dim=1).numpy().astype(np.float64)
    idx, labels, groups, sizes = [], [], [], []
    for p in range(partitions):
        assign = KMeans(n_clusters=clusters, n_init=1, random_state=p).fit_predict(emb)
        for c in range(clusters):
            members = np.flatnonzero(assign == c)
            if len(members) >= min_size:
                idx.append(members)
                labels.append(np.full(len(members), len(sizes)))
                groups.append(f"partition{p}")
                sizes.append(len(members))
    order = torch.from_numpy(np.concatenate(idx))
    return ImageCollection(
        images=images[order],
        labels=torch.from_numpy(np.concatenate(labels)),
        class_names=tuple(f"{g}/cluster{i}" for i, g in enumerate(groups)),
        class_modalities=tuple(groups),
        source="cactus",
        meta={"cluster_sizes": sizes},
    )
