"""Your own images in class sub-folders, read with MONAI ``LoadImage`` (CSV manifests: ``manifest.py``).

PNG / JPEG go through PIL, DICOM through pydicom, NIfTI through nibabel; each reader is chosen
explicitly from the file name, so a missing optional package gives a clear error instead of
MONAI silently trying every reader. Only pixel data is kept: each MONAI ``MetaTensor`` is turned
into a plain float32 tensor, so no DICOM header (patient name, ID, dates) reaches the collection.

Every image becomes one 2-D picture: the middle slice of a 3-D volume, greyscale (ITU-R BT.601
luma) or RGB, min-max scaled to [0, 1] per image, centre-cropped to a square (as MedMNIST does)
and resized. Unreadable files are listed in the error (``on_error="raise"``) or in a warning
(``on_error="skip"``); none is dropped silently. Images of different native sizes are all cropped and
resized as well, with one warning that names an example file of each size.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from medmeta_lib.data.collection import ImageCollection

__all__ = ["IMAGE_EXTENSIONS", "detect_channels", "load_folder", "read_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz")
_PIL_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_SPLIT_DIRS = ("train", "val", "test")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's "L" conversion
_MAX_LISTED = 20


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _is_dicom_without_suffix(path: Path) -> bool:
    """DICOM files often have no extension (``IM0001``); they carry ``DICM`` at byte 128."""
    if path.suffix:
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _kind(path: Path) -> str:
    ext = _suffix(path)
    if ext in _PIL_EXT:
        return "pil"
    if ext == ".dcm" or _is_dicom_without_suffix(path):
        return "dicom"
    if ext in (".nii", ".nii.gz"):
        return "nifti"
    raise ValueError(f"unsupported file type {ext or '(no extension)'!r}; supported: {IMAGE_EXTENSIONS}")


def _has_module(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _pil_converter(img: Any) -> Any:
    # palette, CMYK, bilevel, ... → "L" / "RGB"; 8/16-bit greyscale and RGB(A) are kept as they are
    if img.mode in ("L", "I", "I;16", "F", "RGB", "RGBA", "LA"):
        return img
    return img.convert("L" if img.mode == "1" else "RGB")


@cache
def _reader(kind: str) -> tuple[Any, Any]:
    """``(LoadImage, reader)`` for ``kind``; raises ImportError naming the missing package."""
    needs = {"pil": ("PIL", "pillow"), "dicom": ("pydicom", "pydicom"), "nifti": ("nibabel", "nibabel")}[kind]
    if not _has_module(needs[0]):
        what = {"pil": "PNG/JPEG", "dicom": "DICOM", "nifti": "NIfTI"}[kind]
        raise ImportError(f"reading {what} files needs the '{needs[1]}' package: pip install {needs[1]}")
    from monai.data import NibabelReader, PILReader, PydicomReader
    from monai.transforms import LoadImage

    # LoadImage registers every default reader on construction; some (the nvImageCodec DICOM reader)
    # warn or log when their GPU codec is absent. That noise is irrelevant here: we pass our reader.
    plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = plugin_log.level
    plugin_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loader = LoadImage(image_only=True, ensure_channel_first=True)
            reader: Any
            if kind == "pil":  # reverse_indexing=False: (rows, cols) like numpy / PIL, not (x, y)
                reader = PILReader(converter=_pil_converter, reverse_indexing=False)
            elif kind == "dicom":  # swap_ij=False: (rows, cols) as stored
                reader = PydicomReader(swap_ij=False)
            else:
                reader = NibabelReader()
    finally:
        plugin_log.setLevel(level)
    return loader, reader


def _dicom_inverted(path: Path) -> bool:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PhotometricInterpretation"])
    return str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1"


def read_image(path: str | os.PathLike[str], *, image_size: int = 28, channels: int = 1) -> torch.Tensor:
    """Read one image file into a plain ``(channels, image_size, image_size)`` float32 tensor in [0, 1].

    Args:
        path: a PNG, JPEG, BMP, TIFF, DICOM (``.dcm`` or no extension) or NIfTI file.
        image_size: output side length.
        channels: 1 (RGB is converted to greyscale) or 3 (greyscale is repeated).

    Raises:
        ImportError: the reader's package (pillow, pydicom, nibabel) is not installed.
        ValueError / OSError / RuntimeError: the file cannot be read as an image.

    Example:
        >>> read_image("scan.dcm", image_size=64).shape  # doctest: +SKIP
        torch.Size([1, 64, 64])
    """
    return _read_sized(Path(path), image_size=image_size, channels=channels)[0]


def _read_sized(p: Path, *, image_size: int, channels: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """:func:`read_image`, also returning the picture's native ``(height, width)`` before crop and resize."""
    kind = _kind(p)
    loader, reader = _reader(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "ImageOrientationPatient missing": irrelevant for 2-D pixels
        img = loader(p, reader=reader)
    # pixels only: a plain tensor carries no MetaTensor header (DICOM tags, file name, affine)
    x = torch.as_tensor(img).as_subclass(torch.Tensor).detach().to(torch.float32).clone()
    del img
    if x.ndim == 4:  # (C, H, W, D) volume → its middle slice
        x = x[..., x.shape[-1] // 2]
    if x.ndim != 3:
        raise ValueError(f"expected a 2-D image or 3-D volume, got array shape {tuple(x.shape)}")
    c = x.shape[0]
    if c in (2, 4):  # greyscale + alpha, RGBA: drop alpha
        x = x[: c - 1]
    elif c not in (1, 3):
        raise ValueError(f"image has {c} channels; expected 1 (greyscale), 3 (RGB) or 4 (RGBA)")
    if not torch.isfinite(x).all():
        raise ValueError("image holds NaN/Inf values")
    if channels == 1 and x.shape[0] == 3:
        x = (x * torch.tensor(_LUMA).view(3, 1, 1)).sum(0, keepdim=True)
    elif channels == 3 and x.shape[0] == 1:
        x = x.repeat(3, 1, 1)
    # Scaling, crop and resize use plain torch ops (the same as the .npz path) rather than MONAI's
    # ScaleIntensity / CenterSpatialCrop / Resize, which would wrap the result in a MetaTensor again.
    lo, hi = x.min(), x.max()
    if hi > lo:  # min-max per image; MONOCHROME1 DICOM (low values are white) is inverted
        x = (hi - x) / (hi - lo) if kind == "dicom" and _dicom_inverted(p) else (x - lo) / (hi - lo)
    else:
        x = torch.zeros_like(x)  # a constant image carries no contrast: all zeros
    h, w = int(x.shape[1]), int(x.shape[2])
    side = min(h, w)  # centre-crop to a square, as MedMNIST does
    x = x[:, (h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
    if side != image_size:
        x = F.interpolate(x[None], size=(image_size, image_size), mode="bilinear", antialias=side > image_size)[0]
    return x.clamp_(0.0, 1.0).contiguous(), (h, w)


_COLOUR_PIL_MODES = {"RGB", "RGBA", "RGBX", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV"}
_COLOUR_DICOM = {
    "RGB",
    "YBR_FULL",
    "YBR_FULL_422",
    "YBR_PARTIAL_422",
    "YBR_PARTIAL_420",
    "YBR_ICT",
    "YBR_RCT",
    "PALETTE COLOR",
}


def _is_colour_file(p: Path) -> bool:
    kind = _kind(p)
    if kind == "pil":
        from PIL import Image

        with Image.open(p) as im:  # reads the header only
            return im.mode in _COLOUR_PIL_MODES
    if kind == "dicom" and _has_module("pydicom"):
        import pydicom

        ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
        return str(getattr(ds, "PhotometricInterpretation", "")).upper() in _COLOUR_DICOM
    return False  # NIfTI volumes are read as greyscale


def detect_channels(files: Sequence[str | os.PathLike[str]]) -> int:
    """3 if any file is stored as a colour image (PIL mode RGB/RGBA/palette…, colour DICOM), else 1.

    Only headers are read. Unreadable files count as greyscale here (reading them later reports them).
    A greyscale picture saved in an RGB file is read as RGB (three equal channels).

    Example:
        >>> detect_channels([])
        1
    """
    for f in files:
        try:
            if _is_colour_file(Path(f)):
                return 3
        except Exception:
            continue
    return 1


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
            img, hw = _read_sized(f, image_size=image_size, channels=channels)
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
            if _suffix(p) in exts or _is_dicom_without_suffix(p):
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
            [p for p in sorted(top.rglob("*")) if p.is_file() and _suffix(p) in (*_PIL_EXT, ".dcm")]
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
