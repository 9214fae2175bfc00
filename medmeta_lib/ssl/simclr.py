"""SimCLR contrastive pretraining (Chen et al. 2020) with exact resume, monitors and a site-invariance option.

Each step takes a batch of *unlabelled* images, makes two augmented views of every image, encodes
them with the backbone and a projection MLP, and minimises NT-Xent (``ntxent.py``): each view must
recognise its partner among the other ``2B - 2`` views of the batch. The backbone's features (before
the projection head) are what downstream learners reuse.

Site invariance. With ``SimCLRConfig(site_invariance=True)`` the second view differs from the first
in acquisition, not only in augmentation: for a MedSynth collection the generator re-acquires the
same patient at another, randomly chosen site (``MedSynth.restyle``); for any other collection it
gets ``ViewAugment``'s simulated scanner shift (bias field, contrast curve, blur/sharpen, offset).
The encoder is then rewarded for ignoring what distinguishes hospitals. The MedSynth re-rendering
reads each image's class (the renderer draws the patient from it), so that variant uses labels;
``site_views="scanner_shift"`` is the label-free variant on MedSynth too.

Determinism. Everything random is derived from ``(seed, epoch)`` (the image order) and ``(seed,
step)`` (the views, the restyle sites), never from a running generator, so a run resumed from any
checkpoint draws exactly the batches and views of an uninterrupted one; together with the saved
weights, AdamW moments and scheduler position the loss curve continues bit-for-bit (on the same
device and thread count). The global RNG states are saved and restored as well, for backbones that
draw from them.

Checkpoint (``out``, one safetensors file written atomically by ``save_checkpoint``): tensors
``encoder.*`` (backbone weights), ``head.*`` (projection MLP), ``optim.*`` (AdamW state) and ``rng.*``;
metadata ``kind="encoder"``, ``encoder_prefix="encoder."``, ``backbone`` (the spec), ``trainer="simclr"``,
``config``, ``step``, ``epoch``, the scheduler state, the RNG metadata, ``data`` (source, split,
size, ``fingerprint``) and the ``history``.

Distributed (``torchrun``, see ``medmeta_lib.training.distributed``): encoder and head run under DDP, each of
the ``W`` ranks encodes ``batch_size / W`` images of the same global batch (its views seeded by
``(seed, step, rank)``), NT-Xent is computed over the projections all-gathered from every rank (all
``2B - 2`` negatives), and rank 0 alone writes the checkpoint and the progress bar.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medmeta_lib.config import seed_everything, select_device
from medmeta_lib.data.collection import ImageCollection
from medmeta_lib.models.backbones import create_backbone, resolve_backbone_kwargs
from medmeta_lib.models.training_layout import training_layout
from medmeta_lib.ssl.features import extract_features, with_population_stats
from medmeta_lib.ssl.ntxent import nt_xent_loss
from medmeta_lib.ssl.probe import knn_accuracy, linear_probe
from medmeta_lib.ssl.simclr_config import SimCLRConfig
from medmeta_lib.ssl.views import ContrastiveViews
from medmeta_lib.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from medmeta_lib.training.collectives import gather_views, wrap_ddp
from medmeta_lib.training.distributed import (
    check_same_on_all_ranks,
    check_world_divides,
    get_rank,
    get_world_size,
    is_main_process,
    write_on_main,
)
from medmeta_lib.training.train_state import (
    load_optimizer_state,
    load_scheduler_state,
    optimizer_state_to_tensors,
    restore_rng_state,
    rng_state_to_tensors,
    scheduler_state_to_json,
)

__all__ = ["PretrainResult", "pretrain_simclr", "projection_head"]

ENCODER_PREFIX = "encoder."
HEAD_PREFIX = "head."
#: config fields that may change when resuming (they do not change what a step computes)
_RESUMABLE_CHANGES = frozenset({"epochs", "max_steps", "monitor_every", "checkpoint_every"})


@dataclass
class PretrainResult:
    """What :func:`pretrain_simclr` returns.

    Attributes:
        encoder: the pretrained backbone (train mode, on the training device).
        history: one row per step ``{"step", "epoch", "loss", "lr"}`` and one per monitor
            evaluation ``{"step", "epoch", "knn_acc", "probe_acc"}`` (epoch = epochs completed),
            in order; a resumed run's history includes the rows before the resume.
        checkpoint: the checkpoint path, or ``None`` when no ``out`` was given.
        head: the projection head (for inspection; downstream code uses ``encoder``).
    """

    encoder: nn.Module
    history: list[dict[str, Any]]
    checkpoint: Path | None
    head: nn.Module | None = None


def projection_head(in_features: int, hidden: int, out: int) -> nn.Module:
    """SimCLR projection MLP: Linear → BatchNorm1d → ReLU → Linear.

    Example:
        >>> projection_head(64, 256, 128)(torch.zeros(4, 64)).shape
        torch.Size([4, 128])
    """
    for name, v in (("in_features", in_features), ("hidden", hidden), ("out", out)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"projection_head: {name} must be a positive int, got {v!r}")
    return nn.Sequential(nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total - warmup) / max(1, total - warmup)))


def _data_info(collection: ImageCollection) -> dict[str, Any]:
    return {
        "source": collection.source,
        "split": collection.split,
        "images": len(collection),
        "image_size": collection.image_size,
        "channels": collection.channels,
        "fingerprint": collection.fingerprint(),
    }


def _check_resumable(ck: Checkpoint, spec: dict[str, Any], data: dict[str, Any], cfg: SimCLRConfig) -> None:
    meta, where = ck.metadata, ck.path
    hint = "pass resume=False to start afresh (it overwrites the file) or choose another out path"
    if meta.get("trainer") != "simclr":
        raise ValueError(f"{where}: is not a SimCLR training checkpoint (trainer={meta.get('trainer')!r}); {hint}")
    saved = meta.get("backbone", {})
    if not isinstance(saved, dict) or not isinstance(saved.get("name"), str):
        raise ValueError(f"{where}: has no backbone spec; {hint}")
    have = (saved["name"], resolve_backbone_kwargs(saved["name"], **saved.get("kwargs", {})))
    want = (spec["name"], resolve_backbone_kwargs(spec["name"], **spec["kwargs"]))
    if have != want:
        raise ValueError(
            f"{where}: was trained with backbone {have[0]!r} {have[1]}, this run asks for {want[0]!r} {want[1]}; {hint}"
        )
    old = meta.get("data", {})
    if old.get("fingerprint") != data["fingerprint"]:
        raise ValueError(
            f"{where}: was trained on other data ({old.get('source')!r}, {old.get('images')} images, fingerprint "
            f"{old.get('fingerprint')}) than this collection ({data['source']!r}, {data['images']} images, "
            f"fingerprint {data['fingerprint']}); {hint}"
        )
    old_cfg, new_cfg = meta.get("config", {}), cfg.to_json()
    diff = {k: (old_cfg.get(k), v) for k, v in new_cfg.items() if k not in _RESUMABLE_CHANGES and old_cfg.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"{where}: was trained with another configuration ({detail}); {hint}")


def _monitor(
    encoder: nn.Module, monitor: tuple[ImageCollection, ImageCollection], step: int, epoch: int
) -> dict[str, Any]:
    train, test = monitor
    frozen = with_population_stats(encoder, train.images)  # inductive: statistics of the train images
    ftr, fte = extract_features(frozen, train.images), extract_features(frozen, test.images)
    knn = knn_accuracy(ftr, train.labels, fte, test.labels, k=min(5, len(train)))
    probe = linear_probe((ftr, fte), train, test, k_per_class=None)["acc_mean"]
    return {"step": step, "epoch": epoch, "knn_acc": knn, "probe_acc": float(probe)}


def pretrain_simclr(
    collection: ImageCollection,
    *,
    backbone: str = "conv4",
    backbone_kwargs: dict[str, Any] | None = None,
    config: SimCLRConfig | None = None,
    out: str | Path | None = None,
    resume: bool = True,
    monitor: tuple[ImageCollection, ImageCollection] | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> PretrainResult:
    """Pretrain a backbone with SimCLR on the images of ``collection`` (labels are not used).

    Args:
        collection: training images (any source; MedSynth enables restyled positives).
        backbone: registered backbone name (``medmeta_lib.models.list_backbones()``).
        backbone_kwargs: the backbone's arguments, e.g. ``{"hidden": 64, "norm": "group"}``.
        config: hyper-parameters (default ``SimCLRConfig()``).
        out: checkpoint file (``.safetensors``); ``None`` keeps everything in memory.
        resume: continue from ``out`` when it exists (else it is overwritten).
        monitor: ``(train, test)`` labelled collections for the periodic kNN / linear-probe accuracy.
        progress: show a tqdm bar.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (``config.select_device``).

    Returns:
        :class:`PretrainResult` with the encoder, the history and the checkpoint path.

    Raises:
        ValueError: a bad argument, a collection with fewer than 2 images, or a checkpoint at ``out``
            from another backbone, other data or another configuration (when resuming).

    Example:
        >>> from medmeta_lib.data.sources import load_collection
        >>> col = load_collection("synthetic", image_size=28, n_per_class_site=2)
        >>> res = pretrain_simclr(col, config=SimCLRConfig(epochs=1, batch_size=32), progress=False)
        >>> res.history[-1]["epoch"]
        1
    """
    cfg = config if config is not None else SimCLRConfig()
    if not isinstance(cfg, SimCLRConfig):
        raise ValueError(f"config must be a SimCLRConfig, got {type(cfg).__name__}")
    if len(collection) < 2:
        raise ValueError(f"{collection.source}: SimCLR needs at least 2 images, got {len(collection)}")
    if monitor is not None and (len(monitor) != 2 or not all(isinstance(c, ImageCollection) for c in monitor)):
        raise ValueError("monitor must be a (train, test) pair of labelled ImageCollections, or None")
    dev = select_device(device)
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        encoder = create_backbone(backbone, in_channels=collection.channels, **(backbone_kwargs or {}))
        head = projection_head(int(encoder.out_features), cfg.proj_hidden, cfg.proj_dim)  # type: ignore[arg-type]
    encoder.to(dev)
    head.to(dev)
    spec: dict[str, Any] = dict(encoder.spec)  # type: ignore[arg-type]
    data = _data_info(collection)
    params = [*encoder.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    batch = min(cfg.batch_size, len(collection))
    world, rank = get_world_size(), get_rank()
    check_world_divides(batch, world, setting="SimCLRConfig.batch_size (--batch-size)", what="images")
    local = batch // world  # this rank's images of every global batch
    spe = len(collection) // batch
    total = cfg.epochs * spe
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, total, cfg.warmup_steps))
    history: list[dict[str, Any]] = []
    step = 0
    path = Path(out) if out is not None else None
    if path is not None and resume and path.exists():
        ck = load_checkpoint(path, expect={"kind": "encoder"})
        _check_resumable(ck, spec, data, cfg)
        t = ck.tensors
        n_enc, n_head = len(ENCODER_PREFIX), len(HEAD_PREFIX)
        encoder.load_state_dict({k[n_enc:]: v for k, v in t.items() if k.startswith(ENCODER_PREFIX)}, strict=True)
        head.load_state_dict({k[n_head:]: v for k, v in t.items() if k.startswith(HEAD_PREFIX)}, strict=True)
        load_optimizer_state(opt, t, ck.metadata["optimizer"])
        load_scheduler_state(sched, ck.metadata["scheduler"])
        restore_rng_state(t, ck.metadata["rng"])
        step, history = int(ck.metadata["step"]), list(ck.metadata["history"])
        if sched.last_epoch != step:
            raise ValueError(
                f"{path}: scheduler position {sched.last_epoch} disagrees with step {step}; file is corrupt"
            )
    else:  # a fresh run owns the global RNGs it checkpoints: start them from the seed, not from OS entropy
        seed_everything(cfg.seed)
    check_same_on_all_ranks(step, "the resume step", f"out={path} must be on a filesystem all nodes share")

    def save() -> None:
        if path is None:
            return
        tensors = {ENCODER_PREFIX + k: v for k, v in encoder.state_dict().items()}
        tensors.update({HEAD_PREFIX + k: v for k, v in head.state_dict().items()})
        opt_t, opt_meta = optimizer_state_to_tensors(opt)
        rng_t, rng_meta = rng_state_to_tensors()
        meta = {
            "kind": "encoder",
            "encoder_prefix": ENCODER_PREFIX,
            "backbone": spec,
            "trainer": "simclr",
            "config": cfg.to_json(),
            "step": step,
            "epoch": step // spe,
            "steps_per_epoch": spe,
            "head": {"in_features": int(encoder.out_features), "hidden": cfg.proj_hidden, "out": cfg.proj_dim},  # type: ignore[arg-type]
            "optimizer": opt_meta,
            "scheduler": scheduler_state_to_json(sched),
            "rng": rng_meta,
            "data": data,
            "history": history,
        }
        write_on_main(save_checkpoint, path, {**tensors, **opt_t, **rng_t}, meta)

    stop = total if cfg.max_steps is None else min(total, cfg.max_steps)
    views = ContrastiveViews(collection, cfg, (rank, world) if world > 1 else ())
    model = nn.Sequential(encoder, head)  # head(encoder(x))
    if monitor is not None and step == 0 and not history:
        history.append(_monitor(encoder, monitor, 0, 0))
    show = progress and is_main_process()  # rank 0 alone draws the bar
    bar = tqdm(total=stop, initial=min(step, stop), disable=not show, desc=f"SimCLR {backbone}", unit="step")
    # channels-last tensors and in-place ReLUs while training (about 1.5x faster on CPU); restored after
    with training_layout(model) as prepare:
        net = wrap_ddp(model)  # DDP under torchrun, built on the training layout
        encoder.train()
        head.train()
        try:
            while step < stop:
                epoch = step // spe
                order = torch.from_numpy(np.random.default_rng([cfg.seed, 0, epoch]).permutation(len(collection)))
                for i in range(step % spe, spe):
                    idx = order[i * batch : (i + 1) * batch][rank * local : (rank + 1) * local]
                    v1, v2 = views(idx, step)
                    z = net(prepare(torch.cat([v1, v2]).to(dev)))
                    z1, z2 = gather_views(z)  # every rank's: the global batch
                    loss = nt_xent_loss(z1, z2, temperature=cfg.temperature)
                    lr = opt.param_groups[0]["lr"]
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    step += 1
                    history.append({"step": step, "epoch": epoch + 1, "loss": loss.item(), "lr": float(lr)})
                    bar.update(1)
                    bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", lr=f"{lr:.2e}")
                    if step >= stop:
                        break
                done = step // spe  # epochs completed
                at_end = step >= stop
                if step % spe == 0 and monitor is not None and (done % cfg.monitor_every == 0 or step == total):
                    history.append(_monitor(encoder, monitor, step, done))
                    encoder.train()
                if at_end or (step % spe == 0 and done % cfg.checkpoint_every == 0):
                    save()
            if path is not None and not path.exists():
                save()  # resumed a finished run or stop == 0: still leave a checkpoint behind
        finally:
            bar.close()
    return PretrainResult(encoder=encoder, history=history, checkpoint=path, head=head)
