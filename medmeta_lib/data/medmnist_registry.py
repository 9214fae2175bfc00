"""The 2-D MedMNIST datasets: official file names, URLs, MD5s, labels, split sizes and licences.

Transcribed from the official ``medmnist`` package, ``medmnist/info.py`` version 3.0.2
(github.com/MedMNIST/MedMNIST, commit 3bb56be69bca38e5f105b21e4d6482b91354d3a4; Zenodo record 10519652,
which holds the 28 px files ``<name>.npz`` and the MedMNIST+ files ``<name>_{64,128,224}.npz``). We do
not depend on the ``medmnist`` package itself: it pulls extra dependencies (fire, scikit-image, ...) for
what is a table of constants. Loading and downloading live in :mod:`medmeta_lib.data.medmnist`.

Cite: Jiancheng Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D
biomedical image classification", Scientific Data 10, 41 (2023), and the source dataset of each
file (``MedMNISTInfo.source``; see ``data/README.md``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = [
    "MEDMNIST_DATASETS",
    "MEDMNIST_SIZES",
    "SPLITS",
    "ZENODO_RECORD",
    "MedMNISTInfo",
    "check_medmnist_size",
    "medmnist_info",
]

MEDMNIST_SIZES = (28, 64, 128, 224)
ZENODO_RECORD = "https://zenodo.org/records/10519652/files"
SPLITS = ("train", "val", "test")


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
        check_medmnist_size(size)
        return f"{self.name}.npz" if size == 28 else f"{self.name}_{size}.npz"

    def url(self, size: int = 28) -> str:
        """Official Zenodo download URL of the file of ``size`` px."""
        return f"{ZENODO_RECORD}/{self.file_name(size)}?download=1"

    def md5(self, size: int = 28) -> str | None:
        """Official MD5 of the file of ``size`` px (``None`` if unknown)."""
        check_medmnist_size(size)
        return self.md5s.get(size)


def check_medmnist_size(size: int) -> None:
    """Raise ``ValueError`` unless ``size`` is an official MedMNIST side (28, 64, 128 or 224).

    Example:
        >>> check_medmnist_size(64)  # an official size: no error
        >>> check_medmnist_size(32)
        Traceback (most recent call last):
        ValueError: size must be one of (28, 64, 128, 224) (the official MedMNIST sizes), got 32
    """
    if isinstance(size, bool) or not isinstance(size, int) or size not in MEDMNIST_SIZES:  # 64.0 names no file
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
        n_samples=MappingProxyType(dict(zip(SPLITS, n))),
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


def medmnist_info(name: str) -> MedMNISTInfo:
    """The registry entry of a 2-D MedMNIST dataset (case and surrounding spaces ignored).

    Raises:
        ValueError: for a 3-D MedMNIST dataset or an unknown name, listing the 2-D names.

    Example:
        >>> info = medmnist_info("PneumoniaMNIST")
        >>> info.file_name(64), info.n_samples["test"], info.licence
        ('pneumoniamnist_64.npz', 624, 'CC BY 4.0')
    """
    key = str(name).strip().lower()
    if key in MEDMNIST_DATASETS:
        return MEDMNIST_DATASETS[key]
    if key in _3D:
        raise ValueError(
            f"{name!r} is a 3-D MedMNIST dataset; only the 2-D ones are supported: {list(MEDMNIST_DATASETS)}"
        )
    raise ValueError(f"unknown MedMNIST dataset {name!r}; choose one of {list(MEDMNIST_DATASETS)}")
