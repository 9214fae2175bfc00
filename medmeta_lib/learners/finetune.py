"""Fine-tuning baselines: Baseline, Baseline++ (Chen et al. 2019) and training from scratch.

* ``baseline``: "meta-training" is ordinary supervised training of the backbone and a linear
  classifier over all meta-train classes (an episode's images are labelled with their global
  class ids, ``Episode.classes``). To adapt, the encoder is frozen, the support features are
  computed once, and a **new** linear head is trained on them.
* ``baseline++``: the same with a cosine-similarity head (``CosineHead``) in both phases.
* ``scratch``: nothing is meta-trained; to adapt, a fresh copy of the backbone (at its random
  initialisation) and a new linear head are trained on the support set only — the floor every
  learner must beat.

The new heads are initialised with a seeded generator (``adapt_seed``), so adaptation is
deterministic and does not consume the global random stream.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from medmeta_lib.data.episodes import Episode
from medmeta_lib.learners.base import Learner, Predictor, check_int, check_positive
from medmeta_lib.learners.registry import register_learner
from medmeta_lib.learners.trace import AdaptationTrace, TraceRecorder
from medmeta_lib.models.heads import CosineHead, LinearHead
from medmeta_lib.models.task_norm import record_norm_stats, use_norm_stats

__all__ = ["Baseline", "BaselinePlusPlus", "Scratch"]


def _seeded(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    """Build a module with ``torch.manual_seed(seed)`` without disturbing the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


def _check_weight_decay(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"adapt_weight_decay must be a number >= 0, got {value!r}")
    return float(value)


@register_learner("baseline")
class Baseline(Learner):
    """Chen et al.'s Baseline: supervised pre-training, then a new linear head per task.

    Args:
        backbone: feature extractor with ``out_features``.
        n_way: classes per test task (any value works; see ``set_n_way``).
        num_train_classes: size of the meta-training classifier; every ``Episode.classes`` id
            seen in meta-training must be below it (pass the collection's ``num_classes``).
        eval_steps: optimisation steps of the new head at test time.
        adapt_lr: Adam learning rate of the new head.
        adapt_weight_decay: weight decay of the new head.
        adapt_seed: seed of the new head's initialisation.

    Example:
        >>> b = Baseline(create_backbone("conv4"), n_way=5, num_train_classes=64)  # doctest: +SKIP
        >>> b.meta_step(episodes, torch.optim.Adam(b.parameters(), 1e-3))  # doctest: +SKIP
    """

    name = "baseline"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        n_way: int,
        num_train_classes: int | None = None,
        eval_steps: int = 100,
        adapt_lr: float = 0.01,
        adapt_weight_decay: float = 1e-3,
        adapt_seed: int = 0,
    ) -> None:
        super().__init__(backbone, n_way=n_way)
        if num_train_classes is None:
            raise ValueError(
                f"{self.name} needs num_train_classes (the size of its meta-training classifier); "
                "pass the collection's num_classes"
            )
        self.num_train_classes = check_int("num_train_classes", num_train_classes, 2)
        self.eval_steps = check_int("eval_steps", eval_steps, 0)
        self.adapt_lr = check_positive("adapt_lr", adapt_lr)
        self.adapt_weight_decay = _check_weight_decay(adapt_weight_decay)
        self.adapt_seed = check_int("adapt_seed", adapt_seed, 0)
        self.classifier = self._new_head(self.num_train_classes)

    def _new_head(self, n_classes: int) -> nn.Module:
        return LinearHead(self.feature_dim, n_classes)

    def meta_loss(self, episodes: Sequence[Episode]) -> tuple[Tensor, dict[str, float]]:
        """Cross-entropy of the global classifier on every image of the episodes (one batch)."""
        if isinstance(episodes, Episode):
            episodes = [episodes]
        episodes = list(episodes)
        if not episodes:
            raise ValueError(f"{self.name}: the meta-batch is empty; pass at least one episode")
        xs, ys = [], []
        for ep in episodes:
            if max(ep.classes) >= self.num_train_classes:
                raise ValueError(
                    f"{self.name}: episode class id {max(ep.classes)} >= num_train_classes={self.num_train_classes}; "
                    "create the learner with num_train_classes=<the collection's num_classes>"
                )
            ids = torch.tensor(ep.classes, device=ep.support_y.device)
            xs += [ep.support_x, ep.query_x]
            ys += [ids[ep.support_y], ids[ep.query_y]]
        x, y = torch.cat(xs), torch.cat(ys)
        logits = self.classifier(self.backbone(x))
        loss = F.cross_entropy(logits, y)
        acc = float((logits.detach().argmax(-1) == y).float().mean())
        return loss, {"loss": float(loss.detach()), "acc": acc}

    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor,
        *,
        steps: int | None = None,
        query_x: Tensor | None = None,
        query_y: Tensor | None = None,
        record_params: bool = False,
        record_embeddings: bool = False,
    ) -> tuple[Predictor, AdaptationTrace]:
        """Freeze the encoder, cache the support features, train a new head on them with Adam."""
        self._check_adapt_args(support_x, support_y, query_x, query_y)
        steps = self._check_steps(steps, self.eval_steps)
        body = {n: p.detach() for n, p in self.backbone.named_parameters()}
        backbone = self.backbone

        embed, feats = self.frozen_embedder(lambda x: functional_call(backbone, body, (x,)), support_x)
        with torch.no_grad():
            qfeats = None if query_x is None else embed(query_x)
        head = _seeded(self.adapt_seed, lambda: self._new_head(self.n_way)).to(feats.device, feats.dtype)
        rec = TraceRecorder(self.name, query_y, record_params=record_params, record_embeddings=record_embeddings)
        _train_head(head, feats, support_y, steps, self.adapt_lr, self.adapt_weight_decay, rec, qfeats)
        head.requires_grad_(False)
        params = {f"head.{k}": v.detach() for k, v in head.named_parameters()}
        return Predictor(embed, head, n_way=self.n_way, params=params), rec.trace


def _train_head(
    head: nn.Module,
    feats: Tensor,
    y: Tensor,
    steps: int,
    lr: float,
    weight_decay: float,
    rec: TraceRecorder,
    qfeats: Tensor | None,
) -> None:
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    for step in range(steps + 1):
        with torch.enable_grad():
            logits = head(feats)
        with torch.no_grad():
            q_logits = None if qfeats is None else head(qfeats)
        params = {f"head.{k}": v for k, v in head.named_parameters()} if rec.record_params else None
        rec.add(step, logits, y, query_logits=q_logits, params=params, support_emb=feats, query_emb=qfeats)
        if step == steps:
            break
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            F.cross_entropy(logits, y).backward()
        opt.step()


@register_learner("baseline++")
class BaselinePlusPlus(Baseline):
    """Baseline++: :class:`Baseline` with a cosine-similarity head (``CosineHead``).

    Args:
        backbone: feature extractor with ``out_features``.
        n_way: classes per test task.
        num_train_classes: size of the meta-training classifier.
        scale: the cosine head's temperature (logits = ``scale`` · cosine).
        eval_steps: optimisation steps of the new head at test time.
        adapt_lr: Adam learning rate of the new head.
        adapt_weight_decay: weight decay of the new head.
        adapt_seed: seed of the new head's initialisation.

    Example:
        >>> from medmeta_lib.models import create_backbone
        >>> b = BaselinePlusPlus(create_backbone("conv4", hidden=8), n_way=2, num_train_classes=4, scale=5.0)
        >>> type(b.classifier).__name__, b.classifier(torch.rand(3, 8)).shape
        ('CosineHead', torch.Size([3, 4]))
    """

    name = "baseline++"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        n_way: int,
        num_train_classes: int | None = None,
        scale: float = 10.0,
        eval_steps: int = 100,
        adapt_lr: float = 0.01,
        adapt_weight_decay: float = 1e-3,
        adapt_seed: int = 0,
    ) -> None:
        self.scale = check_positive("scale", scale)
        super().__init__(
            backbone,
            n_way=n_way,
            num_train_classes=num_train_classes,
            eval_steps=eval_steps,
            adapt_lr=adapt_lr,
            adapt_weight_decay=adapt_weight_decay,
            adapt_seed=adapt_seed,
        )

    def _new_head(self, n_classes: int) -> nn.Module:
        return CosineHead(self.feature_dim, n_classes, scale=self.scale)


@register_learner("scratch")
class Scratch(Learner):
    """Train a fresh copy of the (randomly initialised) backbone and a new head on the support only.

    Args:
        backbone: feature extractor at its random initialisation; never meta-trained.
        n_way: classes per task (any value works; see ``set_n_way``).
        eval_steps: full-batch Adam steps on the support set.
        adapt_lr: Adam learning rate.
        adapt_weight_decay: weight decay.
        adapt_seed: seed of the new head's initialisation.

    Example:
        >>> s = Scratch(create_backbone("conv4"), n_way=5)  # doctest: +SKIP
        >>> s.evaluate_episode(ep)["acc"]  # doctest: +SKIP
    """

    name = "scratch"
    meta_trainable = False

    def __init__(
        self,
        backbone: nn.Module,
        *,
        n_way: int,
        eval_steps: int = 100,
        adapt_lr: float = 1e-3,
        adapt_weight_decay: float = 0.0,
        adapt_seed: int = 0,
    ) -> None:
        super().__init__(backbone, n_way=n_way)
        self.eval_steps = check_int("eval_steps", eval_steps, 0)
        self.adapt_lr = check_positive("adapt_lr", adapt_lr)
        self.adapt_weight_decay = _check_weight_decay(adapt_weight_decay)
        self.adapt_seed = check_int("adapt_seed", adapt_seed, 0)

    def meta_loss(self, episodes: Sequence[Episode]) -> tuple[Tensor, dict[str, float]]:
        """Not defined: ``scratch`` is not meta-trainable (raises ``RuntimeError``)."""
        raise RuntimeError("scratch is not meta-trainable (meta_trainable=False); skip meta-training for it")

    def adapt(
        self,
        support_x: Tensor,
        support_y: Tensor,
        *,
        steps: int | None = None,
        query_x: Tensor | None = None,
        query_y: Tensor | None = None,
        record_params: bool = False,
        record_embeddings: bool = False,
    ) -> tuple[Predictor, AdaptationTrace]:
        """Train a copy of the backbone plus a new linear head on the support set."""
        self._check_adapt_args(support_x, support_y, query_x, query_y)
        steps = self._check_steps(steps, self.eval_steps)
        model = copy.deepcopy(self.backbone).requires_grad_(True)
        head = _seeded(self.adapt_seed, lambda: LinearHead(self.feature_dim, self.n_way))
        head = head.to(support_x.device, next(model.parameters()).dtype)
        opt = torch.optim.Adam(
            [*model.parameters(), *head.parameters()], lr=self.adapt_lr, weight_decay=self.adapt_weight_decay
        )
        rec = TraceRecorder(self.name, query_y, record_params=record_params, record_embeddings=record_embeddings)
        for step in range(steps + 1):
            with torch.enable_grad(), record_norm_stats() as stats:
                emb = model(support_x)
                logits = head(emb)
            q_emb = q_logits = None
            if query_x is not None:
                with torch.no_grad(), use_norm_stats(stats) if not self.transductive else contextlib.nullcontext():
                    q_emb = model(query_x)
                    q_logits = head(q_emb)
            params = None
            if record_params:
                params = {f"backbone.{k}": v for k, v in model.named_parameters()}
                params.update({f"head.{k}": v for k, v in head.named_parameters()})
            rec.add(step, logits, support_y, query_logits=q_logits, params=params, support_emb=emb, query_emb=q_emb)
            if step == steps:
                break
            opt.zero_grad(set_to_none=True)
            with torch.enable_grad():
                F.cross_entropy(logits, support_y).backward()
            opt.step()
        model.requires_grad_(False)
        head.requires_grad_(False)
        final = {f"backbone.{k}": v for k, v in model.named_parameters()}
        final.update({f"head.{k}": v for k, v in head.named_parameters()})
        embed, _ = self.frozen_embedder(model, support_x)
        return Predictor(embed, head, n_way=self.n_way, params=final), rec.trace
