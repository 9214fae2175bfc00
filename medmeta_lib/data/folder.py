"""Your own images in class sub-folders (CSV manifests: ``manifest.py``), as an ``ImageCollection``.

Files are read one by one by :mod:`medmeta_lib.data.image_files` (PNG / JPEG, DICOM, NIfTI; greyscale
or RGB; only pixel data, no DICOM header). Unreadable files are listed in the error
(``on_error="raise"``) or in a warning (``on_error="skip"``); none is dropped silently. Images of
different native sizes are all cropped and resized as well, with one warning that names an example
file of each size.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.file_collection import build_collection, check_file_args, read_all, warn_no_split
from medmeta_lib.data.image_files import (
    IMAGE_EXTENSIONS,
    PIL_EXTENSIONS,
    detect_channels,
    image_suffix,
    is_dicom_without_suffix,
)

__all__ = ["load_folder"]

_SPLIT_DIRS = ("train", "val", "test")


def load_folder(
    root: str | os.PathLike[str],
    *,
    image_size: int = 28,
    split: str = "train",
    channels: int | str = "auto",
    extensions: Sequence[str] | None = None,
    on_error: str = "raise",
) -> ImageCollection:
    """Load ``root/<class>/<image>`` (or ``root/<split>/<class>/<image>``) into a collection.

    Class names are the sub-folder names, sorted; images may sit in nested folders below their
    class folder. If ``root`` holds ``train``/``val``/``test`` folders, ``root/<split>`` is read.

    Args:
        root: the folder.
        image_size: output side length.
        split: which split folder to read (when present); also the collection's ``split`` tag.
            Without split folders every image is returned (with a warning unless ``"train"``).
        channels: 1 (greyscale), 3 (RGB) or ``"auto"``: 3 when any image file under ``root`` (every split,
            so that all splits agree) is stored in colour, else 1 (:func:`detect_channels`).
        extensions: file endings to read (default ``IMAGE_EXTENSIONS``); extension-less DICOM
            files are always recognised. Other files are skipped with one warning.
        on_error: ``"raise"`` (default) lists unreadable files in a ValueError; ``"skip"``
            lists them in a warning and loads the rest.

    Raises:
        FileNotFoundError: ``root`` (or ``root/<split>``) does not exist.
        ValueError: bad arguments, no class folders, an empty class folder, unreadable files.

    Example:
        >>> col = load_folder("my_xrays", image_size=64)  # doctest: +SKIP
        >>> col.class_names  # doctest: +SKIP
        ('normal', 'pneumonia')
    """
    check_file_args(image_size, channels, on_error, split)
    exts = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in (extensions or IMAGE_EXTENSIONS))
    base = Path(root).expanduser()
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such folder; expected class sub-folders root/<class>/<image>")
    top = base
    present = [s for s in _SPLIT_DIRS if (base / s).is_dir()]
    if present:
        if split not in present:
            raise FileNotFoundError(f"{base}: has split folders {present} but no '{split}' folder; add {base / split}")
        base = base / split
    elif split != "train":
        warn_no_split(str(base), split, "no train/val/test sub-folders")
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"{base}: no class sub-folders; put images in {base}/<class name>/")
    files: list[Path] = []
    labels: list[int] = []
    ignored = [p.name for p in base.iterdir() if p.is_file() and not p.name.startswith(".")]
    for c, name in enumerate(classes):
        found = 0
        for p in sorted((base / name).rglob("*")):
            if not p.is_file() or any(part.startswith(".") for part in p.relative_to(base).parts):
                continue
            if image_suffix(p) in exts or is_dicom_without_suffix(p):
                files.append(p)
                labels.append(c)
                found += 1
            else:
                ignored.append(str(p.relative_to(base)))
        if found == 0:
            raise ValueError(
                f"{base / name}: class folder '{name}' holds no image files ({', '.join(exts)}); "
                "add images or remove the folder"
            )
    if ignored:
        warnings.warn(
            f"{base}: ignored {len(ignored)} file(s) that are not images or not in a class folder "
            f"(e.g. {ignored[:3]}); pass extensions=... to read other file types",
            stacklevel=2,
        )
    if channels == "auto":  # decided over every split's files, so train/val/test agree
        channels = detect_channels(
            [p for p in sorted(top.rglob("*")) if p.is_file() and image_suffix(p) in (*PIL_EXTENSIONS, ".dcm")]
        )
    images, ok = read_all(
        files,
        image_size=image_size,
        channels=int(channels),
        on_error=on_error,
        where=str(base),
        describe=lambda i: str(files[i].relative_to(base)),
    )
    kept_labels = [labels[i] for i in ok]
    missing = [classes[c] for c in range(len(classes)) if c not in set(kept_labels)]
    if missing:
        raise ValueError(f"{base}: no readable image left in class folder(s) {missing}; fix the files listed above")
    return build_collection(
        images,
        kept_labels,
        [0] * len(ok),
        class_names=classes,
        site_names=(top.name or "folder",),
        source=str(top),
        split=split,
        files=[str(files[i].relative_to(base)) for i in ok],
        allow_empty_classes=False,
    )
