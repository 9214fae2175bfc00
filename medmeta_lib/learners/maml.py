"""MAML, first-order MAML and Meta-SGD with ``torch.func.functional_call`` on parameter dicts.

Inner loop (task ``i``, support ``S_i``): ``φ ← φ - α ⊙ ∇_φ L_{S_i}(φ)`` for ``inner_steps`` steps,
starting from ``φ = θ``. Outer objective: ``L(θ) = (1/T) Σ_i L_{Q_i}(φ_i(θ))``.

* ``maml`` (Finn et al. 2017): second order, the inner gradients are part of the graph
  (``torch.autograd.grad(create_graph=True)``), so ``∇_θ L`` includes the Hessian terms.
* ``fomaml``: the inner gradients are treated as constants; ``∇_θ L`` is the query-loss gradient
  at the adapted weights.
* ``metasgd`` (Li et al. 2017): ``α`` is a learned tensor per parameter (same shape), initialised
  to ``inner_lr`` and meta-trained with ``θ``.

Design notes (docs/architecture.md): tasks are processed in a plain Python loop through ``torch.func``
(measured against a plain autograd loop in BENCHMARKS.md §1); ``vmap`` over tasks is not used (no
vmap variant is measured in ``bench/``, and batch-statistics normalisation would need per-task
statistics inside it). The support and query forwards are separate calls; by default the query is
normalised with the batch statistics of the support forward at the adapted weights (MetaBN,
Bronskill et al. 2020: inductive, and differentiated through in meta-training). ``transductive = True``
normalises the query with its own statistics instead, the usual MAML setting.

Head: a linear layer with ``n_way`` outputs. ``head_init="zero"`` (default) starts every task
from an all-zero head, as in UnicornMAML (Ye & Chao 2022, "How to train your MAML to excel in
few-shot classification"), which meta-learns one vector shared by all class rows. With a softmax,
adding the same vector to every row shifts all logits equally, so the loss and the inner-loop
updates do not depend on it and its meta-gradient is exactly zero: a shared learned row *is* the
zero head. The zero head makes the learner invariant to the arbitrary label permutation of an
episode and lets it run with any ``n_way`` at test time; the first inner step trains only the
head (the backbone gradient is zero while the head is). ``"learned"`` is the original MAML head
(one learned row per label, tied to ``n_way``).
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from medmeta_lib.data.episodes import Episode
from medmeta_lib.learners.base import Learner, Predictor, check_int, check_positive
from medmeta_lib.learners.registry import register_learner
from medmeta_lib.learners.trace import AdaptationTrace, TraceRecorder
from medmeta_lib.models.task_norm import record_norm_stats, use_norm_stats

__all__ = ["FOMAML", "MAML", "HeadInit", "MetaSGD"]

HeadInit = Literal["zero", "learned"]
_HEAD_INITS = ("zero", "learned")


def check_no_running_stats(backbone: nn.Module, learner: str) -> None:
    """Raise ``ValueError`` if a BatchNorm layer of ``backbone`` tracks running statistics."""
    for name, m in backbone.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            raise ValueError(
                f"{learner}: BatchNorm layer '{name}' tracks running statistics, which the inner loop would "
                "overwrite; build the backbone with BatchNorm2d(track_running_stats=False) "
                "(create_backbone(..., norm='batch') does) or use norm='group'/'instance'"
            )


class _HeadMixin(nn.Module):
    """The task head shared by MAML, Meta-SGD and ANIL (see the module docstring)."""

    head_weight: Tensor
    head_bias: Tensor

    def _build_head(self, feature_dim: int, n_way: int, head_init: str) -> None:
        if head_init not in _HEAD_INITS:
            raise ValueError(f"head_init must be one of {_HEAD_INITS}, got {head_init!r}")
        self.head_init = head_init
        if head_init == "learned":
            lin = nn.Linear(feature_dim, n_way)  # the usual Kaiming-uniform init of the original MAML head
            self.head_weight = nn.Parameter(lin.weight.detach().clone())
            self.head_bias = nn.Parameter(lin.bias.detach().clone())
        else:  # a buffer, not a parameter: nothing to meta-learn (see the module docstring)
            self.register_buffer("head_weight", torch.zeros(1, feature_dim), persistent=False)
            self.register_buffer("head_bias", torch.zeros(1), persistent=False)

    def _initial_head(self, n_way: int, *, detach: bool) -> tuple[Tensor, Tensor]:
        """The task head ``(W (n_way, D), b (n_way,))`` at the start of the inner loop."""
        w, b = self.head_weight, self.head_bias
        if detach or not w.requires_grad:
            w = w.detach().expand(n_way, -1).clone().requires_grad_()
            b = b.detach().expand(n_way).clone().requires_grad_()
        return w, b


@register_learner("maml")
class MAML(_HeadMixin, Learner):
    """Model-agnostic meta-learning (second order unless ``first_order=True``).

    Args:
        backbone: feature extractor with ``out_features``; BatchNorm without running statistics.
        n_way: classes per task.
        inner_steps: inner-loop steps during meta-training.
        inner_lr: inner-loop step size ``α`` (0.01 with 5 steps is the usual Conv4 setting
            with an Adam outer learning rate of 1e-3).
        first_order: drop the second-order terms (FOMAML).
        eval_steps: inner steps at test time (:meth:`adapt` with ``steps=None``).
        head_init: ``"zero"`` or ``"learned"`` (see the module docstring).

    Example:
        >>> from medmeta_lib.models.backbones import create_backbone  # doctest: +SKIP
        >>> m = MAML(create_backbone("conv4"), n_way=5, inner_steps=5, inner_lr=0.01)  # doctest: +SKIP
        >>> loss, stats = m.meta_loss(episodes); loss.backward()  # doctest: +SKIP
    """

    name = "maml"
    learned_lr = False

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
        check_no_running_stats(backbone, self.name)
        self._build_head(self.feature_dim, self.n_way, head_init)
        self._adapted = [n for n, p in backbone.named_parameters() if p.requires_grad]
        if self.learned_lr:
            self.inner_lrs = nn.ParameterDict(
                {_lr_key(n): nn.Parameter(torch.full_like(p.detach(), self.inner_lr)) for n, p in self._body_items()}
            )
            self.inner_lrs["head-weight"] = nn.Parameter(torch.full_like(self.head_weight.detach(), self.inner_lr))
            self.inner_lrs["head-bias"] = nn.Parameter(torch.full_like(self.head_bias.detach(), self.inner_lr))

    @property
    def way_agnostic(self) -> bool:  # noqa: D102
        return self.head_init != "learned"

    def _body_items(self) -> list[tuple[str, Tensor]]:
        params = dict(self.backbone.named_parameters())
        return [(n, params[n]) for n in self._adapted]

    def _lr(self, key: str, detach: bool) -> Tensor | float:
        if not self.learned_lr:
            return self.inner_lr
        lr = self.inner_lrs[key]
        return lr.detach() if detach else lr

    def _logits(self, body: dict[str, Tensor], w: Tensor, b: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        emb = functional_call(self.backbone, body, (x,))
        return emb, F.linear(emb, w, b)

    @torch.enable_grad()  # the inner loop needs autograd even when called under torch.no_grad()
    def inner_loop(
        self,
        x: Tensor,
        y: Tensor,
        steps: int,
        *,
        mode: Literal["second", "first", "none"],
        recorder: TraceRecorder | None = None,
        query_x: Tensor | None = None,
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Adapt ``(body, W, b)`` on ``(x, y)`` for ``steps`` steps.

        Args:
            x: support images.
            y: support labels.
            steps: number of gradient steps.
            mode: ``"second"`` keeps the inner gradients in the graph (MAML); ``"first"`` treats
                them as constants but keeps ``φ = θ - Σ α g`` differentiable w.r.t. ``θ`` and the
                learned rates (FOMAML); ``"none"`` detaches everything (test-time adaptation).
            recorder: optional trace recorder (test time).
            query_x: query images scored into the trace at every step.

        Returns:
            The adapted backbone parameters (by name), head weight and head bias.
        """
        detach = mode == "none"
        n_way = self.n_way
        if detach:
            body = {n: p.detach().requires_grad_() for n, p in self._body_items()}
        else:
            body = dict(self._body_items())
        w, b = self._initial_head(n_way, detach=detach)
        keys = [_lr_key(n) for n in body] + ["head-weight", "head-bias"]
        names = list(body)
        for step in range(steps + 1):
            if step == steps and recorder is None:
                break
            # the support's statistics are recorded only when a trace scores queries with them
            with (
                torch.enable_grad(),
                record_norm_stats() if recorder is not None else contextlib.nullcontext() as stats,
            ):
                emb, logits = self._logits(body, w, b, x)
            if recorder is not None:
                self._record(recorder, step, body, w, b, emb, logits, y, query_x, stats)
                if step == steps:
                    break
            loss = F.cross_entropy(logits, y)
            if step == 0 and self.head_init == "zero":
                # With an all-zero head the logits are 0 for every θ, so ∇_θ L ≡ 0 (and so are its
                # second-order terms): step 0 updates only the head, and the backward pass stops at the
                # linear layer instead of running through the backbone (exact, not an approximation).
                gw, gb = torch.autograd.grad(loss, (w, b), create_graph=mode == "second")
                w = w - self._lr("head-weight", detach) * gw
                b = b - self._lr("head-bias", detach) * gb
                if detach:
                    w, b = w.detach().requires_grad_(), b.detach().requires_grad_()
                else:
                    # φ_1 = θ must be a new node: the next inner gradient is ∂L/∂φ_1 (partial), and
                    # differentiating w.r.t. θ itself would add the path θ → h(θ) → W_1.
                    body = {n: t.view_as(t) for n, t in body.items()}
                continue
            tensors = [*body.values(), w, b]
            grads = torch.autograd.grad(loss, tensors, create_graph=mode == "second")
            new = [t - self._lr(k, detach) * g for t, g, k in zip(tensors, grads, keys)]
            if detach:
                new = [t.detach().requires_grad_() for t in new]
            body = dict(zip(names, new[:-2]))
            w, b = new[-2], new[-1]
        return body, w, b

    def _record(self, recorder, step, body, w, b, emb, logits, y, query_x, stats) -> None:
        q_emb = q_logits = None
        if query_x is not None:
            with torch.no_grad(), contextlib.nullcontext() if self.transductive else use_norm_stats(stats):
                q_emb, q_logits = self._logits(body, w, b, query_x)
        params = None
        if recorder.record_params:
            params = {f"backbone.{k}": v for k, v in body.items()}
            params.update({"head.weight": w, "head.bias": b})
        recorder.add(step, logits, y, query_logits=q_logits, params=params, support_emb=emb, query_emb=q_emb)

    def task_loss(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Query loss after ``inner_steps`` steps on the support, and the query accuracy."""
        mode: Literal["second", "first"] = "first" if self.first_order else "second"
        body, w, b = self.inner_loop(episode.support_x, episode.support_y, self.inner_steps, mode=mode)
        backbone = self.backbone
        _, query = self.embed_pair(lambda x: functional_call(backbone, body, (x,)), episode.support_x, episode.query_x)
        logits = F.linear(query, w, b)
        loss = F.cross_entropy(logits, episode.query_y)
        acc = (logits.detach().argmax(-1) == episode.query_y).float().mean()
        return loss, acc

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
        """Fine-tune a detached copy of ``θ`` on the support set (``eval_steps`` steps by default).

        Example:
            >>> pred, trace = maml.adapt(ep.support_x, ep.support_y, query_x=ep.query_x,
            ...                          query_y=ep.query_y)  # doctest: +SKIP
            >>> trace.query_acc[0], trace.query_acc[-1]  # doctest: +SKIP
            (0.2, 0.71)
        """
        self._check_adapt_args(support_x, support_y, query_x, query_y)
        steps = self._check_steps(steps, self.eval_steps)
        rec = TraceRecorder(self.name, query_y, record_params=record_params, record_embeddings=record_embeddings)
        body, w, b = self.inner_loop(support_x, support_y, steps, mode="none", recorder=rec, query_x=query_x)
        body = {k: v.detach() for k, v in body.items()}
        w, b = w.detach(), b.detach()
        backbone = self.backbone
        params: dict[str, Tensor] = {f"backbone.{k}": v for k, v in body.items()}
        params.update({"head.weight": w, "head.bias": b})
        embed, _ = self.frozen_embedder(lambda x: functional_call(backbone, body, (x,)), support_x)
        pred = Predictor(
            embed,
            lambda h: F.linear(h, w, b),
            n_way=self.n_way,
            params=params,
        )
        return pred, rec.trace

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"n_way={self.n_way}, inner_steps={self.inner_steps}, inner_lr={self.inner_lr}, "
            f"first_order={self.first_order}, eval_steps={self.eval_steps}, head_init={self.head_init!r}"
        )


def _lr_key(name: str) -> str:
    return "backbone-" + name.replace(".", "-")


@register_learner("fomaml")
class FOMAML(MAML):
    """First-order MAML: :class:`MAML` with ``first_order=True`` (same arguments).

    Example:
        >>> from medmeta_lib.models.backbones import create_backbone
        >>> m = FOMAML(create_backbone("conv4", hidden=8), n_way=2)
        >>> pred, trace = m.adapt(torch.rand(4, 1, 28, 28), torch.tensor([0, 0, 1, 1]), steps=2)
        >>> m.first_order, pred(torch.rand(3, 1, 28, 28)).shape, trace.steps
        (True, torch.Size([3, 2]), [0, 1, 2])
    """

    name = "fomaml"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        n_way: int,
        inner_steps: int = 5,
        inner_lr: float = 0.01,
        first_order: bool = True,
        eval_steps: int = 10,
        head_init: HeadInit = "zero",
    ) -> None:
        if first_order is not True:
            raise ValueError("first_order must be True for fomaml; use 'maml' for second-order gradients")
        super().__init__(
            backbone,
            n_way=n_way,
            inner_steps=inner_steps,
            inner_lr=inner_lr,
            first_order=True,
            eval_steps=eval_steps,
            head_init=head_init,
        )


@register_learner("metasgd")
class MetaSGD(MAML):
    """Meta-SGD: MAML with a learned step size per parameter element (``inner_lrs``).

    The rates are initialised to ``inner_lr`` and meta-trained with the backbone; they are part of
    ``parameters()``. Arguments as :class:`MAML`.

    Example:
        >>> from medmeta_lib.models.backbones import create_backbone
        >>> m = MetaSGD(create_backbone("conv4", hidden=8), n_way=2, inner_lr=0.05)
        >>> m.inner_lrs["head-weight"].shape, bool((m.inner_lrs["head-weight"] == 0.05).all())
        (torch.Size([1, 8]), True)
    """

    name = "metasgd"
    learned_lr = True
