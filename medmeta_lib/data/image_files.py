"""Reading one image file into one 2-D picture: PNG / JPEG, DICOM and NIfTI, greyscale or RGB.

Each reader is chosen explicitly from the file name (PIL, pydicom or nibabel through MONAI
``LoadImage``), so a missing optional package gives a clear error instead of MONAI silently trying
every reader. Only pixel data is kept (no DICOM header reaches a collection). Every image becomes one
2-D picture: the middle slice of a 3-D volume, greyscale (ITU-R BT.601 luma) or RGB, min-max scaled to
[0, 1], centre-cropped to a square (as MedMNIST does) and resized; :func:`detect_channels` tells
whether a set of files needs colour.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGE_EXTENSIONS",
    "PIL_EXTENSIONS",
    "detect_channels",
    "image_suffix",
    "is_dicom_without_suffix",
    "read_image",
    "read_sized",
]


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".nii", ".nii.gz")
PIL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as PIL's "L" conversion


def image_suffix(path: Path) -> str:
    """The lower-case extension that picks the reader (``.nii.gz`` counts as one).

    Example:
        >>> image_suffix(Path("scan.NII.GZ"))
        '.nii.gz'
    """
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def is_dicom_without_suffix(path: Path) -> bool:
    """A DICOM file without an image extension, known by ``DICM`` at byte 128.

    DICOM exports often name files ``IM0001`` or by their UID (``1.2.840.113619.2.55.3``, whose last dot
    looks like an extension); any name without one of :data:`IMAGE_EXTENSIONS` is checked.

    Example:
        >>> import tempfile
        >>> with tempfile.NamedTemporaryFile() as f:  # a name without extension, like IM0001
        ...     _ = f.write(bytes(128) + b"DICM"); f.flush()
        ...     is_dicom_without_suffix(Path(f.name)), is_dicom_without_suffix(Path("IM0001.png"))
        (True, False)
    """
    if image_suffix(path) in IMAGE_EXTENSIONS:
        return False
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def _kind(path: Path) -> str:
    ext = image_suffix(path)
    if ext in PIL_EXTENSIONS:
        return "pil"
    if ext == ".dcm" or is_dicom_without_suffix(path):
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


def read_image(
    path: str | os.PathLike[str], *, image_size: int = 28, channels: int = 1, scale: str = "minmax"
) -> torch.Tensor:
    """Read one image file into a plain ``(channels, image_size, image_size)`` float32 tensor in [0, 1].

    Args:
        path: a PNG, JPEG, BMP, TIFF, DICOM (``.dcm`` or no extension) or NIfTI file.
        image_size: output side length.
        channels: 1 (RGB is converted to greyscale) or 3 (greyscale is repeated).
        scale: ``"minmax"`` (each image stretched to [0, 1], as class folders and CSV manifests are read) or
            ``"uint8"`` (an 8-bit PNG/JPEG/BMP/TIFF divided by 255, as MedMNIST ``.npz`` images are read).

    Raises:
        ImportError: the reader's package (pillow, pydicom, nibabel) is not installed.
        ValueError / OSError / RuntimeError: the file cannot be read as an image.

    Example:
        >>> read_image("scan.dcm", image_size=64).shape  # doctest: +SKIP
        torch.Size([1, 64, 64])
    """
    return read_sized(Path(path), image_size=image_size, channels=channels, scale=scale)[0]


def read_sized(
    p: Path, *, image_size: int, channels: int, scale: str = "minmax"
) -> tuple[torch.Tensor, tuple[int, int]]:
    """:func:`read_image`, also returning the picture's native ``(height, width)`` before crop and resize.

    Example:
        >>> x, hw = read_sized(Path("chest.png"), image_size=28, channels=1)  # doctest: +SKIP
        >>> x.shape, hw  # a 640 px wide, 480 px high PNG  # doctest: +SKIP
        (torch.Size([1, 28, 28]), (480, 640))
    """
    if scale not in ("minmax", "uint8"):
        raise ValueError(f"scale must be 'minmax' or 'uint8', got {scale!r}")
    kind = _kind(p)
    if scale == "uint8" and kind != "pil":
        raise ValueError(f"{p}: scale='uint8' reads 8-bit PNG/JPEG/BMP/TIFF files only; use scale='minmax'")
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
    if scale == "uint8":  # as the .npz path: the stored 0-255 values, divided by 255
        if hi > 255:
            raise ValueError(f"{p}: not an 8-bit image (values up to {float(hi):.0f}); use scale='minmax'")
        x = x / 255.0
    elif hi > lo:  # min-max per image; MONOCHROME1 DICOM (low values are white) is inverted
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
