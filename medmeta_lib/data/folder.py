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
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.image_files import (
    IMAGE_EXTENSIONS,
    PIL_EXTENSIONS,
    detect_channels,
    image_suffix,
    is_dicom_without_suffix,
    read_sized,
)

__all__ = ["load_folder"]

_SPLIT_DIRS = ("train", "val", "test")
_MAX_LISTED = 20


def _check_args(image_size: int, channels: int | str, on_error: str, split: str) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    if channels not in (1, 3, "auto"):
        raise ValueError(f"channels must be 1 (greyscale), 3 (RGB) or 'auto' (from the files), got {channels!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string such as 'train', got {split!r}")


def _warn_no_split(where: str, split: str, why: str) -> None:
    warnings.warn(
        f"{where}: {why}, so split={split!r} returns every image, the same as split='train'. Do not train and "
        "evaluate on both; split by class (split_classes) or add split folders / a 'split' column",
        stacklevel=3,
    )


def _read_all(
    files: Sequence[Path],
    *,
    image_size: int,
    channels: int,
    on_error: str,
    where: str,
    describe: Callable[[int], str],
) -> tuple[list[torch.Tensor], list[int]]:
    """Read every file; return images and the indices read. Failures are raised or warned, all listed.

    Images of different native sizes are all centre-cropped and resized to ``image_size``; that is
    reported in one warning (with examples), because it is rarely intended in a single dataset.
    """
    images, ok, failed = [], [], []
    sizes: list[tuple[int, int]] = []
    for i, f in enumerate(files):
        try:
            img, hw = read_sized(f, image_size=image_size, channels=channels)
            images.append(img)
            sizes.append(hw)
            ok.append(i)
        except ImportError:
            raise
        except Exception as e:  # any reader failure is reported per file, never as a bare traceback
            why = str(e).strip().splitlines()[0] if str(e).strip() else ""
            failed.append(f"  {describe(i)}: {type(e).__name__}: {why}"[:300])
    if failed:
        listed = "\n".join(failed[:_MAX_LISTED])
        more = f"\n  ... and {len(failed) - _MAX_LISTED} more" if len(failed) > _MAX_LISTED else ""
        head = f"{where}: {len(failed)} of {len(files)} file(s) could not be read as images:\n{listed}{more}\n"
        if on_error == "raise":
            raise ValueError(
                head
                + "Fix or remove them, or pass on_error='skip' to load the rest (they are then listed in a warning)."
            )
        warnings.warn(head + "They were skipped (on_error='skip').", stacklevel=3)
    _warn_mixed_sizes(sizes, [describe(i) for i in ok], image_size=image_size, where=where)
    return images, ok


def _warn_mixed_sizes(sizes: Sequence[tuple[int, int]], names: Sequence[str], *, image_size: int, where: str) -> None:
    """One warning when the images do not all share one native size (examples: one file per size)."""
    distinct = sorted(set(sizes), key=lambda hw: (-sizes.count(hw), hw))
    if len(distinct) < 2:
        return
    examples = ", ".join(f"{names[sizes.index(hw)]} {hw[0]}x{hw[1]}" for hw in distinct[:5])
    more = f" and {len(distinct) - 5} more size(s)" if len(distinct) > 5 else ""
    cropped = sum(h != w for h, w in sizes)
    crop = f"; {cropped} non-square image(s) lose their edges to the crop" if cropped else ""
    warnings.warn(
        f"{where}: the images come in {len(distinct)} different sizes (e.g. {examples}{more}). Each was "
        f"centre-cropped to a square and resized to {image_size}x{image_size}{crop}. If that is not intended, "
        "crop or resize them to one size first, or load each size as its own collection",
        stacklevel=4,
    )


def _collection(
    images: list[torch.Tensor],
    labels: list[int],
    sites: list[int],
    *,
    class_names: Sequence[str],
    site_names: Sequence[str],
    source: str,
    split: str,
    files: Sequence[str],
    allow_empty_classes: bool,
) -> ImageCollection:
    if not images:
        raise ValueError(f"{source}: no image could be read")
    return ImageCollection(
        images=torch.stack(images),
        labels=torch.tensor(labels, dtype=torch.long),
        class_names=tuple(class_names),
        sites=torch.tensor(sites, dtype=torch.long),
        site_names=tuple(site_names),
        source=source,
        split=split,
        allow_empty_classes=allow_empty_classes,
        # file_index is per image (subset() keeps it aligned); files are paths relative to the root
        meta={"files": tuple(files), "file_index": torch.arange(len(images))},
    )


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
    _check_args(image_size, channels, on_error, split)
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
        _warn_no_split(str(base), split, "no train/val/test sub-folders")
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
    images, ok = _read_all(
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
    return _collection(
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
