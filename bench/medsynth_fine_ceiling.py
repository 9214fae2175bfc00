"""How separable are MedSynth's fine classes at all? A supervised ceiling and a transfer reference (issue 13).

Two supervised Conv4 classifiers (GroupNorm, so batch-independent), trained with cross-entropy on the 28 px
train split of the fine taxonomy, scored on the *same* 600 fixed 5-way 5-shot test episodes as
``bench/medsynth_results.py --taxonomy fine --protocol classes`` (new classes within one modality):

* **ceiling**: trained on every class, the test classes included (it has seen 240 images of each test class,
  which no few-shot learner may). Scored two ways: its own logits restricted to the episode's five classes,
  and nearest centroid on its features. If this stays well under a goal, the data, not the learners, is the
  limit;
* **transfer**: trained on the meta-train classes only, then nearest centroid on centred, L2-normalised
  features of the support set (SimpleShot's rule): the plain pretrain-then-compare reference a meta-learner
  should match.

Run (the figures in BENCHMARKS.md section 9 came from this command)::

    OMP_NUM_THREADS=1 .venv/bin/python bench/medsynth_fine_ceiling.py
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.episodes import EpisodeSet
from medmeta_lib.data.sources import load_collection
from medmeta_lib.evaluation.intervals import mean_ci
from medmeta_lib.models import create_backbone
from medmeta_lib.studies.experiment_split import make_split


def train_classifier(
    col: ImageCollection, classes: Sequence[int], a: argparse.Namespace
) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(a.seed)
    keep = torch.isin(col.labels, torch.tensor(list(classes)))
    x, y = col.images[keep], col.labels[keep]
    remap = torch.full((col.num_classes,), -1, dtype=torch.long)
    remap[torch.tensor(list(classes))] = torch.arange(len(classes))
    y = remap[y]
    net = create_backbone("conv4", hidden=a.hidden, norm="group")
    head = nn.Linear(net.out_features, len(classes))
    opt = torch.optim.Adam([*net.parameters(), *head.parameters()], lr=1e-3)
    for epoch in range(a.epochs):
        perm, correct = torch.randperm(len(x)), 0
        for i in range(0, len(x), 128):
            b = perm[i : i + 128]
            logits = head(net(x[b]))
            loss = F.cross_entropy(logits, y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            correct += int((logits.argmax(1) == y[b]).sum())
        print(f"  epoch {epoch + 1}/{a.epochs}: train accuracy {correct / len(x):.3f}", flush=True)
    return net.eval(), head.eval()


@torch.no_grad()
def score(net: nn.Module, head: nn.Module | None, classes: Sequence[int], episodes: EpisodeSet) -> dict[str, float]:
    col_of = {c: j for j, c in enumerate(classes)}
    nc, own = [], []
    for ep in episodes:
        fs, fq = net(ep.support_x), net(ep.query_x)
        mu = fs.mean(0)
        protos = torch.stack([fs[ep.support_y == j].mean(0) for j in range(ep.n_way)])
        sim = F.normalize(fq - mu, dim=1) @ F.normalize(protos - mu, dim=1).T
        nc.append(float((sim.argmax(1) == ep.query_y).float().mean()))
        if head is not None:
            logits = head(fq)[:, [col_of[c] for c in ep.classes]]
            own.append(float((logits.argmax(1) == ep.query_y).float().mean()))
    out = dict(zip(("nc_acc", "nc_ci95"), mean_ci(nc), strict=True))
    if own:
        out |= dict(zip(("logits_acc", "logits_ci95"), mean_ci(own), strict=True))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-per-class-site", type=int, default=60)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--episodes", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    kw = {"n_per_class_site": a.n_per_class_site, "taxonomy": "fine"}
    cols = {s: load_collection("synthetic", split=s, seed=a.seed, **kw) for s in ("train", "val", "test")}
    split = make_split(cols["train"], cols["test"], val=cols["val"], split="classes", n_way=5, k_shot=5, q_query=15)
    episodes = split.test.fixed(a.episodes, seed=a.seed + 12345)  # the episodes of medsynth_results.py
    print(split.description, flush=True)
    everything = list(range(cols["train"].num_classes))
    for name, classes in (
        ("ceiling (saw the test classes)", everything),
        ("transfer (meta-train classes)", split.train.classes),
    ):
        t0 = time.process_time()
        net, head = train_classifier(cols["train"], classes, a)
        res = score(net, head if classes is everything else None, classes, episodes)
        cpu = (time.process_time() - t0) / 60
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()) + f"  ({cpu:.1f} CPU min)", flush=True)


if __name__ == "__main__":
    main()
