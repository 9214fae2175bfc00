"""The few-shot recipe as one reusable model: ProtoNets meta-trained from a SimCLR encoder, mixed with a probe.

``medmeta fewshot`` scores its recipe on a dataset's test split; this is the same recipe for *new* images.
It holds the ProtoNets (each meta-trained on MedSynth from the SimCLR encoder, with its own seed) and, when
the recipe mixes in a probe, the encoder with its pooled layers and the mean and sd of the pooled features
of the unlabelled train images. :meth:`FewShotRecipe.adapt` takes K labelled images per class and returns a
classifier of new images: the ProtoNets' class probabilities averaged, then averaged 1:1 with the
probabilities of a logistic regression (C = 0.1) on the standardised features of the support images (the
``probe`` head). With ``tta_views`` > 0 the probe's features (support and new images alike) are averaged over
each image and that many fixed augmented views (:func:`~medmeta_lib.ssl.heads.tta_features`: the same seeded
transforms for every image). With ``self_train`` > 0 (``medmeta fewshot`` sets it for K <= 2), ``adapt`` also
takes the unlabelled train images: the recipe fitted on the support set labels the ``self_train`` most
confident of them per class, and is fitted again on the support set and those pseudo-labels
(:mod:`medmeta_lib.ssl.self_training`). Every image to classify is classified on its own.

The recipe is saved as ``recipe.safetensors`` beside the ProtoNets' files: the encoder's weights, the
probe's statistics and, as metadata, the member files, layers, C and classes (no pickle).

Example:
    >>> recipe = FewShotRecipe.load("runs/fewshot-mine")  # doctest: +SKIP
    >>> predict = recipe.adapt(support_images, support_labels)  # doctest: +SKIP
    >>> predict(new_images).argmax(1)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch import Tensor, nn

from medmeta_lib.data.augment import PRESETS
from medmeta_lib.ssl.features import PooledLayers
from medmeta_lib.ssl.heads import tta_features
from medmeta_lib.ssl.probe import fit_probe
from medmeta_lib.ssl.self_training import probe_member, prototype_member, pseudo_label, self_trained_predictor
from medmeta_lib.training.checkpoint import load_backbone, load_checkpoint, save_checkpoint
from medmeta_lib.training.learner_io import load_learner

__all__ = ["RECIPE_FILE", "FewShotRecipe", "self_trained_recipe"]

#: the recipe's file name in a ``medmeta fewshot`` output folder
RECIPE_FILE = "recipe.safetensors"


def self_trained_recipe(
    protonets: Sequence[Any],
    pool_images: Tensor,
    eval_images: Tensor,
    pool_labels: np.ndarray,
    *,
    per_class: int,
    probe_features: tuple[ArrayLike, ArrayLike] | None = None,
    C: float = 0.1,
) -> Callable[[np.ndarray], np.ndarray]:
    """The recipe, self-trained, as a support-set predictor of ``eval_images`` (what ``medmeta fewshot`` scores).

    The ProtoNets' mean, 1:1 with the ``probe`` head on ``probe_features`` (pool, eval) when given, refitted
    once with ``per_class`` pseudo-labelled pool images per class
    (:func:`~medmeta_lib.ssl.self_training.self_trained_predictor`); :meth:`FewShotRecipe.adapt` with
    ``unlabelled`` images repeats it for new images.

    Example:
        >>> predict = self_trained_recipe(protonets, train.images, test.images, train.labels.numpy(),
        ...                               per_class=100, probe_features=(pool_feats, test_feats))  # doctest: +SKIP
    """
    members = [prototype_member(p, pool_images, eval_images) for p in protonets]
    weights = [1 / len(protonets)] * len(protonets)  # the ProtoNets' mean ...
    if probe_features is not None:  # ... 1:1 with the probe
        members.append(probe_member(*probe_features, C=C))
        weights = [w / 2 for w in weights] + [0.5]
    return self_trained_predictor(members, pool_labels, per_class=per_class, weights=weights)


class FewShotRecipe:
    """ProtoNets and an optional probe on their SimCLR encoder, averaged 1:1 (see the module docstring).

    Args:
        members: the meta-trained ProtoNets (their probabilities are averaged first).
        encoder: the SimCLR encoder the probe reads (and the ProtoNets started from).
        layers: the encoder's layers whose pooled outputs are the probe's features.
        classes: class names, in label order.
        probe_stats: ``(mean, sd)`` of the unlabelled pool's pooled features; ``None``: no probe (the
            ProtoNets alone).
        C: the probe's inverse L2 strength.
        tta_views: augmented views averaged into each probe feature (0: the plain feature); ``probe_stats``
            must then come from features computed the same way.
        tta_preset: ``ViewAugment`` preset of those views.
        tta_seed: seed of those views (the transforms are the same for every image).
        self_train: pseudo-labels per class from the unlabelled images given to :meth:`adapt` (0: none).
        image_size: the side length the recipe was trained at; images of another size are refused (``None``:
            not checked, as for recipe files written before it was recorded). The channels are always checked
            against the encoder's.

    Example:
        >>> recipe = FewShotRecipe(members, encoder, layers=CONV4_BLOCKS_2_4, classes=("a", "b"),
        ...                        probe_stats=pool_standardisation(pool_features))  # doctest: +SKIP
    """

    def __init__(
        self,
        members: Sequence[Any],
        encoder: nn.Module,
        *,
        layers: Sequence[str],
        classes: Sequence[str],
        probe_stats: tuple[np.ndarray, np.ndarray] | None = None,
        C: float = 0.1,
        tta_views: int = 0,
        tta_preset: str = "generic",
        tta_seed: int = 0,
        self_train: int = 0,
        image_size: int | None = None,
    ) -> None:
        if not members or not all(hasattr(m, "adapt") for m in members):
            raise ValueError("FewShotRecipe: members must be one or more learners (e.g. meta-trained ProtoNets)")
        if len(classes) < 2:
            raise ValueError(f"FewShotRecipe: classes must name at least 2 classes, got {list(classes)}")
        if not (isinstance(C, (int, float)) and not isinstance(C, bool) and C > 0):
            raise ValueError(f"C must be a number > 0, got {C!r}")
        if isinstance(tta_views, bool) or not isinstance(tta_views, int) or tta_views < 0:
            raise ValueError(f"tta_views must be an int >= 0, got {tta_views!r}")
        if tta_preset not in PRESETS:
            raise ValueError(f"tta_preset must be one of {sorted(PRESETS)}, got {tta_preset!r}")
        if isinstance(tta_seed, bool) or not isinstance(tta_seed, int):
            raise ValueError(f"tta_seed must be an int, got {tta_seed!r}")
        if isinstance(self_train, bool) or not isinstance(self_train, int) or self_train < 0:
            raise ValueError(f"self_train must be an int >= 0 (pseudo-labels per class), got {self_train!r}")
        if image_size is not None and (
            isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8
        ):
            raise ValueError(f"image_size must be an int >= 8 or None, got {image_size!r}")
        self.image_size = image_size
        self.tta_views, self.tta_preset, self.tta_seed = tta_views, tta_preset, tta_seed
        self.self_train = self_train
        self.members, self.encoder = list(members), encoder
        self.layers, self.classes, self.C = tuple(layers), tuple(classes), float(C)
        self.pooled = PooledLayers(encoder, self.layers)
        self.code: str | None = None  # set by load: the code that saved the recipe
        self.probe_stats = probe_stats
        for m in self.members:
            if m.n_way != len(self.classes):
                m.set_n_way(len(self.classes))

    @property
    def channels(self) -> int | None:
        """The channel count of the images the recipe was trained on (1 or 3; None if its encoder does not say)."""
        spec = getattr(self.encoder, "spec", None)
        return spec["kwargs"].get("in_channels") if isinstance(spec, dict) else None

    def _check_images(self, images: Tensor, what: str) -> None:
        """Refuse images the recipe cannot read as it was trained: a clear message instead of a torch error."""
        channels = self.channels
        if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"{what} must be a float tensor (N, C, H, W), got {got}; add the batch axis with x[None]")
        if channels is not None and images.shape[1] != channels:
            fix = "x.mean(1, keepdim=True)" if channels == 1 else "x.expand(-1, 3, -1, -1)"
            raise ValueError(
                f"{what} have {images.shape[1]} channel(s) but the recipe was trained on {channels}; convert them "
                f"({fix})"
            )
        size = self.image_size
        if size is not None and tuple(images.shape[-2:]) != (size, size):
            raise ValueError(
                f"{what} are {images.shape[-2]}x{images.shape[-1]} px but the recipe was trained at {size}x{size}; "
                "resize them as the training images were (e.g. load_collection(..., image_size=...))"
            )
        if len(images) and not bool(torch.isfinite(images).all()):
            raise ValueError(f"{what} hold NaN/Inf pixels; clean or drop those images")
        if len(images) and (float(images.min()) < 0 or float(images.max()) > 1):
            raise ValueError(
                f"{what} must be scaled to [0, 1] (got max {float(images.max()):.3g}); divide uint8 by 255"
            )

    def _probe_features(self, images: Tensor) -> np.ndarray:
        assert self.probe_stats is not None
        mean, std = self.probe_stats
        feats = tta_features(self.pooled, images, views=self.tta_views, preset=self.tta_preset, seed=self.tta_seed)
        return (feats.numpy() - mean) / std

    def adapt(
        self, support_x: Tensor, support_y: Tensor, *, unlabelled: Tensor | None = None
    ) -> Callable[[Tensor], np.ndarray]:
        """A classifier of new images from K labelled images per class.

        Args:
            support_x: ``(N, C, H, W)`` labelled images in ``[0, 1]``, like the training images.
            support_y: ``(N,)`` labels ``0 .. len(classes) - 1``, every class present.
            unlabelled: the unlabelled train images, needed when ``self_train`` > 0 (images equal to a support
                image are skipped); ignored otherwise. Their features take a while (all the views).

        Returns:
            A function ``(M, C, H, W)`` images -> ``(M, n_classes)`` class probabilities (numpy); each image's
            row depends on that image, the support set and (self-training) the unlabelled images only.

        Raises:
            ValueError: bad support labels, images of another channel count or size than the recipe's (also
                for the images given to the returned function), pixels outside [0, 1] or NaN, or
                ``self_train`` > 0 without ``unlabelled`` images.

        Example:
            >>> recipe.adapt(support_x, support_y)(new_images).shape  # doctest: +SKIP
            (12, 2)
        """
        n = len(self.classes)
        self._check_images(support_x, "support images")
        if support_y.ndim != 1 or len(support_y) != len(support_x):
            raise ValueError(f"support_y must be (N,) labels for the {len(support_x)} support images")
        if sorted(torch.unique(support_y).tolist()) != list(range(n)):
            raise ValueError(
                f"support labels {sorted(torch.unique(support_y).tolist())} must cover every class 0..{n - 1} "
                f"({list(self.classes)})"
            )
        if not self.self_train:
            return self._fit(support_x, support_y)
        if unlabelled is None:
            raise ValueError(
                f"this recipe self-trains ({self.self_train} pseudo-labels per class): pass unlabelled=<the "
                "unlabelled train images>, or set recipe.self_train = 0"
            )
        self._check_images(unlabelled, "unlabelled images")
        if unlabelled.shape[1:] != support_x.shape[1:]:
            raise ValueError(
                f"unlabelled must be (M, C, H, W) images shaped like the support images {tuple(support_x.shape[1:])}, "
                f"got {tuple(unlabelled.shape)}"
            )
        seen = torch.zeros(len(unlabelled), dtype=torch.bool)
        for image in support_x:  # a support image in the pool is not pseudo-labelled (as in the scored run)
            seen |= (unlabelled == image).flatten(1).all(1)
        pool = unlabelled[~seen]
        if not len(pool):  # every unlabelled image is a support image: nothing to pseudo-label
            return self._fit(support_x, support_y)
        sel, lab = pseudo_label(self._fit(support_x, support_y)(pool), [], per_class=self.self_train)
        index = torch.from_numpy(sel)
        return self._fit(torch.cat([support_x, pool[index]]), torch.cat([support_y, torch.from_numpy(lab)]))

    def _fit(self, support_x: Tensor, support_y: Tensor) -> Callable[[Tensor], np.ndarray]:
        n = len(self.classes)
        predictors = [m.adapt(support_x, support_y)[0] for m in self.members]
        probe = None
        if self.probe_stats is not None:
            probe = fit_probe(self._probe_features(support_x), support_y.numpy(), n_classes=n, C=self.C)

        def predict(images: Tensor) -> np.ndarray:
            self._check_images(images, "images")
            with torch.no_grad():
                protonets = torch.stack([p(images).softmax(-1) for p in predictors]).mean(0).numpy()
            if probe is None:
                return protonets
            return (protonets + probe(self._probe_features(images))) / 2

        return predict

    def save(self, path: str | Path, *, member_files: Sequence[str | Path]) -> Path:
        """Write the recipe file (atomically): the encoder, the probe's statistics, and the member file names.

        ``member_files`` are the ProtoNets' saved files (``save_learner``), stored relative to ``path``'s folder.

        Example:
            >>> recipe.save("runs/fewshot-mine/recipe.safetensors", member_files=files)  # doctest: +SKIP
        """
        path = Path(path)
        if len(member_files) != len(self.members):
            raise ValueError(f"give one file per member: {len(self.members)} members, {len(member_files)} files")
        spec = getattr(self.encoder, "spec", None)
        if not isinstance(spec, dict):
            raise ValueError("the encoder has no 'spec'; build it with medmeta_lib.models.create_backbone")
        tensors = {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}
        if self.probe_stats is not None:
            tensors["probe.mean"], tensors["probe.std"] = (torch.from_numpy(np.asarray(a)) for a in self.probe_stats)
        meta = {
            "kind": "encoder",  # load_backbone reads the encoder from this file too
            "backbone": dict(spec),
            "encoder_prefix": "encoder.",
            "recipe": "fewshot",
            "members": [Path(f).name for f in member_files],
            "layers": list(self.layers),
            "classes": list(self.classes),
            "probe": self.probe_stats is not None,
            "C": self.C,
            "tta": {"views": self.tta_views, "preset": self.tta_preset, "seed": self.tta_seed},
            "self_train": self.self_train,
            "image_size": self.image_size,
        }
        return save_checkpoint(path, tensors, meta)

    @classmethod
    def load(cls, path: str | Path) -> FewShotRecipe:
        """Rebuild a saved recipe from its file, or from the ``medmeta fewshot`` folder that holds it.

        Raises:
            FileNotFoundError: no recipe file, or a member file missing beside it.
            ValueError: the file is not a recipe (or fails its checksum).

        Example:
            >>> FewShotRecipe.load("runs/fewshot-mine").classes  # doctest: +SKIP
            ('normal', 'pneumonia')
        """
        path = Path(path)
        if path.is_dir():
            path = path / RECIPE_FILE
        ck = load_checkpoint(path, expect={"recipe": "fewshot"})
        meta = ck.metadata
        members = []
        for name in meta["members"]:
            member = path.parent / name
            if not member.is_file():
                raise FileNotFoundError(
                    f"{path}: member file {member} is missing; keep the ProtoNets beside the recipe"
                )
            members.append(load_learner(member, expect_learner="protonet"))
        stats = (ck.tensors["probe.mean"].numpy(), ck.tensors["probe.std"].numpy()) if meta["probe"] else None
        tta = meta.get("tta", {"views": 0, "preset": "generic", "seed": 0})  # files before TTA: none
        recipe = cls(
            members,
            load_backbone(path),
            layers=meta["layers"],
            classes=meta["classes"],
            probe_stats=stats,
            C=float(meta["C"]),
            tta_views=int(tta["views"]),
            tta_preset=str(tta["preset"]),
            tta_seed=int(tta["seed"]),
            self_train=int(meta.get("self_train", 0)),  # files before self-training: none
            image_size=meta.get("image_size"),  # files before it was recorded: not checked
        )
        recipe.code = ck.code  # the code that saved it (None for files from before that was kept)
        return recipe
