"""``load_collection``: the one public entry point from a source string to an ImageCollection."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medmeta_lib.data.collection import ImageCollection

__all__ = ["SOURCE_HELP", "check_source", "load_collection", "source_kind"]

SOURCE_HELP = (
    "a source is one of: 'synthetic' (MedSynth, offline default); 'medmnist:<name>' (e.g. "
    "'medmnist:pneumoniamnist', read from the data dir); a path to a MedMNIST-format .npz; a folder of "
    "class sub-folders; or a CSV manifest with columns path,label[,site]"
)

_SPLITS = ("train", "val", "test")
#: what load_collection passes to every loader itself (not options a caller may add)
_OWN = {"image_size", "split", "seed"}


def _check_options(source: str, kind: str, kw: dict[str, Any], *loaders: Callable[..., Any]) -> None:
    """Refuse options the source's loaders do not take (their keyword-only arguments), naming both sets."""
    known = {n for f in loaders for n, p in inspect.signature(f).parameters.items() if p.kind is p.KEYWORD_ONLY} - _OWN
    unknown = sorted(set(kw) - known)
    if unknown:
        raise ValueError(
            f"load_collection({source!r}): unknown option(s) {unknown} for {kind}; it takes "
            f"{sorted(known) or 'no options'} besides image_size, split and seed"
        )


def source_kind(source: str) -> str:
    """What ``source`` names: ``synthetic``, ``medmnist``, ``npz``, ``csv`` or ``folder`` (nothing is read).

    Raises:
        FileNotFoundError: a path-like source that is not there.
        ValueError: a string that is no kind of source.

    Example:
        >>> source_kind("medmnist:pneumoniamnist"), source_kind("labels.CSV")
        ('medmnist', 'csv')
    """
    if not isinstance(source, str) or not source:
        raise ValueError(f"source must be a non-empty string; {SOURCE_HELP}")
    if source == "synthetic":
        return "synthetic"
    if source.startswith("medmnist:"):
        return "medmnist"
    path = Path(source).expanduser()
    if path.suffix.lower() in (".npz", ".csv"):
        return path.suffix.lower()[1:]
    if path.is_dir():
        return "folder"
    if not path.exists() and (path.suffix or "/" in source):
        raise FileNotFoundError(f"source {source!r}: no such file or folder ({path.resolve()}); {SOURCE_HELP}")
    raise ValueError(f"unknown source {source!r}; {SOURCE_HELP}")


def check_source(source: str, *, image_size: int = 28, data_dir: str | None = None) -> None:
    """Refuse a source that names nothing loadable, without reading any image (a fast check before a long run).

    Args:
        source: as :func:`load_collection` takes it.
        image_size: the size a ``medmnist:`` source would be loaded at (it picks the file).
        data_dir: where ``medmnist:`` files are (default: ``$MEDMETA_DATA_DIR`` or ``data/cache``).

    Raises:
        FileNotFoundError: a file, folder or MedMNIST dataset that is not there (the message says where to put it).
        ValueError: a string that is no kind of source.

    Example:
        >>> check_source("synthetic")
        >>> check_source("scans/missing.npz")
        Traceback (most recent call last):
        ...
        FileNotFoundError: source 'scans/missing.npz': no such file ...
    """
    kind = source_kind(source)
    if kind == "medmnist":
        from medmeta_lib.data.medmnist import medmnist_path

        medmnist_path(source.split(":", 1)[1], image_size, data_dir=data_dir)
    path = Path(source).expanduser()
    if kind in ("npz", "csv") and not path.is_file():
        raise FileNotFoundError(f"source {source!r}: no such file ({path.resolve()}); {SOURCE_HELP}")


def load_collection(
    source: str = "synthetic",
    *,
    image_size: int = 28,
    split: str = "train",
    seed: int = 0,
    **kw: Any,
) -> ImageCollection:
    """Load images from a source string into a validated :class:`ImageCollection`.

    Args:
        source: ``"synthetic"``, ``"medmnist:<name>"``, a ``.npz`` path, a folder, or a ``.csv``
            manifest (see ``SOURCE_HELP``).
        image_size: side length in pixels; images are generated or resized to it.
        split: ``"train"``, ``"val"`` or ``"test"``.
        seed: generation seed for MedSynth (other sources are read as they are).
        **kw: passed to the source's loader (e.g. ``n_per_class_site``, ``modalities`` or ``taxonomy``
            (``"coarse"``, 30 classes; ``"fine"``, 96) for MedSynth).

    Raises:
        ValueError: for an unknown source, a bad split, an option the source's loader does not take, or a size
            the source cannot give.
        FileNotFoundError: when a file or folder is missing (the message says where to put it).

    Example:
        >>> col = load_collection("synthetic", image_size=28, n_per_class_site=2)
        >>> col.num_classes >= 24
        True
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
    kind = source_kind(source)
    if kind == "synthetic":
        from medmeta_lib.data.synthetic import MedSynth

        _check_options(source, "MedSynth", kw, MedSynth.__init__, MedSynth.generate)
        return MedSynth(**{k: v for k, v in kw.items() if k in MedSynth.INIT_KEYS}).generate(
            image_size=image_size,
            split=split,
            seed=seed,
            **{k: v for k, v in kw.items() if k not in MedSynth.INIT_KEYS},
        )
    if kind == "medmnist":
        from medmeta_lib.data.medmnist import load_medmnist

        _check_options(source, "a MedMNIST name", kw, load_medmnist)
        return load_medmnist(source.split(":", 1)[1], split=split, image_size=image_size, **kw)
    path = Path(source).expanduser()
    if kind == "npz":
        from medmeta_lib.data.medmnist import load_npz

        _check_options(source, "a .npz file", kw, load_npz)
        return load_npz(path, split=split, image_size=image_size, **kw)
    if kind == "csv":
        from medmeta_lib.data.manifest import load_csv_manifest

        _check_options(source, "a CSV manifest", kw, load_csv_manifest)
        return load_csv_manifest(path, image_size=image_size, split=split, **kw)
    from medmeta_lib.data.folder import load_folder

    _check_options(source, "a folder", kw, load_folder)
    return load_folder(path, image_size=image_size, split=split, **kw)
