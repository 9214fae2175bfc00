"""``fewshot_recipes.py --meta``: learners meta-trained from a SimCLR encoder, saved and reloaded by encoder checksum.

A spec ``ENCODER:LEARNER:STEPS[:key=value,...]`` meta-trains ``LEARNER`` for ``STEPS`` outer steps from the encoder
file, on MedSynth's coarse (``tasks=medsynth``, the default) or fine (``tasks=medsynth_fine``) classes, or on CACTUs
tasks from the train pool's unlabelled images (``tasks=cactus``); ``seed=N`` sets the meta-training seed, other keys
are the learner's arguments. A learner saved by an earlier run for the same encoder bytes is reloaded.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path
from typing import Any

from cactus_tasks import cactus_tasks

from medmeta_lib.studies.medsynth_metatrain import metatrain_on_medsynth, metatrain_on_tasks
from medmeta_lib.training.checkpoint import load_backbone, load_checkpoint
from medmeta_lib.training.learner_io import load_learner, save_learner

__all__ = ["meta_learners"]


def meta_learners(a: argparse.Namespace, train: Any) -> dict[str, Any]:
    """``--meta ENCODER:LEARNER:STEPS``: the learner meta-trained on MedSynth (5-way 5-shot, all modalities;
    ``medmeta_lib.studies.medsynth_metatrain``) starting from the encoder, then set to 2 ways; with ``tasks=cactus``
    on clusters of the train pool's unlabelled images instead (``cactus_tasks.py``)."""
    out: dict[str, Any] = {}
    clustered: dict[str, Any] = {}  # the CACTUs tasks of each encoder, shared by its meta-training seeds
    for spec in a.meta:  # ENCODER:LEARNER:STEPS[:key=value,...], e.g. c4w64_e300:protonet:300:metric=cosine
        enc_name, learner, steps, *extra = spec.split(":")
        kw = dict(item.split("=", 1) for item in extra[0].split(",")) if extra else {}
        seed = int(kw.pop("seed", a.seed))  # meta-training seed (MedSynth, episodes, learner); not the draws'
        name = f"{enc_name}/{learner}{steps}" + "".join(f"_{v}" for v in kw.values())
        tasks = kw.pop("tasks", "medsynth")  # or "cactus": clusters of the target's unlabelled train images
        name += f"_m{seed}" if seed != a.seed else ""
        saved = Path(a.encoders) / "meta" / f"{name.replace('/', '__')}.safetensors"
        path = Path(a.encoders) / f"{enc_name}.safetensors"
        enc_sha = hashlib.sha256(path.read_bytes()).hexdigest()  # a retrained encoder invalidates the saved learner
        if saved.exists() and load_checkpoint(saved).metadata.get("encoder_sha256") == enc_sha:
            out[name] = load_learner(saved)  # meta-trained by an earlier run (e.g. the validation one)
            print(f"{name}: loaded {saved}", flush=True)
            continue
        t0 = time.process_time()
        if tasks == "cactus":
            if enc_name not in clustered:
                clustered[enc_name] = cactus_tasks(load_backbone(path), train.images)
                sizes = clustered[enc_name].meta["cluster_sizes"]
                cpu = time.process_time() - t0
                print(
                    f"{enc_name}: {len(sizes)} CACTUs clusters of {min(sizes)}-{max(sizes)}, {cpu:.0f} CPU s",
                    flush=True,
                )
            out[name], info = metatrain_on_tasks(
                path, clustered[enc_name], n_way=2, learner=learner, learner_kwargs=kw, steps=int(steps), seed=seed
            )
            info["cluster_sizes"] = clustered[enc_name].meta["cluster_sizes"]
        elif tasks in ("medsynth", "medsynth_fine"):  # MedSynth's coarse (30) or fine (96) classes
            taxonomy = "fine" if tasks == "medsynth_fine" else "coarse"
            out[name], info = metatrain_on_medsynth(
                path, n_way=2, learner=learner, learner_kwargs=kw, steps=int(steps), seed=seed, taxonomy=taxonomy
            )
        else:
            raise SystemExit(f"--meta {spec}: tasks must be medsynth, medsynth_fine or cactus, got {tasks!r}")
        saved.parent.mkdir(exist_ok=True)
        save_learner(saved, out[name], None, {"meta_train": info, "encoder": str(path), "encoder_sha256": enc_sha})
        print(f"{name}: meta-trained in {time.process_time() - t0:.0f} CPU s, saved to {saved}", flush=True)
    return out
