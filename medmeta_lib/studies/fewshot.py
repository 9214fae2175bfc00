"""Few-shot on a user's own dataset: pretrain → meta-train within a CPU budget, end to end, beside its baselines.

The recipe (measured on PneumoniaMNIST, BENCHMARKS.md sections 3, 8 and 10-14; every choice fixed on the
validation split) has two training stages, neither of which reads a label of the user's dataset, and a mix:

1. **pretrain**: SimCLR on the *unlabelled* train images (Conv-4-64 with GroupNorm, NT-Xent τ = 0.2, batch
   256, AdamW 2e-3, 60 epochs: what fits the 15-minute budget on 2 cores since SimCLR trains in the
   channels-last layout of :mod:`medmeta_lib.models.training_layout`). The second view of each positive
   pair has also passed through a simulated scanner change (``site_views="scanner_shift"``: bias field,
   contrast curve, blur, offset; label-free), so the encoder learns to ignore acquisition differences;
2. **meta-train**: three ProtoNets around that encoder, meta-trained on MedSynth tasks (5-way 5-shot, 300
   steps of 4 tasks; :mod:`medmeta_lib.studies.medsynth_metatrain`) with seeds ``seed``, ``seed + 1`` and
   ``seed + 2``, then given the ``k_shot`` labelled train images per class as their support set: one
   prototype per class in each, each test image classified on its own by each, and their class
   probabilities averaged (``meta_members``);
3. **mix**: that mean averaged 1:1 with the probabilities of a logistic regression (C = 0.1) on the
   SimCLR encoder's pooled features of the support images, standardised with the unlabelled train images'
   mean and sd (the ``probe`` head; ``mix_probe``). Each of those features is averaged over the image and 8
   fixed views of it (``tta_views``: the same seeded transforms for every image, so a prediction still
   depends on its own image only);
4. **self-train** (K <= 2 only): the mix fitted on the support set labels the 100 unlabelled train images per
   class it is most sure of, and is fitted again on the support set and those pseudo-labels
   (:mod:`medmeta_lib.ssl.self_training`; still one test image at a time: the pseudo-labels come from the train
   split). Chosen on validation (BENCHMARKS.md section 15): at K = 1 and 2 it raised the recipe's balanced
   accuracy by 0.049 and 0.011, from K = 3 it lowered it.

``simclr_protonet`` is the recipe; ``simclr_probe`` (the first version) skips stages 2-4: a logistic
regression on the pooled features of Conv-4 blocks 2-4 of the support images (``head="cl2_probe"``, the
default: SimpleShot's centring + L2 normalisation, C = 10; ``head="probe"``: standardised, C = 0.1). Why each
stage is there, what it cost and what it gained on validation and test: ``docs/fewshot_recipe.md``.

It is scored with the full-test-split protocol (:mod:`medmeta_lib.evaluation.full_test_split`): the same
label draws for every method, every test image predicted on its own, accuracy / balanced accuracy / AUC
with intervals over the draws and over draws and test images, the majority-class rate, and the paired
difference of every method against the best.

Baselines: the same head on raw pixels and on a random-init encoder of the same architecture, and
``scratch`` (a fresh Conv-4 trained on the support set of each draw).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.evaluation.full_test_split import compare_full_test_split, learner_predictor
from medmeta_lib.models.backbones import create_backbone
from medmeta_lib.ssl.features import CONV4_BLOCKS_2_4, PooledLayers, extract_features
from medmeta_lib.ssl.heads import ensemble_predictor, head_predictor, tta_features
from medmeta_lib.ssl.probe import pool_standardisation
from medmeta_lib.ssl.simclr import pretrain_simclr
from medmeta_lib.ssl.simclr_config import SimCLRConfig
from medmeta_lib.studies.fewshot_checks import (
    HEADS,
    SELF_TRAIN,
    SELF_TRAIN_MAX_K,
    check_fewshot_data,
    check_fewshot_settings,
)
from medmeta_lib.studies.fewshot_recipe import RECIPE_FILE, FewShotRecipe, self_trained_recipe
from medmeta_lib.studies.medsynth_metatrain import metatrain_on_medsynth
from medmeta_lib.training.checkpoint import save_backbone
from medmeta_lib.training.learner_io import build_learner, save_learner

__all__ = [
    "HEADS",
    "MIX_HEAD",
    "PROBE_RECIPE",
    "RECIPE",
    "SELF_TRAIN",
    "SELF_TRAIN_MAX_K",
    "check_fewshot_data",
    "fewshot_study",
]

#: the recipe's name in the results (pretrain → meta-train), the pretrain-only recipe's, and the baselines'
RECIPE = "simclr_protonet"
PROBE_RECIPE = "simclr_probe"
_BASELINES = ("random_init_probe", "raw_pixels_probe", "scratch")
#: the head the recipe mixes 1:1 with its ProtoNets (chosen on validation, BENCHMARKS.md section 13)
MIX_HEAD = "probe"


def _member_path(path: Path, member: int) -> Path:
    """Where ensemble member ``member`` is saved: ``path`` itself for the first, ``<stem>_m<member><suffix>`` after."""
    return path if member == 0 else path.with_name(f"{path.stem}_m{member}{path.suffix}")


def fewshot_study(
    train: ImageCollection,
    test: ImageCollection,
    *,
    k_shot: int,
    draws: int = 100,
    seed: int = 0,
    epochs: int = 60,
    batch_size: int = 256,
    temperature: float = 0.2,
    augment: str = "generic",
    scanner_shift: bool = True,
    hidden: int = 64,
    head: str = "cl2_probe",
    C: float | None = None,
    meta_steps: int = 300,
    meta_members: int = 3,
    mix_probe: bool = True,
    tta_views: int = 8,
    self_train: int | None = None,
    scratch: bool = True,
    device: str = "cpu",
    encoder_out: str | Path | None = None,
    learner_out: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the recipe, its pretrain-only version and the baselines on ``train`` / ``test`` on the same label draws.

    Args:
        train: the labelled pool (its images are also the unlabelled pretraining data).
        test: every image of it is scored (never used before scoring).
        k_shot: labelled train images per class.
        draws: label draws (the same for every method).
        seed: seed of the pretraining, the random-init encoder and the draws.
        epochs: SimCLR epochs over the train images.
        batch_size: SimCLR batch size (capped at the number of train images).
        temperature: SimCLR's NT-Xent temperature (> 0; 0.1 and 0.5 did not beat 0.2 on PneumoniaMNIST's
            validation split, BENCHMARKS.md section 17).
        augment: ``ViewAugment`` preset of the SimCLR views (``"generic"`` suits any modality; e.g.
            ``"chest_xray"`` or ``"histology"`` when the data is one of those).
        scanner_shift: positives across a simulated scanner change (label-free); ``False``: two plain
            augmentations of each image.
        hidden: Conv-4 width of the encoder.
        head: ``"cl2_probe"`` (centring + L2 normalisation, then logistic regression) or ``"probe"``
            (standardised features, logistic regression); the same head for the recipe and the two encoder
            baselines.
        C: inverse L2 strength of the logistic regressions (``None``: the head's value in ``HEADS``).
        meta_steps: ProtoNet meta-training steps on MedSynth (4 tasks each); ``0`` leaves the stage out, and
            ``simclr_probe`` is then the recipe.
        meta_members: ProtoNets meta-trained from the encoder with seeds ``seed``, ``seed + 1``, ...; the recipe
            averages their class probabilities for each test image (``1``: a single ProtoNet). Each member
            costs one more meta-training (45-100 s on 2 cores, depending on the machine).
        mix_probe: average the ProtoNets' mean 1:1 with the ``probe`` head on the SimCLR features (``False``:
            the ProtoNets alone).
        tta_views: the mixed probe's features averaged over each image and this many fixed views of the
            ``augment`` preset (the same seeded transforms for every image, so still one image at a time;
            :func:`~medmeta_lib.ssl.heads.tta_features`); ``0``: plain features.
        self_train: pseudo-labels per class from the unlabelled train images, one refit of the recipe
            (:mod:`~medmeta_lib.ssl.self_training`); ``None``: ``SELF_TRAIN`` when ``k_shot`` <=
            ``SELF_TRAIN_MAX_K``, else 0; ``0``: none.
        scratch: include the ``scratch`` baseline (the slowest part: a network trained per draw).
        encoder_out: SimCLR checkpoint path (resumable); ``None`` keeps it in memory.
        learner_out: where to save the meta-trained ProtoNet (``save_learner``; reload it with
            ``load_learner`` and adapt it to your labelled images); member ``m`` > 0 of an ensemble goes to
            ``<stem>_m<m><suffix>`` beside it (``meta_train["files"]`` lists them), and the whole recipe to
            ``recipe.safetensors`` in the same folder (``FewShotRecipe.load`` it to classify new images;
            ``meta_train["recipe_file"]``). ``None`` keeps them in memory. Nothing is written when
            ``meta_steps`` is 0.
        device: where SimCLR trains (``"cpu"``, ``"cuda"`` or ``"auto"``); features and heads run on the CPU.
        progress: show the SimCLR and meta-training progress bars.
        log: where the stage lines go.

    Returns:
        ``{"recipe", "k_shot", "draws", "classes", "train_images", "test_images", "channels",
        "majority_rate", "pretrain", "meta_train", "results", "best", "paired_vs_best", "settings"}``
        (``meta_train`` is ``None`` when ``meta_steps`` is 0; otherwise it holds the shared settings, the
        ``seeds``, each member's info under ``members``, the total ``seconds`` and the saved ``files``);
        ``results`` maps each method to
        :func:`~medmeta_lib.evaluation.full_test_split.score_full_test_split`'s fields (``acc_mean``,
        ``bal_acc_mean``, ``auc_mean`` for two classes, both intervals, ``seconds``).

    Example:
        >>> out = fewshot_study(train, test, k_shot=10, draws=100)  # doctest: +SKIP
        >>> out["results"]["simclr_protonet"]["auc_mean"], out["best"]  # doctest: +SKIP
    """
    check_fewshot_data(train, test, k_shot)
    self_train, C = check_fewshot_settings(
        k_shot=k_shot,
        draws=draws,
        epochs=epochs,
        temperature=temperature,
        augment=augment,
        scanner_shift=scanner_shift,
        head=head,
        C=C,
        meta_steps=meta_steps,
        meta_members=meta_members,
        mix_probe=mix_probe,
        tta_views=tta_views,
        self_train=self_train,
        device=device,
    )
    # SimCLRConfig validates the pretraining's settings (temperature, epochs, ...) before anything runs
    cfg = SimCLRConfig(
        epochs=epochs,
        batch_size=max(2, min(batch_size, len(train))),
        lr=2e-3,
        temperature=temperature,
        augment_preset=augment,
        site_invariance=scanner_shift,
        site_views="scanner_shift",
        seed=seed,
    )
    bkw = {"hidden": hidden, "norm": "group"}
    views = "scanner-shift positives" if scanner_shift else "plain views"
    log(f"[fewshot] SimCLR on {len(train)} unlabelled train images ({epochs} epochs, Conv-4-{hidden}, {views})")
    t0 = time.perf_counter()
    pre = pretrain_simclr(
        train, backbone="conv4", backbone_kwargs=bkw, config=cfg, out=encoder_out, progress=progress, device=device
    )
    pretrain_s = time.perf_counter() - t0
    losses = [h["loss"] for h in pre.history if "loss" in h]
    torch.manual_seed(seed)  # the random-init baseline: the same architecture, seeded like the SSL start
    random_enc = create_backbone("conv4", in_channels=train.channels, **bkw)
    methods: dict[str, Any] = {}
    meta_info: dict[str, Any] | None = None
    if meta_steps:
        seeds = [seed + m for m in range(meta_members)]
        log(
            f"[fewshot] meta-training {meta_members} ProtoNet(s) on MedSynth tasks from the SimCLR encoder "
            f"({meta_steps} steps each, seeds {seeds})"
        )
        members: list[Any] = []
        infos = []
        with tempfile.TemporaryDirectory() as tmp:  # built from an encoder file: the --out checkpoint or a temp copy
            enc_file = Path(tmp) / "encoder.safetensors"
            enc_path = Path(encoder_out) if encoder_out else save_backbone(enc_file, pre.encoder.cpu())
            for s in seeds:
                learner, info = metatrain_on_medsynth(
                    enc_path,
                    n_way=train.num_classes,
                    channels=train.channels,
                    image_size=train.image_size,
                    steps=meta_steps,
                    seed=s,
                    progress=progress,
                )
                members.append(learner)
                infos.append({**info, "seed": s})
        files = [_member_path(Path(learner_out), m) for m in range(meta_members)] if learner_out is not None else []
        for learner, info, path in zip(members, infos, files, strict=False):
            save_learner(path, learner, None, {"data_source": train.source, "meta_train": info})
        meta_info = {
            **{k: v for k, v in infos[0].items() if k not in ("seconds", "first_loss", "final_loss", "seed")},
            "members": infos,
            "seeds": seeds,
            "seconds": round(sum(i["seconds"] for i in infos), 1),
            "files": [str(f) for f in files],
        }
    encoders: dict[str, nn.Module] = {
        PROBE_RECIPE: PooledLayers(pre.encoder.cpu(), CONV4_BLOCKS_2_4),
        "random_init_probe": PooledLayers(random_enc, CONV4_BLOCKS_2_4),
        "raw_pixels_probe": nn.Flatten(),
    }
    feats = {}
    for name, enc in encoders.items():  # features of every image, each computed on its own statistics
        feats[name] = (
            extract_features(enc, train.images, reference=train.images),
            extract_features(enc, test.images, reference=train.images),
        )
        methods[name] = head_predictor(head, *feats[name], train.labels, C=C)
    if meta_info is not None:  # one test image at a time through every member, their probabilities averaged
        protonets = [learner_predictor(lr, train, test, k_shot=k_shot) for lr in members]
        mix_feats = feats[PROBE_RECIPE]
        if mix_probe and tta_views:  # every image and its views through the same fixed transforms
            log(f"[fewshot] probe features averaged over {tta_views} fixed views ({augment}) of each image")
            mix_feats = tuple(  # type: ignore[assignment]
                tta_features(
                    encoders[PROBE_RECIPE], x, views=tta_views, preset=augment, seed=seed, reference=train.images
                )
                for x in (train.images, test.images)
            )
        if self_train:  # the same mix, refitted on the support set + pseudo-labelled train images
            log(f"[fewshot] self-training: {self_train} pseudo-labels per class from the unlabelled train images")
            recipe_predict: Any = self_trained_recipe(
                members,
                train.images,
                test.images,
                train.labels.numpy(),
                per_class=self_train,
                probe_features=mix_feats if mix_probe else None,
                C=HEADS[MIX_HEAD],
            )
        elif mix_probe:  # ... then 1:1 with the probe head on the SimCLR features (BENCHMARKS.md section 13)
            probe = head_predictor(MIX_HEAD, *mix_feats, train.labels, C=HEADS[MIX_HEAD])
            recipe_predict = ensemble_predictor([ensemble_predictor(protonets), probe])
        else:
            recipe_predict = members[0] if meta_members == 1 else ensemble_predictor(protonets)
        methods = {RECIPE: recipe_predict, **methods}  # the recipe first in the results
        if learner_out is not None:  # the recipe as one model for new images (FewShotRecipe.load)
            recipe = FewShotRecipe(
                members,
                pre.encoder.cpu(),
                layers=CONV4_BLOCKS_2_4,
                classes=train.class_names,
                probe_stats=pool_standardisation(mix_feats[0]) if mix_probe else None,
                C=HEADS[MIX_HEAD],
                tta_views=tta_views if mix_probe else 0,
                tta_preset=augment,
                tta_seed=seed,
                self_train=self_train,
                image_size=train.image_size,
            )
            recipe_file = recipe.save(Path(learner_out).with_name(RECIPE_FILE), member_files=files)
            meta_info["recipe_file"] = str(recipe_file)
    if scratch:
        methods["scratch"] = build_learner(
            "scratch", backbone_kwargs={"hidden": 32}, n_way=train.num_classes, in_channels=train.channels, seed=seed
        )
    log(f"[fewshot] scoring {', '.join(methods)} on {len(test)} test images over {draws} label draws of K={k_shot}")
    compared = compare_full_test_split(methods, train, test, k_shot=k_shot, draws=draws, seed=seed)
    results = compared["results"]
    return {
        "recipe": RECIPE if meta_steps else PROBE_RECIPE,
        "k_shot": k_shot,
        "draws": draws,
        "classes": list(train.class_names),
        "train_images": len(train),
        "test_images": len(test),
        "channels": train.channels,
        "majority_rate": next(iter(results.values()))["majority_rate"],
        "pretrain": {
            "seconds": round(pretrain_s, 1),
            "epochs": epochs,
            "steps": len(losses),
            "first_loss": losses[0] if losses else None,
            "final_loss": losses[-1] if losses else None,
            "checkpoint": str(pre.checkpoint) if getattr(pre, "checkpoint", None) else None,
        },
        "meta_train": meta_info,
        "results": results,
        "best": compared["best"],
        "paired_vs_best": compared["paired_vs_best"],
        "settings": {
            "seed": seed,
            "augment": augment,
            "scanner_shift": scanner_shift,
            "hidden": hidden,
            "head": head,
            "C": C,
            "device": device,
            "torch_threads": torch.get_num_threads(),  # float summation order: another count, other weights
            "batch_size": cfg.batch_size,
            "temperature": temperature,
            "probe_layers": list(CONV4_BLOCKS_2_4),
            "meta_steps": meta_steps,
            "meta_members": meta_members if meta_steps else 0,
            "mix_probe": bool(meta_steps) and mix_probe,
            "tta_views": tta_views if meta_steps and mix_probe else 0,
            "self_train": self_train if meta_steps else 0,
            "baselines": [b for b in _BASELINES if b in results],
        },
    }
