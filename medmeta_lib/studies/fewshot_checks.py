"""What :func:`~medmeta_lib.studies.fewshot.fewshot_study` accepts, checked before anything is trained or written.

Two checks, both cheap: :func:`check_fewshot_data` (the data can be scored at ``k_shot``) and
:func:`check_fewshot_settings` (every setting of the study is valid, including the SimCLR view preset and the
device). ``medmeta fewshot`` runs both before it creates its output folder, so a bad flag leaves nothing behind.
"""

from __future__ import annotations

import math

import numpy as np

from medmeta_lib.config import select_device
from medmeta_lib.data.augment import PRESETS
from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.ssl.heads import HEAD_C

__all__ = ["HEADS", "SELF_TRAIN", "SELF_TRAIN_MAX_K", "check_fewshot_data", "check_fewshot_settings"]

#: the heads the study offers and their logistic-regression C (``ssl.heads.HEAD_C``)
HEADS = HEAD_C
#: pseudo-labels per class the recipe self-trains with, and the largest K it does so at (validation, section 15)
SELF_TRAIN, SELF_TRAIN_MAX_K = 100, 2


def _check_int(name: str, value: object, least: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{name} must be an int >= {least}{what}, got {value!r}")


def _check_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def check_fewshot_data(train: ImageCollection, test: ImageCollection, k_shot: int) -> None:
    """Refuse data the protocol cannot score, with a message that says what to change.

    Raises:
        ValueError: fewer than two classes, train and test with different classes, or a class with
            fewer than ``k_shot`` train images.

    Example:
        >>> check_fewshot_data(train, test, 5)  # doctest: +SKIP
    """
    _check_int("k_shot", k_shot, 1, "")
    if train.num_classes < 2:
        raise ValueError(f"{train.source}: few-shot classification needs at least 2 classes, got {train.num_classes}")
    if tuple(train.class_names) != tuple(test.class_names):
        raise ValueError(
            f"{train.source}: train classes {list(train.class_names)} differ from test classes "
            f"{list(test.class_names)}; both splits must have the same classes"
        )
    counts = np.bincount(train.labels.numpy(), minlength=train.num_classes)
    short = [(train.class_names[c], int(n)) for c, n in enumerate(counts) if n < k_shot]
    if short:
        raise ValueError(
            f"{train.source}: class(es) (name, train images) {short} have fewer than k_shot={k_shot} train images; "
            "lower --k-shot"
        )


def check_fewshot_settings(
    *,
    k_shot: int,
    draws: int,
    epochs: int,
    temperature: float,
    augment: str,
    scanner_shift: bool,
    head: str,
    meta_steps: int,
    meta_members: int,
    mix_probe: bool,
    tta_views: int,
    self_train: int | None,
    device: str,
    C: float | None = None,
) -> tuple[int, float]:
    """Refuse any invalid setting of :func:`~medmeta_lib.studies.fewshot.fewshot_study`; resolve the defaults.

    The arguments are ``fewshot_study``'s, with the same meanings (no defaults here: the study's signature holds
    them). ``device`` is checked against this machine (``"cuda"`` without CUDA is refused).

    Returns:
        ``(self_train, C)``: the pseudo-labels per class (``None`` resolved to ``SELF_TRAIN`` at ``k_shot`` <=
        ``SELF_TRAIN_MAX_K``, else 0) and the logistic regressions' C (``None`` resolved to the head's).

    Raises:
        ValueError: naming the first invalid setting and what it accepts.

    Example:
        >>> recipe = {"draws": 100, "epochs": 60, "temperature": 0.2, "augment": "generic", "scanner_shift": True,
        ...           "head": "cl2_probe", "meta_steps": 300, "meta_members": 3, "mix_probe": True, "tta_views": 8,
        ...           "self_train": None, "device": "cpu"}
        >>> check_fewshot_settings(k_shot=1, **recipe), check_fewshot_settings(k_shot=10, **recipe | {"head": "probe"})
        ((100, 10.0), (0, 0.1))
        >>> check_fewshot_settings(k_shot=5, **recipe | {"augment": "xray"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: augment (the SimCLR view preset) must be one of [...], got 'xray'
    """
    _check_int("k_shot", k_shot, 1, "")
    _check_int("draws", draws, 1, "")
    _check_int("epochs", epochs, 1, "")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 < temperature < math.inf:
        raise ValueError(f"temperature must be a finite number > 0 (NT-Xent; 0.1-0.5 is typical), got {temperature!r}")
    if augment not in PRESETS:
        raise ValueError(f"augment (the SimCLR view preset) must be one of {sorted(PRESETS)}, got {augment!r}")
    _check_int("meta_steps", meta_steps, 0, " (0 leaves meta-training out)")
    _check_int("meta_members", meta_members, 1, " (ProtoNets meta-trained with seeds seed, seed + 1, ...)")
    _check_bool("scanner_shift", scanner_shift)
    _check_bool("mix_probe", mix_probe)
    _check_int("tta_views", tta_views, 0, " (0: no test-time augmentation)")
    if self_train is None:
        self_train = SELF_TRAIN if k_shot <= SELF_TRAIN_MAX_K else 0
    _check_int("self_train", self_train, 0, " (pseudo-labels per class) or None")
    if head not in HEADS:
        raise ValueError(f"head must be one of {sorted(HEADS)}, got {head!r}")
    C = HEADS[head] if C is None else C
    if not (isinstance(C, (int, float)) and not isinstance(C, bool) and C > 0):
        raise ValueError(f"C must be a number > 0 (inverse regularisation strength), got {C!r}")
    if not isinstance(device, str):
        raise ValueError(f"device must be 'cpu', 'cuda[:N]' or 'auto', got {device!r}")
    select_device(device)
    return self_train, float(C)
