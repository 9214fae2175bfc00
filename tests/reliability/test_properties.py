"""Property-based tests (hypothesis): ImageCollection validation and the episode sampler.

Each test compares the library against an independent oracle written here from the documented
rules: a collection is accepted exactly when every documented condition holds (and otherwise the
ValueError names a field that is really wrong); a sampler is constructible exactly when some site
pool holds N classes (of one modality, if asked) with K+Q images each, and every episode it draws
obeys the N-way K-shot Q-query contract.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from medmeta_lib import EpisodeSampler, ImageCollection

# database=None: no .hypothesis/ folder is written into the checkout
SETTINGS = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------- ImageCollection
DEFECTS = (
    "images-3d", "images-5d", "images-float64", "images-uint8", "images-empty", "images-2-channels",
    "images-nan", "images-inf", "images-range", "labels-longer", "labels-shorter", "labels-two-columns",
    "labels-float", "labels-negative", "labels-too-large", "no-class-names", "extra-class", "sites-negative",
    "sites-too-large", "sites-wrong-length",
)  # fmt: skip


@st.composite
def collection_inputs(draw: st.DrawFn) -> dict:
    """A valid collection's fields (random shape, class and site counts) with zero to two random defects."""
    k = draw(st.integers(1, 4))
    n = draw(st.integers(k, 8))
    c = draw(st.sampled_from([1, 3]))
    h, w = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    images = torch.rand(n, c, h, w, generator=g)
    labels = torch.tensor(
        draw(st.permutations(list(range(k)) + draw(st.lists(st.integers(0, k - 1), min_size=n - k, max_size=n - k))))
    )
    n_sites = draw(st.integers(1, 3))
    sites = torch.tensor(draw(st.lists(st.integers(0, n_sites - 1), min_size=n, max_size=n)))
    kw = {
        "images": images,
        "labels": labels[:, None] if draw(st.booleans()) else labels,  # (N, 1) is accepted like (N,)
        "class_names": tuple(f"c{i}" for i in range(k)),
        "sites": sites if draw(st.booleans()) else None,
        "site_names": tuple(f"s{i}" for i in range(n_sites)) if draw(st.booleans()) else None,
        "source": "prop",
        "allow_empty_classes": draw(st.booleans()),
    }
    if kw["sites"] is None:
        kw["site_names"] = None
    for defect in draw(st.lists(st.sampled_from(DEFECTS), max_size=2)):
        x, y = kw["images"], kw["labels"]
        flat_pick = draw(st.integers(0, max(x.numel() - 1, 0)))
        if defect == "images-3d":
            kw["images"] = x[:, 0]
        elif defect == "images-5d":
            kw["images"] = x[:, None]
        elif defect == "images-float64":
            kw["images"] = x.double()
        elif defect == "images-uint8":
            kw["images"] = (x * 255).to(torch.uint8)
        elif defect == "images-empty":
            kw["images"] = x[:0]
        elif defect == "images-2-channels" and x.ndim == 4:
            kw["images"] = torch.cat([x[:, :1], x[:, :1]], 1)
        elif defect in ("images-nan", "images-inf", "images-range") and x.numel() and x.is_floating_point():
            x = x.clone()
            bad_value = draw(st.sampled_from([1.0001, 2.0, 255.0, -0.01])) if defect == "images-range" else None
            x.view(-1)[flat_pick] = {"images-nan": float("nan"), "images-inf": -float("inf")}.get(defect, bad_value)
            kw["images"] = x
        elif defect == "labels-longer":
            kw["labels"] = torch.cat([y, y[:1]])
        elif defect == "labels-shorter":
            kw["labels"] = y[1:]
        elif defect == "labels-two-columns":
            kw["labels"] = torch.stack([y.reshape(-1), y.reshape(-1)], 1)
        elif defect == "labels-float":
            kw["labels"] = y.float()
        elif defect in ("labels-negative", "labels-too-large") and y.numel():
            y = y.clone()
            y.view(-1)[draw(st.integers(0, y.numel() - 1))] = (
                -1 if defect == "labels-negative" else len(kw["class_names"])
            )
            kw["labels"] = y
        elif defect == "no-class-names":
            kw["class_names"] = ()
        elif defect == "extra-class":
            kw["class_names"] = (*kw["class_names"], "unseen")
        elif defect in ("sites-negative", "sites-too-large", "sites-wrong-length"):
            s = kw["sites"] if kw["sites"] is not None else torch.zeros(n, dtype=torch.long)
            s = s.clone()
            if defect == "sites-wrong-length":
                s = s[1:]
            else:
                s[draw(st.integers(0, n - 1))] = -1 if defect == "sites-negative" else n_sites
                kw["site_names"] = tuple(f"s{i}" for i in range(n_sites))
            kw["sites"] = s
    return kw


def _violations(kw: dict) -> set[str]:
    """Independent statement of the documented rules: the message tokens that describe what is wrong."""
    x: torch.Tensor = kw["images"]
    if x.ndim != 4 or x.dtype != torch.float32 or x.shape[0] == 0 or x.shape[1] not in (1, 3):
        return {"'images'"}
    bad = set()
    if not torch.isfinite(x).all() or (x.numel() and (x.min() < 0 or x.max() > 1)):
        bad.add("'images'")
    n, y, k = x.shape[0], kw["labels"], len(kw["class_names"])
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != n or y.dtype.is_floating_point:
        return bad | {"'labels'"}
    if k == 0:
        return bad | {"'class_names'"}
    if y.min() < 0 or y.max() >= k:
        return bad | {"'labels'"}
    if not kw["allow_empty_classes"] and len(set(y.tolist())) < k:
        bad.add("have no images")
    s = kw["sites"]
    if s is not None and s.shape != (n,):
        return bad | {"'sites'"}
    if s is not None:
        n_names = len(kw["site_names"]) if kw["site_names"] is not None else int(s.max()) + 1
        if s.min() < 0 or s.max() >= n_names:
            bad.add("'sites'")
    return bad


@SETTINGS
@given(kw=collection_inputs())
def test_collection_accepts_exactly_the_valid_inputs(kw: dict) -> None:
    expected = _violations(kw)
    event("rejected" if expected else "accepted")
    if expected:
        with pytest.raises(ValueError) as ei:
            ImageCollection(**kw)
        msg = str(ei.value)
        assert msg.startswith("prop: "), msg  # names the source
        assert any(tok in msg for tok in expected), f"{msg!r} names none of {expected}"
        return
    col = ImageCollection(**kw)
    n = kw["images"].shape[0]
    assert len(col) == n and col.labels.shape == (n,) and col.labels.dtype == torch.long
    assert col.sites is not None and col.sites.shape == (n,) and int(col.sites.min()) >= 0
    assert int(col.class_counts().sum()) == n and col.site_class_counts().sum() == n
    assert col.num_sites == len(col.site_names or ())
    if not kw["allow_empty_classes"]:
        assert bool((col.class_counts() > 0).all())
    summary = col.summary()
    assert summary["images"] == n and sum(summary["class_counts"].values()) == n
    idx = torch.arange(n).flip(0)
    sub = col.subset(idx)
    assert torch.equal(sub.images, col.images[idx]) and torch.equal(sub.labels, col.labels[idx])
    assert sub.fingerprint() != col.fingerprint() or torch.equal(sub.images, col.images)


# ---------------------------------------------------------------- EpisodeSampler
@st.composite
def sampler_inputs(draw: st.DrawFn) -> dict:
    n_classes = draw(st.integers(1, 6))
    n_sites = draw(st.integers(1, 3))
    counts = draw(
        st.lists(
            st.lists(st.integers(0, 6), min_size=n_sites, max_size=n_sites), min_size=n_classes, max_size=n_classes
        )
    )
    if sum(map(sum, counts)) == 0:
        counts[0][0] = 1
    labels, sites = [], []
    for c, per_site in enumerate(counts):
        for s, m in enumerate(per_site):
            labels += [c] * m
            sites += [s] * m
    perm = np.random.default_rng(draw(st.integers(0, 1000))).permutation(len(labels))
    labels_t = torch.tensor(labels)[perm]
    sites_t = torch.tensor(sites)[perm]
    mods = draw(st.lists(st.sampled_from(["xray", "fundus"]), min_size=n_classes, max_size=n_classes))
    col = ImageCollection(
        # image i holds the value i / N everywhere: episodes can be checked against their indices
        images=(torch.arange(len(labels_t), dtype=torch.float32) / len(labels_t)).view(-1, 1, 1, 1).expand(-1, 1, 3, 3),
        labels=labels_t,
        class_names=tuple(f"c{i}" for i in range(n_classes)),
        sites=sites_t,
        site_names=tuple(f"s{i}" for i in range(n_sites)),
        class_modalities=tuple(mods) if draw(st.booleans()) else None,
        allow_empty_classes=True,
        source="prop",
    )
    classes = draw(st.none() | st.sets(st.integers(0, n_classes - 1), min_size=1).map(sorted))
    allowed_sites = draw(st.none() | st.sets(st.integers(0, n_sites - 1), min_size=1).map(sorted))
    return {
        "collection": col,
        "n_way": draw(st.integers(1, 4)),
        "k_shot": draw(st.integers(1, 3)),
        "q_query": draw(st.integers(1, 3)),
        "classes": classes,
        "sites": allowed_sites,
        "one_site": draw(st.booleans()),
        "same_modality": draw(st.booleans()),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def _possible(kw: dict) -> bool:
    """Oracle: can an episode be drawn? (Computed from counts, not from the sampler's code.)"""
    col: ImageCollection = kw["collection"]
    assert col.sites is not None
    labels, sites = col.labels.numpy(), col.sites.numpy()
    classes = kw["classes"] if kw["classes"] is not None else range(col.num_classes)
    allowed = kw["sites"] if kw["sites"] is not None else range(col.num_sites)
    pools = [[s] for s in allowed] if kw["one_site"] else [list(allowed)]
    if any(not np.isin(sites, pool).any() for pool in pools):
        return False  # a site without any image is an error, not an empty pool
    need = kw["k_shot"] + kw["q_query"]
    for pool in pools:
        ok = [c for c in classes if int(((labels == c) & np.isin(sites, pool)).sum()) >= need]
        if kw["same_modality"] and col.class_modalities is not None:
            groups: dict[str, int] = {}
            for c in ok:
                groups[col.class_modalities[c]] = groups.get(col.class_modalities[c], 0) + 1
            if any(v >= kw["n_way"] for v in groups.values()):
                return True
        elif len(ok) >= kw["n_way"]:
            return True
    return False


@SETTINGS
@given(kw=sampler_inputs())
def test_sampler_draws_exactly_when_possible_and_episodes_keep_the_contract(kw: dict) -> None:
    col: ImageCollection = kw["collection"]
    possible = _possible(kw)
    event("possible" if possible else "impossible")
    if not possible:
        with pytest.raises(ValueError, match=r"^prop: "):
            EpisodeSampler(**kw)
        return
    sampler = EpisodeSampler(**kw)
    n, k, q = kw["n_way"], kw["k_shot"], kw["q_query"]
    classes = set(kw["classes"] if kw["classes"] is not None else range(col.num_classes))
    sites = set(kw["sites"] if kw["sites"] is not None else range(col.num_sites))
    assert col.sites is not None
    drawn = []
    for _ in range(5):
        ep = sampler.sample()
        drawn.append((ep.support_idx.tolist(), ep.query_idx.tolist(), ep.classes))
        assert ep.support_x.shape == (n * k, 1, 3, 3) and ep.query_x.shape == (n * q, 1, 3, 3)
        assert ep.n_way == n and ep.k_shot == k and ep.q_query == q
        assert ep.support_y.tolist() == [j for j in range(n) for _ in range(k)]  # class-major
        assert ep.query_y.tolist() == [j for j in range(n) for _ in range(q)]
        assert len(set(ep.classes)) == n and set(ep.classes) <= classes
        idx = torch.cat([ep.support_idx, ep.query_idx])
        assert len(set(idx.tolist())) == n * (k + q)  # support and query disjoint, no repeats
        # every image really is the indexed one, with the right (remapped) label and site
        assert torch.equal(torch.cat([ep.support_x, ep.query_x]), col.images[idx])
        originals = torch.tensor(ep.classes)
        assert torch.equal(col.labels[ep.support_idx], originals[ep.support_y])
        assert torch.equal(col.labels[ep.query_idx], originals[ep.query_y])
        assert set(col.sites[idx].tolist()) <= sites
        assert torch.equal(torch.cat([ep.support_sites, ep.query_sites]), col.sites[idx])
        if kw["one_site"]:
            assert len(set(col.sites[idx].tolist())) == 1 and ep.site == int(col.sites[idx[0]])
        if kw["same_modality"] and col.class_modalities is not None:
            assert len({col.class_modalities[c] for c in ep.classes}) == 1
    # the same seed gives the same stream; fixed sets do not depend on the stream position
    again = EpisodeSampler(**kw)
    assert [(e.support_idx.tolist(), e.query_idx.tolist(), e.classes) for e in (again.sample() for _ in range(5))] == (
        drawn
    )
    fixed_a = [(e.support_idx.tolist(), e.classes) for e in sampler.fixed(3, seed=7)]
    fixed_b = [(e.support_idx.tolist(), e.classes) for e in EpisodeSampler(**kw).fixed(3, seed=7)]
    assert fixed_a == fixed_b
