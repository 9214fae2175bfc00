"""MedMNIST v2 / MedMNIST+ (2-D) files: the ``.npz`` loader and the checksummed download.

The registry of datasets (file names, URLs, MD5s, labels, licences) is
:mod:`medmeta_lib.data.medmnist_registry`; its public names are re-exported here.

Cite: Jiancheng Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D
biomedical image classification", Scientific Data 10, 41 (2023), and the source dataset of each
file (see ``data/README.md``).
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medmeta_lib.config import data_dir as default_data_dir
from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.download import download_file, file_checksum
from medmeta_lib.data.medmnist_registry import (
    MEDMNIST_DATASETS,
    MEDMNIST_SIZES,
    SPLITS,
    MedMNISTInfo,
    check_medmnist_size,
    medmnist_info,
)

__all__ = [
    "MEDMNIST_DATASETS",
    "MEDMNIST_SIZES",
    "MedMNISTInfo",
    "download_medmnist",
    "find_medmnist_file",
    "load_medmnist",
    "load_npz",
    "medmnist_path",
]

_CHUNK = 2048  # images resized per batch: bounds the float32 working memory


def _check_common(split: str, image_size: int) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")


def _name_from_path(path: Path) -> str:
    stem = path.name[: -len(".npz")] if path.name.lower().endswith(".npz") else path.stem
    base, _, size = stem.rpartition("_")
    if base and size.isdigit() and int(size) in MEDMNIST_SIZES:
        stem = base
    return stem.lower()


def _resize(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` → float32 ``(N, C, size, size)`` in [0, 1].

    Centre-crops non-square images to a square first (as MedMNIST's own preprocessing does).
    Batched ``torch`` interpolation (bilinear, antialiased when shrinking) in chunks, rather
    than MONAI's per-image ``Resize``: one call per chunk instead of one per image.
    """
    n, c, h, w = images.shape
    if h != w:
        m = min(h, w)
        top, left = (h - m) // 2, (w - m) // 2
        images = images[:, :, top : top + m, left : left + m]
        h = w = m
    if h == size:
        return torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    out = torch.empty((n, c, size, size), dtype=torch.float32)
    for i in range(0, n, _CHUNK):
        x = torch.from_numpy(np.ascontiguousarray(images[i : i + _CHUNK])).float().div_(255.0)
        y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < h)
        out[i : i + _CHUNK] = y.clamp_(0.0, 1.0)
    return out


_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError)


def _read_split(path: Path, split: str, fix: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Read ``{split}_images`` and ``{split}_labels`` (no pickle) and the largest label of the other splits."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # every .npz is a zip archive; catches HTML error pages and .npy files early
        raise ValueError(f"{path}: not an .npz (zip) archive (it starts with {magic!r}); {fix}")
    try:
        npz = np.load(path, allow_pickle=False)
    except _READ_ERRORS as e:
        raise ValueError(f"{path}: not a readable .npz (zip) file ({type(e).__name__}: {e}); {fix}") from e
    with npz:
        keys = list(npz.files)

        def read(key: str) -> np.ndarray:
            try:
                return np.asarray(npz[key])
            except _READ_ERRORS as e:
                raise ValueError(f"{path}: key '{key}' cannot be read ({type(e).__name__}: {e}); {fix}") from e

        for key in (f"{split}_images", f"{split}_labels"):
            if key not in keys:
                raise ValueError(f"{path}: key '{key}' is missing (the file has {keys}); {fix}")
        images, labels = read(f"{split}_images"), read(f"{split}_labels")
        other_max = -1  # class count from every split, so that ids agree across splits
        for s in SPLITS:
            if s != split and f"{s}_labels" in keys:
                other = read(f"{s}_labels")
                if other.size and np.issubdtype(other.dtype, np.integer):
                    other_max = max(other_max, int(other.max()))
    return images, labels, other_max


def _images_nchw(images: np.ndarray, path: Path, key: str, fix: str) -> np.ndarray:
    """Check dtype and shape; ``(N, H, W)`` / ``(N, H, W, 1|3)`` → ``(N, C, H, W)``."""
    if images.dtype != np.uint8:
        raise ValueError(
            f"{path}: key '{key}' must be uint8 (0-255) like the official files, got {images.dtype}; {fix} "
            "(convert float images in [0, 1] with (x * 255).round().astype(np.uint8))"
        )
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4 and images.shape[-1] == 3:
        images = images.transpose(0, 3, 1, 2)
    else:
        raise ValueError(
            f"{path}: key '{key}' must have shape (N, H, W) or (N, H, W, 3), got {images.shape}"
            + ("; 3-D MedMNIST volumes are not supported" if images.ndim == 4 else "")
            + f"; {fix}"
        )
    if images.shape[0] == 0:
        raise ValueError(f"{path}: key '{key}' holds no images; {fix}")
    return images


def load_npz(
    path: str | os.PathLike[str],
    *,
    split: str = "train",
    image_size: int = 28,
    name: str | None = None,
    source: str | None = None,
) -> ImageCollection:
    """Load one split of a MedMNIST-format ``.npz`` file.

    The file holds ``{split}_images`` (``(N, H, W)`` greyscale or ``(N, H, W, 3)`` RGB, uint8)
    and ``{split}_labels`` (``(N, 1)`` or ``(N,)`` integers). It is read without pickle.

    Args:
        path: the ``.npz`` file.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: output side length; images are resized (bilinear, antialiased) if needed.
        name: dataset name for class names and licence (default: the file name without
            ``_<size>.npz``, e.g. ``pneumoniamnist``); unknown names get ``class0, class1, ...``.
        source: the collection's ``source`` string (default: the path).

    Returns:
        An :class:`ImageCollection` with one site named after the dataset. Class ids are those
        of the file; a class absent from this split is kept with zero images, so that ids agree
        across splits.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for a truncated or non-zip file, a missing key, images or labels of the
            wrong shape or dtype, multi-label labels (e.g. ChestMNIST), or labels outside the
            dataset's classes. The message names the file and the key.

    Example:
        >>> col = load_npz("data/cache/pneumoniamnist.npz", split="test", image_size=64)  # doctest: +SKIP
        >>> col.class_names, len(col)  # doctest: +SKIP
        (('normal', 'pneumonia'), 624)
    """
    _check_common(split, image_size)
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such .npz file")
    ds_name = (name or _name_from_path(path)).strip().lower()
    info = MEDMNIST_DATASETS.get(ds_name)
    fix = (
        f"re-download it (medmeta data download {ds_name if info else '<name>'} --size N) "
        "or check that it is a MedMNIST-format .npz"
    )
    ikey, lkey = f"{split}_images", f"{split}_labels"
    raw_images, labels, other_max = _read_split(path, split, fix)
    images = _images_nchw(raw_images, path, ikey, fix)
    n = images.shape[0]
    if labels.ndim == 2 and labels.shape[1] > 1:
        raise ValueError(
            f"{path}: key '{lkey}' has shape {labels.shape}: multi-label data "
            f"{'(' + ds_name + ') ' if info else ''}is not supported for N-way episodes, which need one class "
            "per image; choose a multi-class or binary MedMNIST dataset"
        )
    labels = labels[:, 0] if labels.ndim == 2 else labels
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(
            f"{path}: key '{lkey}' must have shape ({n}, 1) or ({n},) to match '{ikey}', got {labels.shape}; {fix}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: key '{lkey}' must hold integer class ids, got {labels.dtype}; {fix}")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0:
        raise ValueError(f"{path}: key '{lkey}' holds a negative class id ({lo}); ids must be 0..K-1; {fix}")
    if info is not None:
        class_names = info.label_names
        if hi >= len(class_names):
            raise ValueError(
                f"{path}: key '{lkey}' holds class id {hi} but {ds_name} has {len(class_names)} classes; "
                "is this the right file, or pass name= for another dataset"
            )
        if images.shape[1] != info.channels:
            warnings.warn(
                f"{path}: {ds_name} images should have {info.channels} channel(s), found {images.shape[1]}",
                stacklevel=2,
            )
    else:
        class_names = tuple(f"class{i}" for i in range(max(hi, other_max) + 1))
    native = images.shape[2]
    return ImageCollection(
        images=_resize(images, image_size),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=class_names,
        site_names=(ds_name,),
        source=source or str(path),
        class_modalities=(info.modality,) * len(class_names) if info else None,
        split=split,
        allow_empty_classes=True,
        meta={
            "dataset": ds_name,
            "file": str(path),
            "native_size": int(native),
            "licence": info.licence if info else "unknown",
            "task": info.task if info else "multi-class",
        },
    )


def find_medmnist_file(
    name: str, image_size: int = 28, *, data_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """The best official file of ``name`` present in ``data_dir`` for ``image_size``, or None.

    Preference: the file of exactly ``image_size`` px; else the smallest larger official size
    (downsampling keeps detail); else the largest smaller one (usually the 28 px file).

    Example:
        >>> find_medmnist_file("pneumoniamnist", 64, data_dir="/nonexistent") is None
        True
    """
    info = medmnist_info(name)
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    larger = sorted(s for s in MEDMNIST_SIZES if s > image_size)
    smaller = sorted((s for s in MEDMNIST_SIZES if s < image_size), reverse=True)
    order = ([image_size] if image_size in MEDMNIST_SIZES else []) + larger + smaller
    for s in order:
        p = folder / info.file_name(s)
        if p.is_file():
            return p
    return None


def load_medmnist(
    name: str,
    *,
    split: str = "train",
    image_size: int = 28,
    data_dir: str | os.PathLike[str] | None = None,
) -> ImageCollection:
    """Load a 2-D MedMNIST dataset from the data dir (no download).

    Args:
        name: registry name, e.g. ``"pneumoniamnist"`` (see ``MEDMNIST_DATASETS``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: output side length; the official file of that size is used when present,
            otherwise another size (see :func:`find_medmnist_file`) is resized.
        data_dir: folder holding the official ``.npz`` files (default: ``$MEDMETA_DATA_DIR`` or
            ``data/cache``).

    Raises:
        FileNotFoundError: when no file of the dataset is in ``data_dir``; the message names
            the file, the folder and the download command.
        ValueError: for an unknown or multi-label dataset, or a broken file.

    Example:
        >>> col = load_medmnist("pneumoniamnist", split="test", image_size=28)  # doctest: +SKIP
        >>> col.summary()["class_counts"]  # doctest: +SKIP
        {'normal': 234, 'pneumonia': 390}
    """
    info = medmnist_info(name)
    _check_common(split, image_size)
    if info.multi_label:
        raise ValueError(
            f"medmnist:{info.name} is multi-label ({info.task}); N-way episodes need one class per image. "
            "Choose another dataset (e.g. pneumoniamnist, dermamnist, bloodmnist)"
        )
    path = medmnist_path(info.name, image_size, data_dir=data_dir)
    return load_npz(path, split=split, image_size=image_size, name=info.name, source=f"medmnist:{info.name}")


def medmnist_path(name: str, image_size: int = 28, *, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The file :func:`load_medmnist` would read for ``name`` at ``image_size``; nothing is read.

    Raises:
        FileNotFoundError: when no file of the dataset is in the data dir; the message names the file, the
            folder and the download command.
        ValueError: for an unknown dataset name.

    Example:
        >>> try:
        ...     medmnist_path("pneumoniamnist", data_dir="/nowhere")
        ... except FileNotFoundError as e:
        ...     print(str(e).split(". Download")[0])
        medmnist:pneumoniamnist: pneumoniamnist.npz not found in /nowhere
    """
    info = medmnist_info(name)
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    path = find_medmnist_file(info.name, image_size, data_dir=folder)
    if path is None:
        size = image_size if image_size in MEDMNIST_SIZES else 28
        alt = "" if size == 28 else f" (or {info.file_name(28)}, which is then resized)"
        raise FileNotFoundError(
            f"medmnist:{info.name}: {info.file_name(size)}{alt} not found in {folder}. Download it with "
            f"`medmeta data download {info.name} --size {size}` (MD5-checked), or put the official file from "
            f"{info.url(size)} into {folder}; set MEDMETA_DATA_DIR to use another folder. Licence: {info.licence}"
        )
    return path


def download_medmnist(
    name: str,
    *,
    size: int = 28,
    data_dir: str | os.PathLike[str] | None = None,
    url: str | None = None,
    md5: str | None = None,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download an official MedMNIST file into the data dir, MD5-checked and written atomically.

    A file already present with the right MD5 is not downloaded again.

    Args:
        name: registry name, e.g. ``"pneumoniamnist"``.
        size: 28, 64, 128 or 224 px.
        data_dir: destination folder (default: ``$MEDMETA_DATA_DIR`` or ``data/cache``).
        url: a mirror of the official file (default: Zenodo record 10519652).
        md5: expected MD5 (default: the official one; required when the registry has none).
        timeout: network timeout in seconds.
        progress: show a progress bar.

    Returns:
        The path of the verified file.

    Raises:
        ValueError: unknown dataset or size, or no MD5 known.
        DownloadError: network/HTTP failure or MD5 mismatch; nothing is left half-written.

    Example:
        >>> download_medmnist("pneumoniamnist", size=64)  # doctest: +SKIP
        PosixPath('data/cache/pneumoniamnist_64.npz')
    """
    info = medmnist_info(name)
    check_medmnist_size(size)
    expected = md5 or info.md5(size)
    if expected is None:
        raise ValueError(
            f"no official MD5 is known for {info.file_name(size)}; pass md5= (from the data provider) to download it"
        )
    folder = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    dest = folder / info.file_name(size)
    if dest.is_file():
        if file_checksum(dest) == expected.lower():
            return dest
        warnings.warn(f"{dest} exists but its MD5 differs from {expected}; downloading it again", stacklevel=2)
    return download_file(url or info.url(size), dest, md5=expected, timeout=timeout, progress=progress)
