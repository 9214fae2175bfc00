"""Your own images listed in a CSV manifest (``path,label[,site][,split]``), read like class folders.

The images are read by :mod:`medmeta_lib.data.folder`'s readers (MONAI ``LoadImage``; PNG, JPEG,
DICOM, NIfTI; pixel data only, no DICOM header), with the same cropping, resizing and error listing.
This module adds the manifest itself: a strict header, a row and column named in every error, paths
relative to the CSV (or ``root``), and class and site ids taken from all rows so that they agree
across splits.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path
from typing import Any

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.file_collection import MAX_LISTED, build_collection, check_file_args, read_all, warn_no_split
from medmeta_lib.data.image_files import detect_channels
from medmeta_lib.data.medmnist_registry import SPLITS

__all__ = ["load_csv_manifest"]

_CSV_COLUMNS = ("path", "label", "site", "split")


def _parse_manifest(path: Path, root: Path) -> list[dict[str, Any]]:
    """Rows of the manifest as dicts with ``line``, ``path`` (resolved), ``label``, ``site``, ``split``."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ValueError(f"{path}: the CSV is empty; expected a header row path,label[,site][,split]")
            cols = [h.strip().lower() for h in header]
            for j, col in enumerate(cols):
                if col not in _CSV_COLUMNS:
                    raise ValueError(
                        f"{path}: row 1 (header), column {j + 1} {header[j]!r} is not a known column; "
                        f"allowed: {list(_CSV_COLUMNS)} (path and label required). Remove or rename it"
                    )
            for need in ("path", "label"):
                if need not in cols:
                    raise ValueError(f"{path}: row 1 (header) has no '{need}' column; columns are {cols}")
            if len(set(cols)) != len(cols):
                raise ValueError(f"{path}: row 1 (header) repeats a column: {cols}")
            rows = []
            seen: dict[Path, int] = {}
            for line, values in enumerate(reader, start=2):
                if not any(v.strip() for v in values):
                    continue  # blank line
                if len(values) != len(cols):
                    raise ValueError(f"{path}: row {line} has {len(values)} values but the header has {len(cols)}")
                row: dict[str, Any] = {c: v.strip() for c, v in zip(cols, values)}
                for c in cols:
                    if not row[c]:
                        raise ValueError(f"{path}: row {line}, column '{c}' is empty; fill it in or remove the row")
                if "split" in row and row["split"] not in SPLITS:  # a typo would silently drop the row
                    raise ValueError(
                        f"{path}: row {line}, column 'split' is {row['split']!r}; it must be one of {list(SPLITS)}"
                    )
                rel = Path(row["path"]).expanduser()
                row["path"] = rel if rel.is_absolute() else root / rel
                row["line"] = line
                first = seen.setdefault(row["path"].resolve(), line)
                if first != line:  # one image twice could sit in a support and a query set, or carry two labels
                    raise ValueError(f"{path}: rows {first} and {line} name the same image {row['path']}; keep one")
                rows.append(row)
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text CSV ({e}); save it as UTF-8 CSV") from e
    if not rows:
        raise ValueError(f"{path}: the CSV has a header but no rows; add one row per image (path,label[,site][,split])")
    return rows


def _number(label: str) -> float | None:
    try:
        return float(label)
    except ValueError:
        return None


def _warn_mixed_labels(csv_path: Path, rows: list[dict[str, Any]]) -> None:
    """Warn when name labels look like a mistake: numbers mixed with names, or two spellings of one number."""
    first_row: dict[str, int] = {}
    for r in rows:
        first_row.setdefault(r["label"], r["line"])
    numbers = {lab: v for lab in first_row if (v := _number(lab)) is not None}
    spelled: dict[float, list[str]] = {}
    for lab, v in numbers.items():
        spelled.setdefault(v, []).append(lab)
    twins = [sorted(labs) for labs in spelled.values() if len(labs) > 1]
    if numbers and len(numbers) < len(first_row):
        names = [lab for lab in first_row if lab not in numbers]
        shown = ", ".join(f"{lab!r} (row {first_row[lab]})" for lab in [*numbers, *names][:MAX_LISTED])
        warnings.warn(
            f"{csv_path}: column 'label' mixes numbers ({len(numbers)}) and names ({len(names)}), e.g. {shown}; "
            f"every label is read as a class name, giving {len(first_row)} classes. If the numbers are class ids, "
            "write every label as a whole number id, or give every class a name",
            stacklevel=3,
        )
    if twins:
        warnings.warn(
            f"{csv_path}: column 'label' spells one number in several ways, {twins[:MAX_LISTED]}; each spelling is a "
            "separate class. Write each class's label one way",
            stacklevel=3,
        )


def _integer_class_count(csv_path: Path, rows: list[dict[str, Any]], label_of: dict[str, int]) -> int:
    """The classes integer labels make (ids 0..C-1): refused if more than rows (most would be empty); gaps warned."""
    top = max(rows, key=lambda r: label_of[r["label"]])
    n_classes = label_of[top["label"]] + 1
    if n_classes > len(rows):
        raise ValueError(
            f"{csv_path}: row {top['line']} has label {top['label']}; integer labels are class ids 0..C-1, so this "
            f"makes {n_classes} classes for {len(rows)} rows. Give class names instead, or number the classes from 0"
        )
    empty = sorted(set(range(n_classes)) - set(label_of.values()))
    if empty:
        warnings.warn(
            f"{csv_path}: integer labels skip class id(s) {empty[:MAX_LISTED]}"
            f"{' ...' if len(empty) > MAX_LISTED else ''}; those classes have no images",
            stacklevel=3,
        )
    return n_classes


def load_csv_manifest(
    path: str | os.PathLike[str],
    *,
    image_size: int = 28,
    split: str = "train",
    channels: int | str = "auto",
    root: str | os.PathLike[str] | None = None,
    on_error: str = "raise",
) -> ImageCollection:
    """Load the images listed in a CSV manifest with columns ``path,label[,site][,split]``.

    Relative paths resolve against the CSV's folder (or ``root``). ``label`` is a class name
    or an integer id (if every label is an integer they are used as ids, named ``class0``...;
    otherwise labels are names, sorted, with a warning when numbers and names are mixed or one number is
    spelled two ways, e.g. ``1`` and ``1.0``). Classes and sites are taken from *all* rows, so ids
    agree across splits; a class without images in this split is kept with zero images.
    With a ``split`` column only the rows of ``split`` are read.

    Args:
        path: the CSV file (UTF-8, header row).
        image_size: output side length.
        split: rows to read when the CSV has a ``split`` column (without one, every row, with a
            warning unless ``"train"``); the collection's split tag.
        channels: 1 (greyscale), 3 (RGB) or ``"auto"``: 3 when any listed file (every split, so that all
            splits agree) is stored in colour, else 1.
        root: folder that relative paths are resolved against (default: the CSV's folder).
        on_error: ``"raise"`` or ``"skip"`` for files that exist but cannot be read.

    Raises:
        FileNotFoundError: the CSV does not exist.
        ValueError: unknown or missing columns, empty cells, missing image files (all listed,
            with row and column), no rows for ``split``, unreadable images.

    Example:
        >>> col = load_csv_manifest("manifest.csv", image_size=64, split="test")  # doctest: +SKIP
        >>> col.site_names  # doctest: +SKIP
        ('hospital_a', 'hospital_b')
    """
    check_file_args(image_size, channels, on_error, split)
    csv_path = Path(path).expanduser()
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: no such CSV manifest")
    base = Path(root).expanduser() if root is not None else csv_path.parent
    rows = _parse_manifest(csv_path, base)
    raw_labels = [r["label"] for r in rows]
    if all(lab.lstrip("+").isdigit() for lab in raw_labels):
        label_of = {lab: int(lab) for lab in raw_labels}
        class_names = [f"class{i}" for i in range(_integer_class_count(csv_path, rows, label_of))]
    else:
        _warn_mixed_labels(csv_path, rows)
        class_names = sorted(set(raw_labels))
        label_of = {name: i for i, name in enumerate(class_names)}
    if channels == "auto":  # decided over every row (all splits), so train/val/test agree
        channels = detect_channels([r["path"] for r in rows if r["path"].is_file()])
    has_site = "site" in rows[0]
    site_names = sorted({r["site"] for r in rows}) if has_site else [csv_path.stem]
    site_of = {s: i for i, s in enumerate(site_names)}
    if "split" in rows[0]:
        splits = sorted({r["split"] for r in rows})
        rows = [r for r in rows if r["split"] == split]
        if not rows:
            raise ValueError(f"{csv_path}: no rows with split '{split}' (the 'split' column holds {splits})")
    elif split != "train":
        warn_no_split(str(csv_path), split, "no 'split' column")
    missing = [r for r in rows if not r["path"].is_file()]
    if missing:
        listed = "\n".join(f"  row {r['line']}, column 'path': {r['path']}" for r in missing[:MAX_LISTED])
        more = f"\n  ... and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
        raise ValueError(
            f"{csv_path}: {len(missing)} image file(s) do not exist (relative paths resolve against {base}):\n"
            f"{listed}{more}\nFix the paths, pass root=..., or remove the rows"
        )
    images, ok = read_all(
        [r["path"] for r in rows],
        image_size=image_size,
        channels=int(channels),
        on_error=on_error,
        where=str(csv_path),
        describe=lambda i: f"row {rows[i]['line']} ({rows[i]['path']})",
    )
    kept = [rows[i] for i in ok]
    return build_collection(
        images,
        [label_of[r["label"]] for r in kept],
        [site_of[r["site"]] if has_site else 0 for r in kept],
        class_names=class_names,
        site_names=site_names,
        source=str(csv_path),
        split=split,
        files=[os.path.relpath(r["path"], base) for r in kept],
        allow_empty_classes=True,
    )
