"""SimCLR throughput (images/s) at 28 and 64 px: augmentation, model step and the full pretrain loop.

Prints one row per (image size, backbone): the time of two ViewAugment views of a batch, of one
forward + backward + AdamW step on the 2 × batch views in the default layout (``plain``) and in the
channels-last / in-place-ReLU training layout that ``pretrain_simclr`` uses (``step``, which the model
images/s column reads), and the end-to-end images/s of
``pretrain_simclr`` (everything included: batching, views, step, scheduler; no checkpoint).
The machine's load average is printed too: on a shared 2-core machine the figures move with it.

    .venv/bin/python bench/bench_ssl.py                      # 28 and 64 px, conv4, batch 128
    .venv/bin/python bench/bench_ssl.py --sizes 28 --batch 256 --threads 1
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch

from medmeta_lib.data.augment import ViewAugment
from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.data.sources import load_collection
from medmeta_lib.models.backbones import create_backbone
from medmeta_lib.models.training_layout import training_layout
from medmeta_lib.ssl.ntxent import nt_xent_loss
from medmeta_lib.ssl.simclr import pretrain_simclr, projection_head
from medmeta_lib.ssl.simclr_config import SimCLRConfig


def _best(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (lazy imports, allocator)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def time_views(x: torch.Tensor, size: int, repeats: int) -> float:
    aug = ViewAugment(preset="generic", image_size=size, seed=0)
    return _best(lambda: aug.pair(x), repeats)


def time_step(x: torch.Tensor, size: int, name: str, norm: str, repeats: int, *, layout: bool) -> float:
    torch.manual_seed(0)
    enc = create_backbone(name, in_channels=x.shape[1], norm=norm)
    net = torch.nn.Sequential(enc, projection_head(int(enc.out_features), 256, 128))  # type: ignore[arg-type]
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    views = torch.cat(ViewAugment(preset="generic", image_size=size, seed=0).pair(x))
    b = len(x)

    def step() -> None:
        z = net(prepare(views))
        loss = nt_xent_loss(z[:b], z[b:])
        opt.zero_grad()
        loss.backward()
        opt.step()

    with training_layout(net, channels_last=layout, inplace_relu=layout) as prepare:
        return _best(step, repeats)


def time_pretrain(col: ImageCollection, name: str, norm: str, batch: int, steps: int) -> float:
    def run(n: int) -> None:
        cfg = SimCLRConfig(epochs=1, batch_size=batch, augment_preset="generic", max_steps=n)
        pretrain_simclr(col, backbone=name, backbone_kwargs={"norm": norm}, config=cfg, progress=False)

    run(1)  # warm-up
    t = time.perf_counter()
    run(steps)
    return steps * batch / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[28, 64])
    p.add_argument("--backbones", nargs="+", default=["conv4"])
    p.add_argument("--norm", default="group")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, "
        f"batch {a.batch} images (= {2 * a.batch} views), norm {a.norm}"
    )
    print(
        f"{'size':>4} {'backbone':>9} {'views ms':>9} {'plain ms':>9} {'step ms':>8} {'model img/s':>12} "
        f"{'pretrain img/s':>15}"
    )
    for size in a.sizes:
        # MedSynth: 30 classes x 4 sites x n images; enough for 1 + repeats full batches
        col = load_collection("synthetic", image_size=size, n_per_class_site=(a.repeats + 1) * a.batch // 120 + 1)
        x = col.images[: a.batch]
        t_views = time_views(x, size, a.repeats)
        for name in a.backbones:
            t_plain = time_step(x, size, name, a.norm, a.repeats, layout=False)
            t_step = time_step(x, size, name, a.norm, a.repeats, layout=True)
            e2e = time_pretrain(col, name, a.norm, a.batch, a.repeats + 1)
            print(
                f"{size:>4} {name:>9} {1000 * t_views:>9.0f} {1000 * t_plain:>9.0f} {1000 * t_step:>8.0f} "
                f"{a.batch / t_step:>12.0f} {e2e:>15.0f}",
                flush=True,
            )
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
