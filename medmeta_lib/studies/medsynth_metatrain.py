"""The meta-training stage of pretrain → meta-train: a learner meta-trained on MedSynth from a pretrained encoder.

A SimCLR encoder learns features from a dataset's unlabelled images; it has never been asked to compare a
query with a handful of labelled examples. Meta-training it as a ProtoNet on many small synthetic tasks
(MedSynth, 5-way 5-shot, 15 queries per class, every modality, tasks drawn within one modality) teaches
it exactly that, with no label of the target dataset: ``L(θ) = (1/T) Σ_i L_i(θ)`` over ``T = 4`` MedSynth
tasks per step. The learner is then set to the target's number of classes and adapted to each support
set (for ProtoNet: one prototype per class, every query image classified on its own).

On PneumoniaMNIST's validation split this stage was chosen over every probe head (BENCHMARKS.md
section 10); MedSynth is greyscale, so for an RGB target its images are repeated over three channels
(the encoder's first layer sees grey images during meta-training).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.data.sources import load_collection
from medmeta_lib.learners.base import check_int
from medmeta_lib.training.learner_io import build_learner
from medmeta_lib.training.meta_training import MetaTrainConfig, meta_train

__all__ = ["MEDSYNTH_TASKS", "medsynth_train_split", "metatrain_on_medsynth", "metatrain_on_tasks"]

#: the meta-training tasks: classes per task, support and query images per class
MEDSYNTH_TASKS = {"n_way": 5, "k_shot": 5, "q_query": 15}


def medsynth_train_split(
    *, image_size: int = 28, channels: int = 1, n_per_class_site: int = 40, seed: int = 0, taxonomy: str = "coarse"
) -> ImageCollection:
    """The MedSynth images :func:`metatrain_on_medsynth` meta-trains on, at a target's size and channels.

    Args:
        image_size: the target's image side; MedSynth is generated at that size.
        channels: the target's channels (1 or 3); MedSynth's greyscale images are repeated to match.
        n_per_class_site: images per class and site (30 classes, 4 sites; 96 classes with ``"fine"``).
        seed: the generation seed.
        taxonomy: ``"coarse"`` (one class per finding) or ``"fine"`` (each finding split by side and size or
            severity; harder tasks within a modality).

    Raises:
        ValueError: for a bad ``channels``, ``n_per_class_site`` or ``taxonomy``.

    Example:
        >>> medsynth_train_split(n_per_class_site=1).images.shape
        torch.Size([120, 1, 28, 28])
    """
    n_per_class_site = check_int("n_per_class_site", n_per_class_site, 1)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}")
    synth = load_collection(
        "synthetic",
        split="train",
        image_size=image_size,
        n_per_class_site=n_per_class_site,
        seed=seed,
        taxonomy=taxonomy,
    )
    if channels == 3:
        synth = replace(synth, images=synth.images.expand(-1, 3, -1, -1).contiguous())
    return synth


def metatrain_on_medsynth(
    encoder: str | Path,
    *,
    n_way: int,
    channels: int = 1,
    image_size: int = 28,
    learner: str = "protonet",
    learner_kwargs: Mapping[str, Any] | None = None,
    steps: int = 300,
    n_per_class_site: int = 40,
    seed: int = 0,
    taxonomy: str = "coarse",
    progress: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Meta-train ``learner`` on MedSynth tasks starting from ``encoder``, then set it to ``n_way`` classes.

    Args:
        encoder: an encoder checkpoint (``save_backbone`` or a SimCLR checkpoint); it fixes the architecture.
        n_way: classes of the target task the returned learner predicts.
        channels: the target's channels (1 or 3); MedSynth's greyscale images are repeated to match.
        image_size: the target's image side; MedSynth is generated at that size.
        learner: a learner name (``create_learner``); ProtoNet is the measured choice.
        learner_kwargs: its keyword arguments (e.g. ``{"metric": "cosine"}`` for Meta-Baseline's ProtoNet).
        steps: outer steps (4 tasks each).
        n_per_class_site: MedSynth images per class and site (30 classes, 4 sites; 96 classes with ``"fine"``).
        seed: seed of MedSynth, the episode stream and the learner.
        taxonomy: MedSynth's class taxonomy, ``"coarse"`` (the measured choice) or ``"fine"``.
        progress: show the meta-training progress bar.

    Returns:
        ``(learner, info)``; ``info`` records the data, tasks, steps, seconds and the first and last loss.

    Raises:
        ValueError: for a bad ``n_way``, ``channels``, ``steps``, ``n_per_class_site`` or ``taxonomy``.

    Example:
        >>> lr, info = metatrain_on_medsynth("runs/fewshot/encoder.safetensors", n_way=2)  # doctest: +SKIP
        >>> lr.adapt(support_x, support_y)[0](test_images).argmax(-1)  # doctest: +SKIP
    """
    n_way = check_int("n_way", n_way, 2)
    steps = check_int("steps", steps, 1)
    t0 = time.perf_counter()
    synth = medsynth_train_split(
        image_size=image_size, channels=channels, n_per_class_site=n_per_class_site, seed=seed, taxonomy=taxonomy
    )
    lr, info = metatrain_on_tasks(
        encoder,
        synth,
        n_way=n_way,
        learner=learner,
        learner_kwargs=learner_kwargs,
        steps=steps,
        seed=seed,
        progress=progress,
    )
    info["data"] = f"MedSynth train, {len(synth)} images, {synth.num_classes} classes, {synth.num_sites} sites"
    info["seconds"] = round(time.perf_counter() - t0, 1)  # MedSynth's generation included
    return lr, info


def metatrain_on_tasks(
    encoder: str | Path,
    tasks: ImageCollection,
    *,
    n_way: int,
    learner: str = "protonet",
    learner_kwargs: Mapping[str, Any] | None = None,
    steps: int = 300,
    seed: int = 0,
    progress: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Meta-train ``learner`` from ``encoder`` on tasks drawn from ``tasks``, then set it to ``n_way`` classes.

    The tasks have :data:`MEDSYNTH_TASKS`' shape (5-way 5-shot, 15 queries per class), their classes drawn
    within one group of ``tasks.class_modalities`` when it has them (a MedSynth modality, or one clustering of
    unlabelled images whose clusters are the classes); 4 tasks per outer step.

    Args:
        encoder: an encoder checkpoint; it fixes the architecture.
        tasks: the labelled images tasks are drawn from (at least 5 classes of at least 20 images).
        n_way: classes of the target task the returned learner predicts.
        learner: a learner name (``create_learner``).
        learner_kwargs: its keyword arguments.
        steps: outer steps (4 tasks each).
        seed: seed of the episode stream and the learner.
        progress: show the meta-training progress bar.

    Returns:
        ``(learner, info)``, as :func:`metatrain_on_medsynth`'s.

    Raises:
        ValueError: for a bad ``n_way`` or ``steps``, or ``tasks`` too small for the task shape.

    Example:
        >>> lr, info = metatrain_on_tasks("encoder.safetensors", my_collection, n_way=2)  # doctest: +SKIP
    """
    n_way = check_int("n_way", n_way, 2)
    steps = check_int("steps", steps, 1)
    t0 = time.perf_counter()
    t = MEDSYNTH_TASKS
    grouped = tasks.class_modalities is not None
    try:  # the sampler checks that the collection (each group of it) has enough classes of enough images
        sampler = EpisodeSampler(tasks, t["n_way"], t["k_shot"], t["q_query"], seed=seed, same_modality=grouped)
    except ValueError as err:
        raise ValueError(
            f"{err} metatrain_on_tasks fixes that task shape (MEDSYNTH_TASKS): add classes or images instead "
            "(metatrain_on_medsynth's MedSynth always has enough)"
        ) from err
    lr = build_learner(
        learner, n_way=t["n_way"], in_channels=tasks.channels, encoder=encoder, learner_kwargs=learner_kwargs, seed=seed
    )
    cfg = MetaTrainConfig(steps=steps, meta_batch=4, val_every=0, seed=seed)
    res = meta_train(lr, sampler, config=cfg, progress=progress, metadata={"data_source": tasks.source})
    res.learner.set_n_way(n_way)
    res.learner.spec["n_way"] = n_way  # a saved copy (save_learner) is rebuilt for the target's classes
    losses = [h["loss"] for h in res.history if "loss" in h]
    info = {
        "learner": learner,
        "learner_kwargs": dict(learner_kwargs or {}),
        "data": f"{tasks.source} {tasks.split}, {len(tasks)} images, {tasks.num_classes} classes",
        "tasks": dict(MEDSYNTH_TASKS),
        "steps": steps,
        "meta_batch": cfg.meta_batch,
        "seconds": round(time.perf_counter() - t0, 1),
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
    }
    return res.learner, info
