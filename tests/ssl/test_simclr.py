from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.sources import load_collection
from medmeta_lib.data.synthetic import MedSynth
from medmeta_lib.ssl.probe import linear_probe
from medmeta_lib.ssl.simclr import PretrainResult, pretrain_simclr
from medmeta_lib.ssl.simclr_config import SimCLRConfig
from medmeta_lib.ssl.views import ContrastiveViews
from medmeta_lib.training.checkpoint import load_backbone, load_checkpoint
from tests.conftest import make_collection

BACKBONE = {"hidden": 16, "norm": "group"}
SMALL = {"batch_size": 24, "proj_hidden": 32, "proj_dim": 16, "lr": 3e-3, "augment_preset": "chest_xray"}
IDENTITY_AUG = {
    "rotate_deg": 0.0,
    "scale": (1.0, 1.0),
    "gamma": (1.0, 1.0),
    "contrast": (1.0, 1.0),
    "brightness": (0.0, 0.0),
    "noise_std": 0.0,
    "blur_sigma": (0.0, 0.0),
}


MODALITIES = ["chest_xray", "fundus", "histology"]
# a few classes: two per modality (normal / cardiomegaly, normal / diabetic retinopathy, adipose / stroma)
CLASSES = [
    "chest_xray/normal",
    "chest_xray/cardiomegaly",
    "fundus/normal",
    "fundus/diabetic_retinopathy",
    "histology/adipose",
    "histology/stroma",
]


@pytest.fixture(scope="module")
def chest() -> dict[str, ImageCollection]:
    kw = {"image_size": 28, "modalities": MODALITIES, "n_sites": 2}
    out = {}
    for split, n in (("train", 6), ("test", 4)):  # train: 6 classes x 2 sites x 6 = 72 images (3 steps of 24)
        col = load_collection("synthetic", split=split, n_per_class_site=n, **kw)
        keep = [col.class_names.index(c) for c in CLASSES]
        out[split] = col.subset(np.flatnonzero(np.isin(col.labels.numpy(), keep)))
    return out


def _run(col: ImageCollection, out: Path | None = None, **cfg: object) -> PretrainResult:
    config = SimCLRConfig(**{**SMALL, **cfg})  # type: ignore[arg-type]
    return pretrain_simclr(col, backbone_kwargs=BACKBONE, config=config, out=out, progress=False)


def _steps(history: list[dict]) -> list[dict]:
    return [h for h in history if "loss" in h]


def test_two_epochs_loss_decreases_and_probe_beats_chance(chest: dict[str, ImageCollection], tmp_path: Path) -> None:
    train, test = chest["train"], chest["test"]
    config = SimCLRConfig(**{**SMALL, "epochs": 4, "monitor_every": 2})  # type: ignore[arg-type]
    res = pretrain_simclr(
        train,
        backbone_kwargs=BACKBONE,
        config=config,
        out=tmp_path / "enc.safetensors",
        monitor=(train, test),
        progress=False,
    )
    steps = _steps(res.history)
    spe = len(train) // 24
    assert [h["step"] for h in steps] == list(range(1, 4 * spe + 1))
    first, last = steps[:spe], steps[-spe:]
    assert sum(h["loss"] for h in last) < sum(h["loss"] for h in first)
    assert steps[0]["lr"] == pytest.approx(3e-3) and steps[-1]["lr"] < steps[0]["lr"]  # cosine decay
    monitors = [h for h in res.history if "knn_acc" in h]
    assert [m["epoch"] for m in monitors] == [0, 2, 4]
    # linear probe on held-out MedSynth patients (6 classes: chance 1/6) with the frozen encoder
    r = linear_probe(res.encoder, train, test, k_per_class=None)
    assert r["acc_mean"] > 1 / 6 + 0.25, r
    assert monitors[-1]["probe_acc"] == pytest.approx(r["acc_mean"])
    # trained in the channels-last / in-place-ReLU layout, returned in the default one
    assert all(p.is_contiguous() for p in res.encoder.parameters())
    assert not any(getattr(m, "inplace", False) for m in res.encoder.modules())
    # the checkpoint loads as a plain encoder with the same weights
    enc = load_backbone(tmp_path / "enc.safetensors", expected_name="conv4")
    for (k, a), (k2, b) in zip(enc.state_dict().items(), res.encoder.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


@pytest.mark.parametrize("site_invariance", [False, True])
def test_resume_is_bit_identical(chest: dict[str, ImageCollection], tmp_path: Path, site_invariance: bool) -> None:
    train = chest["train"]
    spe = len(train) // 24  # 3 steps per epoch
    cfg = {"epochs": 2, "site_invariance": site_invariance, "monitor_every": 1}
    full = _run(train, tmp_path / "full.safetensors", **cfg)
    # stop mid-epoch (step 4 of 6), then resume to the end
    part = tmp_path / "part.safetensors"
    first = _run(train, part, max_steps=spe + 1, **cfg)
    assert len(_steps(first.history)) == spe + 1 and load_checkpoint(part).metadata["step"] == spe + 1
    torch.manual_seed(123)  # disturb the global RNG: the checkpoint restores it
    resumed = _run(train, part, **cfg)
    assert resumed.history == full.history
    for a, b in zip(full.encoder.state_dict().values(), resumed.encoder.state_dict().values()):
        assert torch.equal(a, b)
    assert resumed.head is not None and full.head is not None
    for a, b in zip(full.head.state_dict().values(), resumed.head.state_dict().values()):
        assert torch.equal(a, b)
    # resuming a finished run does nothing and returns the same encoder
    again = _run(train, part, **cfg)
    assert again.history == full.history


def test_refuses_other_backbone_data_or_config(chest: dict[str, ImageCollection], tmp_path: Path) -> None:
    out = tmp_path / "enc.safetensors"
    _run(chest["train"], out, epochs=1, max_steps=1)
    with pytest.raises(ValueError, match=r"backbone 'conv4'.*hidden.*resume=False"):
        pretrain_simclr(
            chest["train"],
            backbone_kwargs={"hidden": 8, "norm": "group"},
            config=SimCLRConfig(**{**SMALL, "epochs": 1}),
            out=out,
            progress=False,
        )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"other data.*fingerprint"):
        _run(chest["test"], out, epochs=1)
    with pytest.raises(ValueError, match=r"another configuration.*temperature"):
        _run(chest["train"], out, epochs=1, temperature=0.5)
    # resume=False starts afresh on the same path
    res = pretrain_simclr(
        chest["test"],
        backbone_kwargs=BACKBONE,
        out=out,
        resume=False,
        progress=False,
        config=SimCLRConfig(**{**SMALL, "epochs": 1, "max_steps": 1}),
    )  # type: ignore[arg-type]
    assert len(res.history) == 1 and load_checkpoint(out).metadata["data"]["images"] == len(chest["test"])


def test_site_invariant_view_is_the_same_patient_at_another_site(chest: dict[str, ImageCollection]) -> None:
    train = chest["train"]
    cfg = SimCLRConfig(**{**SMALL, "site_invariance": True, "augment_kwargs": IDENTITY_AUG})  # type: ignore[arg-type]
    views = ContrastiveViews(train, cfg)
    assert views.mode == "restyle"
    idx = torch.arange(0, len(train), 7)
    v1, v2 = views(idx, step=3)
    torch.testing.assert_close(v1, train.images[idx], atol=1e-5, rtol=0)  # identity augmentation
    synth = MedSynth(modalities=MODALITIES, n_sites=2)
    other = 1 - train.sites[idx]  # two sites: the other one
    torch.testing.assert_close(v2, synth.restyle(train, idx, other), atol=1e-5, rtol=0)
    assert (v1 - v2).abs().amax(dim=(1, 2, 3)).min() > 0.01
    # not MedSynth: the second view gets the scanner shift
    toy = make_collection(size=16)
    shift = ContrastiveViews(toy, SimCLRConfig(**{**SMALL, "site_invariance": True}))  # type: ignore[arg-type]
    assert shift.mode == "scanner_shift"
    assert ContrastiveViews(toy, SimCLRConfig(**SMALL)).mode == "augment"  # type: ignore[arg-type]


def test_site_invariant_views_never_use_a_site_the_collection_lacks() -> None:
    # pretraining at hospitals 0, 1, 3 for a study that tests at hospital 2: the positive pairs must be
    # re-rendered at 0, 1 or 3 only, else the held-out hospital's acquisition leaks into pretraining
    synth = MedSynth(modalities=("chest_xray",), n_sites=4)
    full = synth.generate(n_per_class_site=3, image_size=16, seed=0)
    keep = torch.nonzero(full.sites != 2).flatten()
    train = full.subset(keep)
    cfg = SimCLRConfig(**{**SMALL, "site_invariance": True, "augment_kwargs": IDENTITY_AUG})  # type: ignore[arg-type]
    views = ContrastiveViews(train, cfg)
    idx = torch.arange(len(train))
    targets = set()
    for step in range(20):
        _, v2 = views(idx, step=step)
        # each second view equals the same patient restyled at exactly one of the kept sites, not its own
        cands = torch.stack([synth.restyle(train, idx, s) for s in range(4)])  # (site, N, 1, H, W)
        err = (cands - v2).abs().amax(dim=(2, 3, 4))
        chosen = err.argmin(0)
        assert bool((err.min(0).values < 1e-5).all())
        assert not bool((chosen == train.sites[idx]).any())
        targets |= set(chosen.tolist())
    assert targets == {0, 1, 3}


def test_views_are_deterministic_per_step(chest: dict[str, ImageCollection]) -> None:
    views = ContrastiveViews(chest["train"], SimCLRConfig(**SMALL))  # type: ignore[arg-type]
    idx = torch.arange(8)
    a1, a2 = views(idx, 5)
    views(idx, 6)
    b1, b2 = views(idx, 5)
    assert torch.equal(a1, b1) and torch.equal(a2, b2) and not torch.equal(a1, a2)


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 1}, "batch_size"),
        ({"lr": 0.0}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"temperature": 0}, "temperature"),
        ({"proj_dim": 0}, "proj_dim"),
        ({"proj_hidden": 2.5}, "proj_hidden"),
        ({"site_invariance": "yes"}, "site_invariance"),
        ({"augment_preset": "rgb"}, "augment_preset"),
        ({"augment_kwargs": {"seed": 1}}, "augment_kwargs"),
        ({"augment_kwargs": {"rotate_deg": 90}}, "rotate_deg"),
        ({"monitor_every": 0}, "monitor_every"),
        ({"seed": -1}, "seed"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"max_steps": 0}, "max_steps"),
        ({"warmup_steps": -1}, "warmup_steps"),
    ],
)
def test_config_validation(kw: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SimCLRConfig(**kw)


def test_pretrain_argument_errors(chest: dict[str, ImageCollection]) -> None:
    with pytest.raises(ValueError, match="at least 2 images"):
        pretrain_simclr(chest["train"].subset([0]), progress=False)
    with pytest.raises(ValueError, match="monitor"):
        pretrain_simclr(chest["train"], monitor=(chest["test"],), progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown backbone"):
        pretrain_simclr(chest["train"], backbone="vit_huge", progress=False)
