"""MedMNIST v2 / MedMNIST+ (2-D): registry, ``.npz`` loader and checksummed download.

The registry (file names, URLs, MD5s, labels, licences) is transcribed from the official
``medmnist`` package, ``medmnist/info.py`` version 3.0.2 (github.com/MedMNIST/MedMNIST, commit
3bb56be69bca38e5f105b21e4d6482b91354d3a4; Zenodo record 10519652, which holds the 28 px files
``<name>.npz`` and the MedMNIST+ files ``<name>_{64,128,224}.npz``). We do not depend on the
``medmnist`` package itself: it pulls extra dependencies (fire, scikit-image, ...) for what is a
table of constants and ``np.load``.

Cite: Jiancheng Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D
biomedical image classification", Scientific Data 10, 41 (2023), and the source dataset of each
file (see ``data/README.md``).
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F

from medmeta_lib.config import data_dir as default_data_dir
from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.download import download_file, file_checksum

__all__ = [
    "MEDMNIST_DATASETS",
    "MEDMNIST_SIZES",
    "MedMNISTInfo",
    "download_medmnist",
    "find_medmnist_file",
    "load_medmnist",
    "load_npz",
]

MEDMNIST_SIZES = (28, 64, 128, 224)
ZENODO_RECORD = "https://zenodo.org/records/10519652/files"
_SPLITS = ("train", "val", "test")
_CHUNK = 2048  # images resized per batch: bounds the float32 working memory


@dataclass(frozen=True)
class MedMNISTInfo:
    """One 2-D MedMNIST dataset.

    Attributes:
        name: registry key, e.g. ``"pneumoniamnist"``.
        description: one line: modality and task.
        modality: image modality (used as every class's modality in the collection).
        task: ``"binary-class"``, ``"multi-class"``, ``"ordinal-regression"`` or
            ``"multi-label, binary-class"`` (the last is not usable for N-way episodes).
        label_names: class names in label order.
        channels: 1 (greyscale) or 3 (RGB).
        licence: ``"CC BY 4.0"`` or ``"CC BY-NC 4.0"`` (DermaMNIST: non-commercial).
        n_samples: official images per split (MedMNIST v3 files).
        md5s: official MD5 per image size (28, 64, 128, 224).
        source: the original dataset to cite alongside MedMNIST.
    """

    name: str
    description: str
    modality: str
    task: str
    label_names: tuple[str, ...]
    channels: int
    licence: str
    n_samples: Mapping[str, int]
    md5s: Mapping[int, str | None]
    source: str

    @property
    def multi_label(self) -> bool:
        """True for multi-label datasets (ChestMNIST), which N-way episodes cannot use."""
        return self.task.startswith("multi-label")

    def file_name(self, size: int = 28) -> str:
        """Official file name: ``<name>.npz`` at 28 px, ``<name>_<size>.npz`` otherwise."""
        _check_size(size)
        return f"{self.name}.npz" if size == 28 else f"{self.name}_{size}.npz"

    def url(self, size: int = 28) -> str:
        """Official Zenodo download URL of the file of ``size`` px."""
        return f"{ZENODO_RECORD}/{self.file_name(size)}?download=1"

    def md5(self, size: int = 28) -> str | None:
        """Official MD5 of the file of ``size`` px (``None`` if unknown)."""
        _check_size(size)
        return self.md5s.get(size)


def _check_size(size: int) -> None:
    if size not in MEDMNIST_SIZES:
        raise ValueError(f"size must be one of {MEDMNIST_SIZES} (the official MedMNIST sizes), got {size!r}")


_ORGANS = (
    "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right",
    "liver", "lung-left", "lung-right", "pancreas", "spleen",
)  # fmt: skip
_ORGAN_SOURCE = "LiTS (Bilic et al. 2023, Medical Image Analysis 84:102680)"


def _info(
    name: str,
    description: str,
    modality: str,
    task: str,
    labels: tuple[str, ...],
    channels: int,
    n: tuple[int, int, int],
    md5: tuple[str, str, str, str],
    source: str,
    licence: str = "CC BY 4.0",
) -> MedMNISTInfo:
    return MedMNISTInfo(
        name=name,
        description=description,
        modality=modality,
        task=task,
        label_names=labels,
        channels=channels,
        licence=licence,
        n_samples=MappingProxyType(dict(zip(_SPLITS, n))),
        md5s=MappingProxyType(dict(zip(MEDMNIST_SIZES, md5))),
        source=source,
    )


# MD5s per size (28, 64, 128, 224), labels, split sizes and licences: medmnist/info.py v3.0.2 (see the
# module docstring). Organ{A,C,S}MNIST 28 px MD5s and split sizes changed from v2.x to v3.0.
_ALL = (
    _info("pathmnist", "colon pathology (H&E), 9 tissue types", "histology", "multi-class",
          ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
           "cancer-associated stroma", "colorectal adenocarcinoma epithelium"),
          3, (89996, 10004, 7180),
          ("a8b06965200029087d5bd730944a56c1", "55aa9c1e0525abe5a6b9d8343a507616",
           "ac42d08fb904d92c244187169d1fd1d9", "2c51a510bcdc9cf8ddb2af93af1eadec"),
          "NCT-CRC-HE-100K / CRC-VAL-HE-7K (Kather et al. 2019, PLOS Medicine 16:e1002730)"),
    _info("chestmnist", "chest X-ray, 14 findings (multi-label)", "chest_xray", "multi-label, binary-class",
          ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
           "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"),
          1, (78468, 11219, 22433),
          ("02c8a6516a18b556561a56cbdd36c4a8", "9de6cd0b934ebb5b7426cfba5efbae16",
           "db107e5590b27930b62dbaf558aebee3", "45bd33e6f06c3e8cdb481c74a89152aa"),
          "NIH ChestX-ray14 (Wang et al. 2017, CVPR)"),
    _info("dermamnist", "dermatoscopy, 7 skin lesions", "dermoscopy", "multi-class",
          ("actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
           "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions"),
          3, (7007, 1003, 2005),
          ("0744692d530f8e62ec473284d019b0c7", "b70a2f5635c6199aeaa28c31d7202e1f",
           "2defd784463fa5243564e855ed717de1", "8974907d8e169bef5f5b96bc506ae45d"),
          "HAM10000 (Tschandl et al. 2018, Scientific Data 5:180161)", licence="CC BY-NC 4.0"),
    _info("octmnist", "retinal OCT, 4 diagnoses", "oct", "multi-class",
          ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
          1, (97477, 10832, 1000),
          ("c68d92d5b585d8d81f7112f81e2d0842", "e229e9440236b774d9f0dfef9d07bdaf",
           "0a97e76651ace45c5d943ee3f65b63ae", "abc493b6d529d5de7569faaef2773ba3"),
          "Kermany et al. 2018, Cell 172(5):1122-1131"),
    _info("pneumoniamnist", "paediatric chest X-ray, pneumonia vs normal", "chest_xray", "binary-class",
          ("normal", "pneumonia"),
          1, (4708, 524, 624),
          ("28209eda62fecd6e6a2d98b1501bb15f", "8f4eceb4ccffa70c672198ea285246c6",
           "05b46931834c231683c68f40c47b2971", "d6a3c71de1b945ea11211b03746c1fe1"),
          "Kermany et al. 2018, Cell 172(5):1122-1131"),
    _info("retinamnist", "retinal fundus, diabetic retinopathy grade 0-4", "fundus", "ordinal-regression",
          ("0", "1", "2", "3", "4"),
          3, (1080, 120, 400),
          ("bd4c0672f1bba3e3a89f0e4e876791e4", "afda852cc34dcda56f86ad2b2457dbcc",
           "e48e916a24454daf90583d4e6efb1a18", "eae7e3b6f3fcbda4ae613ebdcbe35348"),
          "DeepDRiD (Liu et al. 2022, Patterns 3(6):100512)"),
    _info("breastmnist", "breast ultrasound, malignant vs normal/benign", "ultrasound", "binary-class",
          ("malignant", "normal, benign"),
          1, (546, 78, 156),
          ("750601b1f35ba3300ea97c75c52ff8f6", "742edef2a1fd1524b2efff4bd7ba9364",
           "363e4b3f8d712e9b5de15470a2aaadf1", "b56378a6eefa9fed602bb16d192d4c8b"),
          "BUSI (Al-Dhabyani et al. 2020, Data in Brief 28:104863)"),
    _info("bloodmnist", "blood cell microscopy, 8 cell types", "blood_microscopy", "multi-class",
          ("basophil", "eosinophil", "erythroblast",
           "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte", "monocyte",
           "neutrophil", "platelet"),
          3, (11959, 1712, 3421),
          ("7053d0359d879ad8a5505303e11de1dc", "2b94928a2ae4916078ca51e05b6b800b",
           "adace1e0ed228fccda1f39692059dd4c", "b718ff6835fcbdb22ba9eacccd7b2601"),
          "Acevedo et al. 2020, Data in Brief 30:105474"),
    _info("tissuemnist", "kidney cortex cell microscopy, 8 cell types", "kidney_microscopy", "multi-class",
          ("Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
           "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments",
           "Thick Ascending Limb"),
          1, (165466, 23640, 47280),
          ("ebe78ee8b05294063de985d821c1c34b", "123ece2eba09d0aa5d698fda57103344",
           "61b955355d7425a89687b06cca3ce0c2", "b077128c4a949f0a4eb01517f9037b9c"),
          "BBBC051 (Woloshuk et al. 2021, Cytometry A 99(7):707-721)"),
    _info("organamnist", "abdominal CT, axial, 11 organs", "abdominal_ct", "multi-class", _ORGANS,
          1, (34561, 6491, 17778),
          ("68e3f8846a6bd62f0c9bf841c0d9eacc", "2dcccc29b88e6da5a01161ef20cda288",
           "eeae80d0a227a8d099027e1b3cfd3b60", "50747347e05c87dd3aaf92c49f9f3170"),
          _ORGAN_SOURCE),
    _info("organcmnist", "abdominal CT, coronal, 11 organs", "abdominal_ct", "multi-class", _ORGANS,
          1, (12975, 2392, 8216),
          ("b9ceb9546e10131b32923c5bbeaea2b1", "3ce34a8724ea6f548e6db4744d03b6a9",
           "773c1f009daa3fe5d9a2a201b2a7ed94", "050f5e875dc056f6768abf94ec9995d1"),
          _ORGAN_SOURCE),
    _info("organsmnist", "abdominal CT, sagittal, 11 organs", "abdominal_ct", "multi-class", _ORGANS,
          1, (13932, 2452, 8827),
          ("9ab87b696fb54e2a387ebe992d6ed5f1", "53a6d115339d874c25e309a994ff46d3",
           "ded0c5fa01a95dc4978b956f613e9b8e", "b354719e553fbbb2513d5533f52a4cb1"),
          _ORGAN_SOURCE),
)  # fmt: skip

MEDMNIST_DATASETS: Mapping[str, MedMNISTInfo] = MappingProxyType({i.name: i for i in _ALL})
"""The twelve 2-D MedMNIST datasets by name (read-only)."""

_3D = ("organmnist3d", "nodulemnist3d", "adrenalmnist3d", "fracturemnist3d", "vesselmnist3d", "synapsemnist3d")


def _lookup(name: str) -> MedMNISTInfo:
    key = str(name).strip().lower()
    if key in MEDMNIST_DATASETS:
        return MEDMNIST_DATASETS[key]
    if key in _3D:
        raise ValueError(
            f"{name!r} is a 3-D MedMNIST dataset; only the 2-D ones are supported: {list(MEDMNIST_DATASETS)}"
        )
    raise ValueError(f"unknown MedMNIST dataset {name!r}; choose one of {list(MEDMNIST_DATASETS)}")


def _check_common(split: str, image_size: int) -> None:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
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
        for s in _SPLITS:
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
    info = _lookup(name)
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
    info = _lookup(name)
    _check_common(split, image_size)
    if info.multi_label:
        raise ValueError(
            f"medmnist:{info.name} is multi-label ({info.task}); N-way episodes need one class per image. "
            "Choose another dataset (e.g. pneumoniamnist, dermamnist, bloodmnist)"
        )
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
    return load_npz(path, split=split, image_size=image_size, name=info.name, source=f"medmnist:{info.name}")


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
    info = _lookup(name)
    _check_size(size)
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
