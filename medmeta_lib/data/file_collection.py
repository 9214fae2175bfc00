"""Building an ``ImageCollection`` from image files: shared by the folder and the CSV-manifest loaders.

Argument checks, reading every file with one error policy (all failures listed, never dropped
silently), the warnings for sources without splits and for mixed native sizes, and the final
collection with each image's file remembered.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.image_files import read_sized

__all__ = ["MAX_LISTED", "build_collection", "check_file_args", "read_all", "warn_no_split"]

MAX_LISTED = 20


def check_file_args(image_size: int, channels: int | str, on_error: str, split: str) -> None:
    """Validate the keyword arguments shared by the folder and CSV loaders (``ValueError`` naming the argument).

    Example:
        >>> check_file_args(28, "auto", "raise", "train")
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    if channels not in (1, 3, "auto"):
        raise ValueError(f"channels must be 1 (greyscale), 3 (RGB) or 'auto' (from the files), got {channels!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty string such as 'train', got {split!r}")


def warn_no_split(where: str, split: str, why: str) -> None:
    """Warn that a source without splits returns every image whatever ``split`` asked for.

    Example:
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     warn_no_split("xrays/", "test", "no split folders")
        >>> str(caught[0].message).split(". ")[0]
        "xrays/: no split folders, so split='test' returns every image, the same as split='train'"
    """
    warnings.warn(
        f"{where}: {why}, so split={split!r} returns every image, the same as split='train'. Do not train and "
        "evaluate on both; split by class (split_classes) or add split folders / a 'split' column",
        stacklevel=3,
    )


def read_all(
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

    Example:
        >>> with warnings.catch_warnings(record=True) as caught:  # an unreadable file, skipped
        ...     warnings.simplefilter("always")
        ...     read_all([Path("notes.txt")], image_size=28, channels=1, on_error="skip", where="demo", describe=str)
        ([], [])
        >>> str(caught[0].message).splitlines()[0]
        'demo: 1 of 1 file(s) could not be read as images:'
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
        listed = "\n".join(failed[:MAX_LISTED])
        more = f"\n  ... and {len(failed) - MAX_LISTED} more" if len(failed) > MAX_LISTED else ""
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


def build_collection(
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
    """Stack the images read from files into an :class:`ImageCollection` that remembers each file.

    Example:
        >>> c = build_collection([torch.zeros(1, 8, 8)] * 2, [0, 1], [0, 0], class_names=("a", "b"),
        ...                      site_names=("s0",), source="demo", split="train", files=["a/1.png", "b/2.png"],
        ...                      allow_empty_classes=False)
        >>> len(c), c.image_size, c.meta["files"]
        (2, 8, ('a/1.png', 'b/2.png'))
    """
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
