from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import EpisodeSampler
from medmeta_lib.data.splits import split_classes, split_sites
from tests.conftest import make_collection


def _check_episode(ep, col, n, k, q):
    assert ep.support_x.shape == (n * k, 1, col.image_size, col.image_size)
    assert ep.query_x.shape == (n * q, 1, col.image_size, col.image_size)
    assert ep.support_y.tolist() == [i for i in range(n) for _ in range(k)]
    assert ep.query_y.tolist() == [i for i in range(n) for _ in range(q)]
    assert len(set(ep.classes)) == n
    # labels are remapped: support label j is original class classes[j]
    assert col.labels[ep.support_idx].tolist() == [ep.classes[j] for j in ep.support_y.tolist()]
    assert col.labels[ep.query_idx].tolist() == [ep.classes[j] for j in ep.query_y.tolist()]
    # support and query are disjoint, no duplicates
    all_idx = torch.cat([ep.support_idx, ep.query_idx]).tolist()
    assert len(set(all_idx)) == len(all_idx)
    assert torch.equal(ep.support_x, col.images[ep.support_idx])


def test_episode_invariants(toy):
    s = EpisodeSampler(toy, n_way=3, k_shot=2, q_query=3, seed=1)
    for _ in range(20):
        _check_episode(s.sample(), toy, 3, 2, 3)


def test_same_seed_same_episodes_and_fixed_sets(toy):
    a = [EpisodeSampler(toy, 2, 1, 2, seed=7).sample().support_idx.tolist() for _ in range(3)]
    assert a[0] == a[1] == a[2]
    s = EpisodeSampler(toy, 2, 1, 2, seed=7)
    fixed1 = s.fixed(10, seed=3)
    s.sample()
    s.sample()  # advancing the stream must not change the fixed set
    fixed2 = s.fixed(10, seed=3)
    assert [e.query_idx.tolist() for e in fixed1] == [e.query_idx.tolist() for e in fixed2]
    assert len(fixed1) == 10 and len(fixed1[2:5]) == 3
    # another seed gives another stream (one episode of a toy collection may coincide; ten together do not)
    s7, s8 = EpisodeSampler(toy, 2, 1, 2, seed=7), EpisodeSampler(toy, 2, 1, 2, seed=8)
    stream7 = [s7.sample().support_idx.tolist() + s7.sample().query_idx.tolist() for _ in range(10)]
    stream8 = [s8.sample().support_idx.tolist() + s8.sample().query_idx.tolist() for _ in range(10)]
    assert stream7 != stream8
    assert [e.query_idx.tolist() for e in s7.fixed(10, seed=4)] != [e.query_idx.tolist() for e in fixed1]


def test_class_and_site_restrictions(toy):
    s = EpisodeSampler(toy, n_way=2, k_shot=1, q_query=1, classes=[1, 3], sites=[1], seed=0)
    for _ in range(10):
        ep = s.sample()
        assert set(ep.classes) == {1, 3}
        assert set(toy.sites[torch.cat([ep.support_idx, ep.query_idx])].tolist()) == {1}
        assert ep.site == 1


def test_one_site_episodes_come_from_a_single_site(toy):
    s = EpisodeSampler(toy, n_way=2, k_shot=2, q_query=2, one_site=True, seed=0)
    seen = set()
    for _ in range(30):
        ep = s.sample()
        sites = set(toy.sites[torch.cat([ep.support_idx, ep.query_idx])].tolist())
        assert len(sites) == 1 and ep.site in sites
        seen |= sites
    assert seen == {0, 1}


def test_query_sites_put_the_labels_at_some_hospitals_and_the_queries_at_another() -> None:
    col = make_collection(n_classes=6, per_class=24, n_sites=3)
    col.class_modalities = ("x", "x", "x", "y", "y", "y")
    s = EpisodeSampler(col, n_way=3, k_shot=2, q_query=3, sites=[0, 1], query_sites=[2], same_modality=True, seed=0)
    seen_support_sites = set()
    for ep in s.fixed(30, seed=1):
        _check_episode(ep, col, 3, 2, 3)
        assert set(col.sites[ep.support_idx].tolist()) <= {0, 1} and set(col.sites[ep.query_idx].tolist()) == {2}
        assert ep.site is None and len({col.class_modalities[c] for c in ep.classes}) == 1
        seen_support_sites |= set(col.sites[ep.support_idx].tolist())
    assert seen_support_sites == {0, 1}
    kw = {"sites": [0, 1], "query_sites": [2], "same_modality": True, "seed": 0}
    again = EpisodeSampler(col, n_way=3, k_shot=2, q_query=3, **kw).fixed(30, seed=1)  # a fresh sampler, same draws
    assert [e.support_idx.tolist() + e.query_idx.tolist() for e in again] == [
        e.support_idx.tolist() + e.query_idx.tolist() for e in s.fixed(30, seed=1)
    ]
    # a class needs K images at the support sites and Q at the query site, not K+Q at either
    few = make_collection(n_classes=3, per_class=6, n_sites=3)  # 2 images per (class, site)
    ep = EpisodeSampler(few, n_way=3, k_shot=4, q_query=2, sites=[0, 1], query_sites=[2], seed=0).sample()
    assert len(ep.support_idx) == 12 and len(ep.query_idx) == 6
    with pytest.raises(ValueError, match=r"K=4 images at the support sites and Q=3 at the query sites"):
        EpisodeSampler(few, n_way=3, k_shot=4, q_query=3, sites=[0, 1], query_sites=[2])


@pytest.mark.parametrize(
    "kw", [{"sites": [0, 1], "query_sites": [1]}, {"query_sites": [5]}, {"query_sites": [1], "one_site": True}]
)
def test_query_sites_refuse_overlap_unknown_sites_and_one_site(toy, kw) -> None:
    with pytest.raises(ValueError, match="query_sites must be existing site ids"):
        EpisodeSampler(toy, n_way=2, k_shot=1, q_query=1, **({"sites": [0]} | kw))


def test_same_modality():
    c = make_collection(n_classes=6, per_class=6, n_sites=1)
    c.class_modalities = ("x", "x", "x", "y", "y", "y")
    s = EpisodeSampler(c, n_way=2, k_shot=1, q_query=1, same_modality=True, seed=0)
    for _ in range(20):
        assert len({c.class_modalities[k] for k in s.sample().classes}) == 1
    with pytest.raises(ValueError, match="of one modality"):
        EpisodeSampler(c, n_way=4, k_shot=1, q_query=1, same_modality=True)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_way": 5, "k_shot": 1, "q_query": 1}, r"only 4 class\(es\) have at least K\+Q=2"),
        ({"n_way": 2, "k_shot": 8, "q_query": 3}, r"at least K\+Q=11 images"),
        ({"n_way": 2, "k_shot": 3, "q_query": 3, "one_site": True}, r"in any single site"),
        ({"n_way": 0, "k_shot": 1, "q_query": 1}, r"n_way must be a positive integer"),
        ({"n_way": 2, "k_shot": 1, "q_query": 1, "classes": [9]}, r"classes \[9\] do not exist"),
        ({"n_way": 2, "k_shot": 1, "q_query": 1, "sites": [4]}, r"sites \[4\] do not exist"),
    ],
)
def test_impossible_requests(toy, kw, match):
    with pytest.raises(ValueError, match=match):
        EpisodeSampler(toy, **kw)


def test_empty_site_is_an_error():
    c = make_collection(n_sites=2)
    sub = c.subset(torch.nonzero(c.sites == 0).flatten())
    with pytest.raises(ValueError, match="site 's1' has no images"):
        EpisodeSampler(sub, 2, 1, 1, sites=[1], one_site=True)


def test_split_classes_disjoint_and_stratified():
    c = make_collection(n_classes=12, per_class=2, n_sites=1)
    c.class_modalities = tuple("abc"[i // 4] for i in range(12))
    sp = split_classes(c, seed=0)
    sets = [set(sp.train), set(sp.val), set(sp.test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert sets[0] | sets[1] | sets[2] == set(range(12))
    for part in (sp.test, sp.val):
        assert {c.class_modalities[i] for i in part} == {"a", "b", "c"}
    assert split_classes(c, seed=0) == sp and split_classes(c, seed=1) != sp
    with pytest.raises(ValueError, match="too few"):
        split_classes(make_collection(n_classes=2, per_class=2))


def test_split_sites(toy):
    assert split_sites(toy, ["s1"]) == ((0,), (1,))
    with pytest.raises(ValueError, match="unknown site"):
        split_sites(toy, ["nowhere"])
    with pytest.raises(ValueError, match="at least one held-out and one training"):
        split_sites(toy, [0, 1])


@settings(max_examples=40, deadline=None)
@given(
    n_classes=st.integers(2, 6),
    per_class=st.integers(1, 8),
    n=st.integers(1, 7),
    k=st.integers(1, 4),
    q=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_sampler_property(n_classes, per_class, n, k, q, seed):
    labels = torch.arange(n_classes * per_class) % n_classes
    col = ImageCollection(
        images=torch.rand(len(labels), 1, 4, 4), labels=labels, class_names=[str(i) for i in range(n_classes)]
    )
    possible = n <= n_classes and k + q <= per_class
    if not possible:
        with pytest.raises(ValueError, match=rf"cannot draw {n}-way {k}-shot {q}-query episodes"):
            EpisodeSampler(col, n, k, q, seed=seed)
        return
    ep = EpisodeSampler(col, n, k, q, seed=seed).sample()
    _check_episode(ep, col, n, k, q)
    assert np.all(np.isin(ep.classes, np.arange(n_classes)))


def test_uneven_class_pools_never_draw_padding():
    # classes of very different sizes exercise the padded draw (a small class next to a large one)
    sizes = [4, 50, 7, 23, 5]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])
    sites = torch.arange(len(labels)) % 3
    col = ImageCollection(
        images=torch.rand(len(labels), 1, 4, 4), labels=labels, class_names=[str(c) for c in range(5)], sites=sites
    )
    s = EpisodeSampler(col, n_way=4, k_shot=2, q_query=2, seed=0)
    seen = set()
    for _ in range(200):
        ep = s.sample()
        _check_episode(ep, col, 4, 2, 2)
        assert torch.equal(ep.support_sites, col.sites[ep.support_idx])
        assert torch.equal(ep.query_sites, col.sites[ep.query_idx])
        seen.update(torch.cat([ep.support_idx, ep.query_idx]).tolist())
    assert len(seen) > 0.9 * len(labels)  # every image of every class can be drawn, the large classes too
