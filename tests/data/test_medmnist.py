"""MedMNIST .npz loader, file lookup and download (local server only); the registry has its own file."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import torch

import medmeta_lib.data.medmnist_registry as registry
from medmeta_lib.data.download import DownloadError
from medmeta_lib.data.medmnist import (
    MEDMNIST_DATASETS,
    download_medmnist,
    find_medmnist_file,
    load_medmnist,
    load_npz,
)
from medmeta_lib.data.sources import load_collection
from tests.conftest import PNEUMONIA, needs_pneumonia


def _write_npz(
    path: Path,
    *,
    n: int = 12,
    size: int = 10,
    rgb: bool = False,
    n_classes: int = 2,
    labels_2d: bool = True,
    seed: int = 0,
    **extra: np.ndarray,
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for split, k in (("train", n), ("val", n // 2), ("test", n // 2)):
        shape = (k, size, size, 3) if rgb else (k, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        lab = (np.arange(k) % n_classes).astype(np.uint8)
        arrays[f"{split}_labels"] = lab[:, None] if labels_2d else lab
    arrays.update(extra)
    np.savez_compressed(path, **arrays)
    return arrays


# ---------------------------------------------------------------- load_npz
def test_load_npz_greyscale_exact_pixels(tmp_path: Path) -> None:
    p = tmp_path / "mydata.npz"
    arrays = _write_npz(p, n=12, size=10)
    col = load_npz(p, split="train", image_size=10)
    assert col.images.shape == (12, 1, 10, 10) and col.images.dtype == torch.float32
    assert torch.equal((col.images[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(arrays["train_images"]))
    assert col.labels.tolist() == arrays["train_labels"][:, 0].tolist()
    assert col.class_names == ("class0", "class1")
    assert col.site_names == ("mydata",) and col.split == "train" and col.source == str(p)
    val = load_npz(p, split="val", image_size=10)
    assert len(val) == 6 and val.split == "val"


def test_load_npz_rgb_flat_labels_and_resize(tmp_path: Path) -> None:
    p = tmp_path / "rgb.npz"
    arrays = _write_npz(p, n=8, size=28, rgb=True, n_classes=4, labels_2d=False)
    col = load_npz(p, split="test", image_size=28)
    assert col.images.shape == (4, 3, 28, 28)
    ref = torch.from_numpy(arrays["test_images"]).permute(0, 3, 1, 2)
    assert torch.equal((col.images * 255).round().to(torch.uint8), ref)
    assert col.labels.tolist() == [0, 1, 2, 3]
    for size in (64, 14):
        r = load_npz(p, split="test", image_size=size)
        assert r.images.shape == (4, 3, size, size)
        assert 0.0 <= float(r.images.min()) and float(r.images.max()) <= 1.0
        # resizing keeps the mean brightness of each image (within interpolation error)
        assert torch.allclose(r.images.mean((2, 3)), col.images.mean((2, 3)), atol=0.03)


@pytest.mark.parametrize("size", [64, 14])
def test_resizing_rgb_keeps_each_channel_and_its_orientation(tmp_path: Path, size: int) -> None:
    """Red rises left to right, green top to bottom, blue is flat: a swapped channel or axis would show."""
    ramp = np.linspace(0, 255, 28)
    img = np.zeros((28, 28, 3))
    img[..., 0], img[..., 1], img[..., 2] = ramp[None, :], ramp[:, None], 77
    images = np.repeat(img.round().astype(np.uint8)[None], 2, axis=0)
    p = tmp_path / "ramps.npz"
    np.savez(p, test_images=images, test_labels=np.array([[0], [1]]))
    red, green, blue = load_npz(p, split="test", image_size=size).images[0]
    assert red.shape == (size, size)
    assert torch.all(red.diff(dim=1) >= 0) and float(red[:, -1].mean() - red[:, 0].mean()) > 0.8
    assert torch.allclose(red, red[:1].expand_as(red), atol=1e-6)  # constant down each column
    assert torch.allclose(green, red.T, atol=1e-6)  # the same ramp, top to bottom
    assert torch.allclose(blue, torch.full_like(blue, 77 / 255), atol=1e-5)


def test_constant_image_resizes_to_the_same_constant(tmp_path: Path) -> None:
    p = tmp_path / "const.npz"
    img = np.full((2, 28, 28), 77, np.uint8)
    np.savez(p, train_images=img, train_labels=np.array([[0], [1]], np.uint8))
    col = load_npz(p, image_size=64)
    assert torch.allclose(col.images, torch.full_like(col.images, 77 / 255), atol=1e-6)


def test_class_names_from_registry_by_file_name(tmp_path: Path) -> None:
    p = tmp_path / "pneumoniamnist_64.npz"
    _write_npz(p, size=64)
    col = load_npz(p, image_size=28)
    assert col.class_names == ("normal", "pneumonia")
    assert col.site_names == ("pneumoniamnist",)
    assert col.class_modalities == ("chest_xray", "chest_xray")
    assert col.meta["native_size"] == 64 and col.meta["licence"] == "CC BY 4.0"
    named = load_npz(p, image_size=28, name="breastmnist")
    assert named.class_names == ("malignant", "normal, benign")


def test_class_ids_agree_across_splits(tmp_path: Path) -> None:
    # class 2 only occurs in train: val keeps it as an empty class so ids mean the same everywhere
    p = tmp_path / "odd.npz"
    img = np.zeros((3, 8, 8), np.uint8)
    np.savez(p, train_images=img, train_labels=np.array([0, 1, 2]), val_images=img[:2], val_labels=np.array([0, 1]))
    val = load_npz(p, split="val", image_size=8)
    assert val.class_names == ("class0", "class1", "class2")
    assert val.class_counts().tolist() == [1, 1, 0]


@pytest.mark.parametrize(
    ("writer", "pattern"),
    [
        (lambda p: p.write_text("<html>Service unavailable</html>"), "not an .npz"),
        (lambda p: p.write_bytes(b""), "not an .npz"),
        (lambda p: np.save(p.with_suffix(".npy"), np.zeros(3)) or p.with_suffix(".npy").rename(p), "not an .npz"),
    ],
)
def test_not_a_zip(tmp_path: Path, writer, pattern: str) -> None:
    p = tmp_path / "bad.npz"
    writer(p)
    with pytest.raises(ValueError, match=pattern) as ei:
        load_npz(p)
    assert str(p) in str(ei.value)


def test_truncated_file(tmp_path: Path) -> None:
    p = tmp_path / "trunc.npz"
    _write_npz(p, n=200, size=28)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="readable") as ei:
        load_npz(p)
    assert str(p) in str(ei.value)


@pytest.mark.parametrize("offset", [100, 2000])  # a broken deflate stream (zlib.error) / a CRC mismatch
def test_corrupted_member(tmp_path: Path, offset: int) -> None:
    # flip bytes inside the compressed train_images member: the zip directory is intact
    p = tmp_path / "corrupt.npz"
    _write_npz(p, n=200, size=28)
    data = bytearray(p.read_bytes())
    for i in range(offset, offset + 100):
        data[i] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="train_images") as ei:
        load_npz(p)
    assert str(p) in str(ei.value)


def test_missing_key_names_file_and_key(tmp_path: Path) -> None:
    p = tmp_path / "nokey.npz"
    np.savez(p, train_images=np.zeros((2, 8, 8), np.uint8), train_labels=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="'test_images' is missing") as ei:
        load_npz(p, split="test", image_size=8)
    assert str(p) in str(ei.value)


@pytest.mark.parametrize(
    ("labels", "pattern"),
    [
        (np.zeros((5, 1), np.uint8), r"must have shape \(4, 1\) or \(4,\)"),
        (np.zeros((4, 14), np.uint8), "multi-label"),
        (np.zeros((4, 1), np.float32), "integer"),
        (np.array([0, 1, -1, 0]), "negative"),
    ],
)
def test_bad_labels(tmp_path: Path, labels: np.ndarray, pattern: str) -> None:
    p = tmp_path / "lab.npz"
    np.savez(p, train_images=np.zeros((4, 8, 8), np.uint8), train_labels=labels)
    with pytest.raises(ValueError, match=pattern) as ei:
        load_npz(p, image_size=8)
    assert str(p) in str(ei.value) and "train_labels" in str(ei.value)


def test_chestmnist_shaped_file_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "chestmnist.npz"
    np.savez(p, train_images=np.zeros((4, 28, 28), np.uint8), train_labels=np.zeros((4, 14), np.uint8))
    with pytest.raises(ValueError, match=r"multi-label data \(chestmnist\)"):
        load_npz(p)


@pytest.mark.parametrize(
    ("images", "pattern"),
    [
        (np.zeros((4, 8, 8), np.float32), "uint8"),
        (np.zeros((4, 8, 8, 8), np.uint8), "3-D"),
        (np.zeros((4, 8), np.uint8), r"\(N, H, W\)"),
    ],
)
def test_bad_images(tmp_path: Path, images: np.ndarray, pattern: str) -> None:
    p = tmp_path / "img.npz"
    np.savez(p, train_images=images, train_labels=np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match=pattern) as ei:
        load_npz(p, image_size=8)
    assert "train_images" in str(ei.value)


def test_label_beyond_registry_classes(tmp_path: Path) -> None:
    p = tmp_path / "pneumoniamnist.npz"
    np.savez(p, train_images=np.zeros((3, 8, 8), np.uint8), train_labels=np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="pneumoniamnist has 2 classes"):
        load_npz(p, image_size=8)


def test_pickled_arrays_are_never_loaded(tmp_path: Path) -> None:
    p = tmp_path / "pickle.npz"
    obj = np.empty(2, dtype=object)
    obj[0], obj[1] = {"a": 1}, [2]
    np.savez(p, train_images=obj, train_labels=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="train_images"):
        load_npz(p)


def test_bad_arguments(tmp_path: Path) -> None:
    p = tmp_path / "x.npz"
    _write_npz(p)
    with pytest.raises(ValueError, match="split"):
        load_npz(p, split="training")
    with pytest.raises(ValueError, match="image_size"):
        load_npz(p, image_size=4)
    with pytest.raises(FileNotFoundError, match=r"nope\.npz"):
        load_npz(tmp_path / "nope.npz")


# ---------------------------------------------------------------- load_medmnist / lookup
def test_missing_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as ei:
        load_medmnist("pneumoniamnist", image_size=64, data_dir=tmp_path)
    msg = str(ei.value)
    assert "pneumoniamnist_64.npz" in msg and "pneumoniamnist.npz" in msg and str(tmp_path) in msg
    assert "medmeta data download pneumoniamnist --size 64" in msg and "MEDMETA_DATA_DIR" in msg


def test_unknown_3d_and_multilabel_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown MedMNIST dataset 'foomnist'"):
        load_medmnist("foomnist", data_dir=tmp_path)
    with pytest.raises(ValueError, match="3-D"):
        load_medmnist("organmnist3d", data_dir=tmp_path)
    with pytest.raises(ValueError, match="multi-label"):  # refused before looking for the file
        load_medmnist("chestmnist", data_dir=tmp_path)


def test_file_preference_and_resizing(tmp_path: Path) -> None:
    _write_npz(tmp_path / "pneumoniamnist.npz", size=28, seed=1)
    _write_npz(tmp_path / "pneumoniamnist_64.npz", size=64, seed=2)
    assert find_medmnist_file("pneumoniamnist", 28, data_dir=tmp_path).name == "pneumoniamnist.npz"
    assert find_medmnist_file("pneumoniamnist", 64, data_dir=tmp_path).name == "pneumoniamnist_64.npz"
    assert find_medmnist_file("pneumoniamnist", 32, data_dir=tmp_path).name == "pneumoniamnist_64.npz"
    assert find_medmnist_file("pneumoniamnist", 224, data_dir=tmp_path).name == "pneumoniamnist_64.npz"
    assert find_medmnist_file("dermamnist", 28, data_dir=tmp_path) is None
    col = load_medmnist("pneumoniamnist", image_size=64, data_dir=tmp_path)
    assert col.meta["native_size"] == 64 and col.images.shape[-1] == 64
    assert col.source == "medmnist:pneumoniamnist" and col.class_names == ("normal", "pneumonia")
    (tmp_path / "pneumoniamnist_64.npz").unlink()
    col = load_medmnist("PneumoniaMNIST", image_size=64, data_dir=tmp_path)  # falls back to 28 px, resized
    assert col.meta["native_size"] == 28 and col.images.shape[-1] == 64


def test_load_collection_routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_npz(tmp_path / "bloodmnist.npz", size=28, rgb=True, n_classes=8, n=16)
    monkeypatch.setenv("MEDMETA_DATA_DIR", str(tmp_path))
    col = load_collection("medmnist:bloodmnist", split="val", image_size=32)
    assert col.images.shape == (8, 3, 32, 32) and col.num_classes == 8 and col.class_names[0] == "basophil"
    col = load_collection(str(tmp_path / "bloodmnist.npz"), split="test")
    assert col.images.shape == (8, 3, 28, 28)


# ---------------------------------------------------------------- download (local server)
class _Handler(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.hits.append(self.path)
        body = self.files.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    src = tmp_path / "src.npz"
    _write_npz(src, size=28, n=10)
    body = src.read_bytes()
    _Handler.files = {"/pneumoniamnist.npz": body}
    _Handler.hits = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", body
    httpd.shutdown()
    httpd.server_close()


def test_download_then_load(server: tuple[str, bytes], tmp_path: Path) -> None:
    base, body = server
    md5 = hashlib.md5(body).hexdigest()
    dd = tmp_path / "data"
    url = f"{base}/pneumoniamnist.npz?download=1"
    path = download_medmnist("pneumoniamnist", data_dir=dd, url=url, md5=md5, progress=False)
    assert path == dd / "pneumoniamnist.npz" and path.read_bytes() == body
    assert sorted(p.name for p in dd.iterdir()) == ["pneumoniamnist.npz"]
    col = load_medmnist("pneumoniamnist", split="train", data_dir=dd)
    assert len(col) == 10 and col.class_names == ("normal", "pneumonia")
    # already present with the right MD5: no second request
    download_medmnist("pneumoniamnist", data_dir=dd, url=url, md5=md5, progress=False)
    assert len(_Handler.hits) == 1


def test_download_checks_the_official_md5_by_default(server: tuple[str, bytes], tmp_path: Path) -> None:
    base, _ = server
    # a mirror serving some other file: the official MD5 does not match, nothing is written
    with pytest.raises(DownloadError, match="28209eda62fecd6e6a2d98b1501bb15f"):
        download_medmnist("pneumoniamnist", data_dir=tmp_path / "d", url=f"{base}/pneumoniamnist.npz", progress=False)
    assert list((tmp_path / "d").iterdir()) == []


def test_download_refuses_without_a_known_md5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    info = MEDMNIST_DATASETS["pneumoniamnist"]
    no_md5 = dataclasses.replace(info, md5s={28: None, 64: None, 128: None, 224: None})
    monkeypatch.setattr(registry, "MEDMNIST_DATASETS", {"pneumoniamnist": no_md5})
    with pytest.raises(ValueError, match="pass md5="):
        download_medmnist("pneumoniamnist", data_dir=tmp_path, url="http://127.0.0.1:1/x.npz")
    assert list(tmp_path.iterdir()) == []


def test_download_bad_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size must be one of"):
        download_medmnist("pneumoniamnist", size=32, data_dir=tmp_path)


# ---------------------------------------------------------------- real PneumoniaMNIST
REAL_COUNTS = {"train": (4708, 1214, 3494), "val": (524, 135, 389), "test": (624, 234, 390)}


@pytest.mark.realdata
@needs_pneumonia
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_real_pneumoniamnist_counts(split: str) -> None:
    assert PNEUMONIA is not None
    col = load_npz(PNEUMONIA, split=split)
    n, normal, pneumonia = REAL_COUNTS[split]
    assert len(col) == n and col.image_size == 28 and col.channels == 1
    assert col.class_names == ("normal", "pneumonia")
    assert col.class_counts().tolist() == [normal, pneumonia]
    with np.load(PNEUMONIA) as raw:  # pixels are the file's, scaled to [0, 1]
        ref = torch.from_numpy(raw[f"{split}_images"])
    assert torch.equal((col.images[:, 0] * 255).round().to(torch.uint8), ref)


@pytest.mark.realdata
@needs_pneumonia
def test_real_pneumoniamnist_resized_and_via_load_collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert PNEUMONIA is not None
    big = load_npz(PNEUMONIA, split="test", image_size=64)
    assert big.images.shape == (624, 1, 64, 64)
    small = load_npz(PNEUMONIA, split="test")
    down = torch.nn.functional.interpolate(big.images, size=28, mode="area")
    assert float((down - small.images).abs().mean()) < 0.02  # the 64 px images are the same pictures

    col = load_collection(str(PNEUMONIA), split="test")
    assert len(col) == 624 and col.class_counts().tolist() == [234, 390]

    (tmp_path / "pneumoniamnist.npz").symlink_to(PNEUMONIA)
    monkeypatch.setenv("MEDMETA_DATA_DIR", str(tmp_path))
    col = load_collection("medmnist:pneumoniamnist")
    assert col.source == "medmnist:pneumoniamnist" and len(col) == 4708
    assert col.class_counts().tolist() == [1214, 3494]
    assert col.site_names == ("pneumoniamnist",)
