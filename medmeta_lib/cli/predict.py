"""``medmeta predict``: classify image files with the recipe a ``medmeta fewshot`` run saved.

The recipe (``recipe.safetensors`` and its ProtoNets) is adapted to the labelled images of ``--support`` (every
image of its train split, or ``--k-shot`` K per class drawn with ``--seed``), then each image file given is
classified on its own: a prediction never depends on the other files. Files are read as the training images were
(:func:`medmeta_lib.data.image_files.read_image`: greyscale or RGB as the recipe needs, centre-cropped, resized to
its size, and scaled as the ``--support`` images are: 8-bit values divided by 255 for a MedMNIST ``.npz``, each
image stretched to [0, 1] for class folders and CSV manifests; a warning says when that differs from the recipe's
training source). The class probabilities go to a CSV
(``path,prediction,p(<class>)...``), written atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_predict_parser", "file_scaling", "image_files", "predict_command"]


def add_predict_parser(sub: Any) -> None:
    """Register ``medmeta predict`` on the sub-command parsers ``sub``.

    Example:
        >>> sub = argparse.ArgumentParser().add_subparsers()
        >>> add_predict_parser(sub)
        >>> a = sub.choices["predict"].parse_args(["--recipe", "r", "--support", "s", "x.png"])
        >>> a.images, a.k_shot, a.out, a.func is predict_command
        (['x.png'], 0, 'predictions.csv', True)
    """
    pr = sub.add_parser(
        "predict",
        help="classify image files with a medmeta fewshot recipe, each image on its own",
        description="Adapt a medmeta fewshot recipe to labelled images and classify image files, each on its own.",
    )
    pr.add_argument("images", nargs="+", help="image files or folders of them (PNG, JPEG, DICOM, NIfTI; recursive)")
    pr.add_argument("--recipe", required=True, help="the folder a medmeta fewshot run wrote (recipe.safetensors)")
    pr.add_argument("--support", required=True, help="labelled images (.npz, class folder or CSV): its train split")
    pr.add_argument("--k-shot", type=int, default=0, help="draw K labelled images per class (0: use every one)")
    pr.add_argument("--unlabelled", default=None, help="unlabelled images for a self-training recipe (default: none)")
    pr.add_argument("--seed", type=int, default=0, help="seed of the --k-shot draw")
    pr.add_argument(
        "--scale",
        default="auto",
        choices=["auto", "uint8", "minmax"],
        help="pixel scaling of the files: uint8 (8-bit / 255, as .npz images), minmax (per image, as class folders "
        "and CSVs), auto (as the --support images are read)",
    )
    pr.add_argument("--out", default="predictions.csv", help="CSV to write (an existing file needs --overwrite)")
    pr.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    pr.set_defaults(func=predict_command)


def image_files(paths: list[str]) -> list[Path]:
    """The image files named by ``paths``: files as given, folders searched recursively (sorted).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a folder without image files, or no image at all.

    Example:
        >>> image_files(["missing.png"])
        Traceback (most recent call last):
        ...
        FileNotFoundError: missing.png: no such image file or folder; check the path
    """
    from medmeta_lib.data.image_files import IMAGE_EXTENSIONS, image_suffix

    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and image_suffix(p) in IMAGE_EXTENSIONS)
            if not found:
                raise ValueError(f"{raw}: no image files in this folder (looked for {', '.join(IMAGE_EXTENSIONS)})")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{raw}: no such image file or folder; check the path")
    return files


def _source_scaling(source: str) -> str:
    """How ``load_collection`` scales ``source``'s pixels (a source that is gone is taken as a folder's)."""
    from medmeta_lib.data import source_kind

    try:
        return "uint8" if source_kind(source) in ("medmnist", "npz") else "minmax"
    except (OSError, ValueError):
        return "minmax"


def file_scaling(support: str, recipe_dir: str | Path, scale: str = "auto") -> tuple[str, str | None]:
    """How to scale image files: ``scale``, or with ``"auto"`` as the ``--support`` images are; and a warning or None.

    A MedMNIST ``.npz`` holds 8-bit values that are divided by 255 (``"uint8"``); class folders and CSV manifests
    are read file by file, each image stretched to [0, 1] (``"minmax"``). The warning says when the support images
    or the chosen scaling differ from the recipe's training source (its ``results.json``): the recipe then sees
    images with another contrast than it was trained on.

    Example:
        >>> file_scaling("labelled.npz", "runs/none")
        ('uint8', None)
        >>> file_scaling("labelled/", "runs/none", "uint8")[0]
        'uint8'
    """
    import json

    chosen = _source_scaling(support) if scale == "auto" else scale
    try:
        trained = str(json.loads((Path(recipe_dir) / "results.json").read_text()).get("data", ""))
    except (OSError, ValueError, AttributeError):
        return chosen, None
    if {chosen, _source_scaling(support)} != {_source_scaling(trained)}:
        return chosen, (
            f"the recipe was trained on {trained} ({_source_scaling(trained)} scaling), but the files are read with "
            f"{chosen} scaling and --support {support} is read with {_source_scaling(support)} scaling: contrast "
            "differs from training; give support images of the training source's kind, and --scale to match"
        )
    return chosen, None


def _support(a: argparse.Namespace, recipe: Any) -> tuple[Any, Any]:
    """The labelled images and labels the recipe adapts to, their classes checked against the recipe's."""
    import torch

    from medmeta_lib.data import load_collection, source_kind

    size = recipe.image_size or 28
    read_from_files = source_kind(a.support) in ("folder", "csv")  # these take channels= (a .npz has its own)
    options = {"channels": recipe.channels} if recipe.channels and read_from_files else {}
    col = load_collection(a.support, image_size=size, split="train", seed=a.seed, **options)
    if tuple(col.class_names) != tuple(recipe.classes):
        raise ValueError(
            f"--support {a.support} has classes {list(col.class_names)}, but the recipe was trained on "
            f"{list(recipe.classes)}; give labelled images of the same classes, under the same names"
        )
    if not a.k_shot:
        return col.images, col.labels
    generator = torch.Generator().manual_seed(a.seed)
    chosen = []
    for c, name in enumerate(col.class_names):
        idx = torch.nonzero(col.labels == c).flatten()
        if len(idx) < a.k_shot:
            raise ValueError(
                f"--support {a.support}: class {name!r} has {len(idx)} image(s), fewer than --k-shot {a.k_shot}"
            )
        chosen.append(idx[torch.randperm(len(idx), generator=generator)[: a.k_shot]])
    index = torch.cat(chosen)
    return col.images[index], col.labels[index]


def predict_command(a: argparse.Namespace) -> int:
    """Run ``medmeta predict``: adapt the recipe to ``--support`` and write each image file's class probabilities.

    Example:
        >>> from medmeta_lib.cli.program import build_parser
        >>> a = build_parser().parse_args(["predict", "--recipe", "runs/fewshot-mine", "--support", "lab", "new/"])
        >>> predict_command(a)  # doctest: +SKIP
        0
    """
    import torch

    from medmeta_lib.data import load_collection
    from medmeta_lib.data.image_files import read_image
    from medmeta_lib.runio import atomic_write_text
    from medmeta_lib.studies import FewShotRecipe

    if a.k_shot < 0:
        raise ValueError(f"--k-shot must be >= 0 (0: every labelled image), got {a.k_shot}")
    out = Path(a.out)
    if out.exists() and not a.overwrite:
        raise ValueError(f"--out {out} exists; pass --overwrite to replace it, or another --out")
    files = image_files(a.images)  # before the slow parts: a typo fails at once
    recipe = FewShotRecipe.load(a.recipe)
    print(f"[predict] recipe {a.recipe}, saved by {recipe.code or 'an older version (not recorded)'}")
    if recipe.self_train and not a.unlabelled:
        raise ValueError(
            f"this recipe self-trains ({recipe.self_train} pseudo-labels per class, a K <= 2 run): pass --unlabelled "
            "with the unlabelled train images (e.g. the --data of the medmeta fewshot run)"
        )
    size, channels = recipe.image_size or 28, recipe.channels or 1
    scale, warning = file_scaling(a.support, a.recipe, a.scale)
    if warning:
        print(f"[predict] warning: {warning}", file=sys.stderr)
    images = []
    for f in files:  # all read before the slow part: an unreadable file fails at once, by name
        try:
            images.append(read_image(f, image_size=size, channels=channels, scale=scale))
        except (ValueError, OSError, RuntimeError) as e:
            raise ValueError(f"{f}: cannot be read as an image ({e})") from e
    support_x, support_y = _support(a, recipe)
    unlabelled = None
    if recipe.self_train:
        unlabelled = load_collection(a.unlabelled, image_size=size, split="train").images
    predict = recipe.adapt(support_x, support_y, unlabelled=unlabelled)
    probabilities = [predict(x[None])[0] for x in images]  # one image at a time: no prediction sees another
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "prediction", *(f"p({c})" for c in recipe.classes)])
    for f, p in zip(files, probabilities, strict=True):
        writer.writerow([str(f), recipe.classes[int(p.argmax())], *(f"{v:.4f}" for v in p)])
    atomic_write_text(out, text.getvalue())
    counts = torch.bincount(torch.tensor([int(p.argmax()) for p in probabilities]), minlength=len(recipe.classes))
    summary = ", ".join(f"{c} {int(n)}" for c, n in zip(recipe.classes, counts, strict=True))
    print(
        f"[predict] {len(files)} image(s) ({scale} scaling), each classified on its own, with {len(support_y)} "
        f"labelled: {summary}"
    )
    print(f"wrote {out}")
    return 0
