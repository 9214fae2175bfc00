"""ANIL (Raghu et al. 2020, "Rapid learning or feature reuse?"): the inner loop adapts only the head.

The backbone is not touched by the inner loop, so its features are computed **once** per episode
(one support forward, one query forward) and the inner loop is a few steps of softmax regression
on cached features — cheap compared with MAML, which re-runs the backbone every inner step. The
meta-gradient still reaches the backbone, through the features: through the query logits and,
in second order, through the inner-loop head updates that depend on the support features.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmeta_lib.data.episodes import Episode
from medmeta_lib.learners.base import Learner, Predictor, check_int, check_positive
from medmeta_lib.learners.maml import HeadInit, _HeadMixin
from medmeta_lib.learners.registry import register_learner
from medmeta_lib.learners.trace import AdaptationTrace, TraceRecorder

__all__ = ["ANIL"]


@register_learner("anil")
class ANIL(_HeadMixin, Learner):
    """Almost-no-inner-loop MAML: inner loop on the linear head over cached features.

    Args:
        backbone: feature extractor with ``out_features``.
        n_way: classes per task.
        inner_steps: head-only inner steps during meta-training.
        inner_lr: inner step size.
        first_order: drop the second-order terms.
        eval_steps: inner steps at test time.
        head_init: ``"zero"`` (every task starts from a zero head) or ``"learned"`` (one
            meta-learned row per label; see :mod:`medmeta_lib.learners.maml`).

    Example:
        >>> anil = ANIL(create_backbone("conv4"), n_way=5)  # doctest: +SKIP
        >>> pred, trace = anil.adapt(ep.support_x, ep.support_y)  # doctest: +SKIP
    """

    name = "anil"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        n_way: int,
        inner_steps: int = 5,
        inner_lr: float = 0.01,
        first_order: bool = False,
        eval_steps: int = 10,
        head_init: HeadInit = "zero",
    ) -> None:
        super().__init__(backbone, n_way=n_way)
        self.inner_steps = check_int("inner_steps", inner_steps, 0)
        self.inner_lr = check_positive("inner_lr", inner_lr)
        self.eval_steps = check_int("eval_steps", eval_steps, 0)
        if not isinstance(first_order, bool):
            raise ValueError(f"first_order must be True or False, got {first_order!r}")
        self.first_order = first_order
        self._build_head(self.feature_dim, self.n_way, head_init)

    @property
    def way_agnostic(self) -> bool:  # noqa: D102
        return self.head_init != "learned"

    @torch.enable_grad()  # the inner loop needs autograd even when called under torch.no_grad()
    def head_loop(
        self,
        feats: Tensor,
        y: Tensor,
        steps: int,
        *,
        mode: Literal["second", "first", "none"],
        recorder: TraceRecorder | None = None,
        query_feats: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Adapt the head ``(W, b)`` on fixed features; returns the adapted ``(W, b)``."""
        detach = mode == "none"
        w, b = self._initial_head(self.n_way, detach=detach)
        lr = self.inner_lr
        for step in range(steps + 1):
            if step == steps and recorder is None:
                break
            with torch.enable_grad():
                logits = F.linear(feats, w, b)
            if recorder is not None:
                q_logits = None if query_feats is None else F.linear(query_feats, w, b).detach()
                params = {"head.weight": w, "head.bias": b} if recorder.record_params else None
                recorder.add(
                    step, logits, y, query_logits=q_logits, params=params, support_emb=feats, query_emb=query_feats
                )
                if step == steps:
                    break
            gw, gb = torch.autograd.grad(F.cross_entropy(logits, y), (w, b), create_graph=mode == "second")
            w, b = w - lr * gw, b - lr * gb
            if detach:
                w, b = w.detach().requires_grad_(), b.detach().requires_grad_()
        return w, b

    def task_loss(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Query loss after the head-only inner loop; the backbone runs once on support and query."""
        feats, qfeats = self.embed_pair(self.backbone, episode.support_x, episode.query_x)
        w, b = self.head_loop(
            feats, episode.support_y, self.inner_steps, mode="first" if self.first_order else "second"
        )
        logits = F.linear(qfeats, w, b)
        loss = F.cross_entropy(logits, episode.query_y)
        return loss, (logits.detach().argmax(-1) == episode.query_y).float().mean()

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
        """Train a new head on the (once-computed) support features; the backbone stays frozen.

        The trace's ``params`` hold only the head (the backbone does not change).
        """
        self._check_adapt_args(support_x, support_y, query_x, query_y)
        steps = self._check_steps(steps, self.eval_steps)
        body = {n: p.detach() for n, p in self.backbone.named_parameters()}
        backbone = self.backbone

        embed, feats = self.frozen_embedder(lambda x: torch.func.functional_call(backbone, body, (x,)), support_x)
        with torch.no_grad():
            qfeats = None if query_x is None else embed(query_x)
        rec = TraceRecorder(self.name, query_y, record_params=record_params, record_embeddings=record_embeddings)
        w, b = self.head_loop(feats, support_y, steps, mode="none", recorder=rec, query_feats=qfeats)
        w, b = w.detach(), b.detach()
        return Predictor(
            embed, lambda h: F.linear(h, w, b), n_way=self.n_way, params={"head.weight": w, "head.bias": b}
        ), rec.trace
