from __future__ import annotations

import numpy as np
import pytest
import torch

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.sources import load_collection
from medmeta_lib.data.synth_fields import uniforms
from medmeta_lib.data.synthetic import META_KEY, MedSynth


@pytest.fixture(scope="module")
def small() -> ImageCollection:
    # every modality, class and site, tiny images: the shared fixture of most tests
    return MedSynth().generate(image_size=16, split="train", seed=3, n_per_class_site=2)


def _corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a, b = a.flatten(1) - a.flatten(1).mean(1, keepdim=True), b.flatten(1) - b.flatten(1).mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-8)


def test_layout_classes_sites_and_counts(small: ImageCollection) -> None:
    synth = MedSynth()
    assert len(synth.MODALITIES) >= 4 and small.modalities == synth.MODALITIES
    assert small.num_classes >= 24 and small.num_sites >= 4
    assert small.images.shape == (small.num_classes * small.num_sites * 2, 1, 16, 16)
    assert small.images.dtype == torch.float32
    assert 0.0 <= float(small.images.min()) and float(small.images.max()) <= 1.0
    assert (small.site_class_counts() == 2).all()
    assert small.class_names[1] == "chest_xray/pneumonia" and small.site_names[0] == "hospital_A"
    assert small.class_modalities is not None
    for name, mod in zip(small.class_names, small.class_modalities):
        assert name.startswith(mod + "/")
    assert len(set(small.class_names)) == small.num_classes
    assert small.meta[META_KEY].shape == (len(small),) and len(set(small.meta[META_KEY].tolist())) == len(small)
    # images are not blank: every image has structure
    assert (small.images.flatten(1).std(1) > 0.02).all()


def test_deterministic_and_seedable() -> None:
    synth = MedSynth(modalities=["chest_xray", "histology"])
    a = synth.generate(image_size=20, seed=7, n_per_class_site=2)
    b = MedSynth(modalities=["chest_xray", "histology"]).generate(image_size=20, seed=7, n_per_class_site=2)
    assert torch.equal(a.images, b.images) and a.fingerprint() == b.fingerprint()
    c = synth.generate(image_size=20, seed=8, n_per_class_site=2)
    assert not torch.equal(a.images, c.images)
    via = load_collection(
        "synthetic", image_size=20, seed=7, n_per_class_site=2, modalities=["chest_xray", "histology"]
    )
    assert torch.equal(via.images, a.images) and via.num_classes == 12


def test_patients_do_not_depend_on_the_other_modalities() -> None:
    full = MedSynth().generate(image_size=16, seed=1, n_per_class_site=1)
    only = MedSynth(modalities=["fundus"]).generate(image_size=16, seed=1, n_per_class_site=1)
    assert torch.equal(full.images[np.isin(full.labels.numpy(), full.classes_of_modality("fundus"))], only.images)


def test_splits_hold_different_patients_with_the_same_classes_and_sites() -> None:
    synth = MedSynth(modalities=["dermoscopy"])
    tr, va, te = (synth.generate(image_size=16, split=s, seed=0, n_per_class_site=3) for s in ("train", "val", "test"))
    assert tr.class_names == va.class_names == te.class_names and tr.site_names == te.site_names
    keys = [set(c.meta[META_KEY].tolist()) for c in (tr, va, te)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    d = torch.cdist(tr.images.flatten(1), te.images.flatten(1))
    assert float(d.min()) > 0.1  # no test image repeats a train image


@pytest.mark.parametrize("size", [28, 64])
def test_usual_sizes(size: int) -> None:
    col = MedSynth(modalities=["chest_xray"], n_sites=2).generate(image_size=size, n_per_class_site=1)
    assert col.images.shape == (12, 1, size, size) and col.image_size == size


def test_restyle_to_own_site_reproduces_exactly(small: ImageCollection) -> None:
    synth = MedSynth()
    assert torch.equal(synth.restyle(small, range(len(small)), small.sites), small.images)
    # other batch compositions and a subset give the same pixels
    idx = [5, 77, 140, 3]
    assert torch.equal(synth.restyle(small, idx, small.sites[idx]), small.images[idx])
    sub = small.subset([9, 200, 31])
    for i in range(len(sub)):
        assert torch.equal(synth.restyle(sub, [i], int(sub.sites[i])), sub.images[i : i + 1])


def test_restyle_is_exact_whatever_the_batch_and_thread_count() -> None:
    synth = MedSynth(modalities=["chest_xray", "brain_mri"], n_sites=2)
    col = synth.generate(image_size=28, seed=4, n_per_class_site=3)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            for i in (0, 17, 40, len(col) - 1):
                assert torch.equal(synth.restyle(col, [i], int(col.sites[i])), col.images[i : i + 1])
    finally:
        torch.set_num_threads(before)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("size", [28, 30, 45, 64])
def test_restyle_is_exact_when_generation_spans_several_chunks(size: int) -> None:
    # 70 images per (finding, site): generation renders each finding in several padded chunks, restyle
    # re-renders single images and odd-sized subsets, with one thread and with two; the pixels must
    # depend on neither (even and odd sides take different padding rules)
    synth = MedSynth(modalities=["fundus", "dermoscopy"], n_sites=2)
    col = synth.generate(image_size=size, seed=11, n_per_class_site=70)
    rng = np.random.default_rng(size)
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            # dropping the first images shifts every later image to another place in its batch
            subsets = [[len(col) - 1], rng.choice(len(col), 37, replace=False).tolist(), list(range(5, len(col)))]
            for idx in subsets:
                assert torch.equal(synth.restyle(col, idx, col.sites[idx]), col.images[idx])
    finally:
        torch.set_num_threads(before)


def test_restyle_keeps_anatomy_and_changes_acquisition() -> None:
    synth = MedSynth(n_sites=4)
    col = synth.generate(image_size=28, seed=11, n_per_class_site=4)

    def centre(x: torch.Tensor) -> torch.Tensor:
        # anatomy lives in the centre; collimation, apertures and burnt-in markers sit in the outer band
        x = x[..., 4:24, 4:24].flatten(1)
        x = x - x.mean(1, keepdim=True)
        return x / (x.norm(dim=1, keepdim=True) + 1e-8)

    wins, gaps = [], []
    for source in range(4):
        idx = torch.nonzero(col.sites == source).flatten()
        orig = centre(col.images[idx])
        for target in range(4):
            if target == source:
                continue
            moved = synth.restyle(col, idx, target)
            assert moved.shape == (len(idx), 1, 28, 28) and moved.dtype == torch.float32
            assert 0.0 <= float(moved.min()) and float(moved.max()) <= 1.0
            assert float((moved - col.images[idx]).abs().mean()) > 0.02  # a new site is a visible change
            same = (centre(moved) * orig).sum(1)  # correlation with the same patient at the target site
            at_target = torch.nonzero(col.sites == target).flatten()
            other = orig @ centre(col.images[at_target]).T  # ... and with every patient imaged there
            same_class = col.labels[idx][:, None] == col.labels[at_target][None, :]
            wins.append(((same[:, None] > other) & same_class).sum(1) / same_class.sum(1))
            gaps.append(same - (other * same_class).sum(1) / same_class.sum(1))
    # the same patient at another site beats (nearly) every other patient of its class imaged there
    assert float(torch.cat(wins).mean()) > 0.85 and float(torch.cat(gaps).mean()) > 0.05


def test_sites_differ_in_intensity_statistics() -> None:
    col = MedSynth(modalities=["chest_xray"]).generate(image_size=28, seed=2, n_per_class_site=10)
    means = torch.stack([col.images[col.sites == s].mean() for s in range(col.num_sites)])
    sds = torch.stack([col.images[col.sites == s].flatten(1).std(1).mean() for s in range(col.num_sites)])
    assert float(means.max() - means.min()) > 0.05 and float(sds.max() - sds.min()) > 0.03


def test_hash_uniforms_look_uniform_and_independent() -> None:
    u = uniforms(torch.arange(4000), stream=5, n=8)
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005
    c = torch.corrcoef(u.T)
    assert float((c - torch.eye(8)).abs().max()) < 0.06
    v = uniforms(torch.arange(4000), stream=6, n=1)
    assert abs(float(torch.corrcoef(torch.stack([u[:, 0], v[:, 0]]))[0, 1])) < 0.06


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"modalities": ["xray"]}, "modalities"),
        ({"modalities": []}, "modalities"),
        ({"modalities": ["fundus", "fundus"]}, "modalities"),
        ({"n_sites": 0}, "n_sites"),
        ({"n_sites": 27}, "n_sites"),
        ({"n_sites": True}, "n_sites"),
    ],
)
def test_bad_init_arguments(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MedSynth(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"image_size": 4}, "image_size"),
        ({"image_size": "28"}, "image_size"),
        ({"split": "dev"}, "split"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"n_per_class_site": 0}, "n_per_class_site"),
    ],
)
def test_bad_generate_arguments(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        MedSynth(modalities=["fundus"]).generate(**kwargs)


def test_bad_restyle_arguments(small: ImageCollection) -> None:
    synth = MedSynth()
    plain = ImageCollection(images=torch.rand(2, 1, 8, 8), labels=torch.tensor([0, 1]), class_names=("a", "b"))
    with pytest.raises(ValueError, match="medsynth_key"):
        synth.restyle(plain, [0], [0])
    with pytest.raises(ValueError, match="indices"):
        synth.restyle(small, [len(small)], [0])
    with pytest.raises(ValueError, match="sites"):
        synth.restyle(small, [0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="sites"):
        synth.restyle(small, [0], [4])
