"""Prototypical networks (Snell et al. 2017): classify by squared Euclidean distance to class means.

Per episode the backbone runs once on the support and once on the query (normalised with the
support's statistics unless the learner is transductive); the prototypes are the class means of the
support embeddings and the logits are ``-‖f(x) - c_k‖²``. "Adaptation"
is computing the prototypes: the trace has two steps, step 0 with every prototype at the origin
(all distances equal, a uniform prediction) and step 1 with the class means.

``metric="cosine"`` is Meta-Baseline's classifier (Chen et al. 2021): the logits are ``τ · cos(f(x), c_k)``
with a learnt scale ``τ`` (initialised to 10), so only the direction of an embedding counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from medmeta_lib.data.episodes import Episode
from medmeta_lib.learners.base import Learner, Predictor, check_int
from medmeta_lib.learners.registry import register_learner
from medmeta_lib.learners.trace import AdaptationTrace, TraceRecorder

__all__ = ["METRICS", "ProtoNet", "cosine_logits", "prototype_logits", "prototypes"]

#: the distances a ProtoNet can classify by
METRICS = ("euclidean", "cosine")


def prototypes(emb: Tensor, y: Tensor, n_way: int) -> Tensor:
    """Class means ``(n_way, D)`` of embeddings ``emb (N, D)`` with labels ``y`` in ``0..n_way-1``.

    Example:
        >>> prototypes(torch.tensor([[0.0], [2.0], [5.0]]), torch.tensor([0, 0, 1]), 2)
        tensor([[1.],
                [5.]])
    """
    onehot = F.one_hot(y, n_way).to(emb.dtype)
    return (onehot.T @ emb) / onehot.sum(0).unsqueeze(1)


def prototype_logits(emb: Tensor, protos: Tensor) -> Tensor:
    """Negative squared Euclidean distances ``(B, n_way)`` from ``emb (B, D)`` to ``protos``.

    Uses ``‖a‖² - 2a·c + ‖c‖²`` (one matrix product; no square root, so the gradient is finite
    even at zero distance).

    Example:
        >>> prototype_logits(torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        tensor([[-1., -4.]])
    """
    d2 = emb.pow(2).sum(1, keepdim=True) - 2 * emb @ protos.T + protos.pow(2).sum(1).unsqueeze(0)
    return -d2


def cosine_logits(emb: Tensor, protos: Tensor, scale: Tensor | float) -> Tensor:
    """``scale ·`` cosine similarities ``(B, n_way)`` of ``emb (B, D)`` and ``protos`` (a zero vector gives 0).

    Example:
        >>> cosine_logits(torch.tensor([[1.0, 0.0]]), torch.tensor([[2.0, 0.0], [0.0, 3.0]]), 10.0)
        tensor([[10.,  0.]])
    """
    return scale * F.normalize(emb, dim=1) @ F.normalize(protos, dim=1).T


@register_learner("protonet")
class ProtoNet(Learner):
    """Prototypical network learner.

    Args:
        backbone: feature extractor with ``out_features``.
        n_way: classes per task (the learner itself works for any number of classes; see
            :meth:`~medmeta_lib.learners.base.Learner.set_n_way`).
        eval_steps: ``1`` (compute the prototypes) by default; ``0`` gives the un-adapted,
            uniform prediction. Any value ``>= 1`` is the same as ``1``.
        metric: ``"euclidean"`` (negative squared distance, Snell et al.) or ``"cosine"`` (scaled cosine
            similarity with a learnt scale, Meta-Baseline).

    Example:
        >>> net = ProtoNet(create_backbone("conv4"), n_way=5)  # doctest: +SKIP
        >>> pred, _ = net.adapt(ep.support_x, ep.support_y)  # doctest: +SKIP
        >>> pred(ep.query_x).argmax(-1)  # doctest: +SKIP
    """

    name = "protonet"

    def __init__(self, backbone: nn.Module, *, n_way: int, eval_steps: int = 1, metric: str = "euclidean") -> None:
        super().__init__(backbone, n_way=n_way)
        self.eval_steps = check_int("eval_steps", eval_steps, 0)
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.metric = metric
        # Meta-Baseline's temperature: a parameter only for the cosine metric (Euclidean checkpoints are unchanged)
        self.scale = nn.Parameter(torch.tensor(10.0)) if metric == "cosine" else None

    @property
    def support_free_features(self) -> bool:
        """True without batch-norm layers: adaptation only computes prototypes and leaves the backbone as is.

        With batch norm (inductive MetaBN or transductive batch statistics) an image's features depend on the
        support set or on its batch, so this is ``False``.
        """
        return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.backbone.modules())

    def logits(self, emb: Tensor, protos: Tensor) -> Tensor:
        """Class scores ``(B, n_way)`` of embeddings ``emb`` against ``protos`` under the learner's metric."""
        if self.scale is None:
            return prototype_logits(emb, protos)
        return cosine_logits(emb, protos, self.scale)

    def task_loss(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Query cross-entropy over prototype logits (features computed once per set)."""
        support, query = self.embed_pair(self.backbone, episode.support_x, episode.query_x)
        protos = prototypes(support, episode.support_y, self.n_way)
        logits = self.logits(query, protos)
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
        """Compute the prototypes of the support set (trace: step 0 origin, step 1 class means).

        The trace's ``params`` hold ``{"prototypes": (n_way, D)}`` per step.
        """
        self._check_adapt_args(support_x, support_y, query_x, query_y)
        steps = min(self._check_steps(steps, self.eval_steps), 1)
        body = {n: p.detach() for n, p in self.backbone.named_parameters()}
        backbone = self.backbone

        embed, emb = self.frozen_embedder(lambda x: functional_call(backbone, body, (x,)), support_x)
        rec = TraceRecorder(self.name, query_y, record_params=record_params, record_embeddings=record_embeddings)
        with torch.no_grad():
            qemb = None if query_x is None else embed(query_x)
            protos = torch.zeros(self.n_way, emb.shape[1], dtype=emb.dtype, device=emb.device)
            for step in range(steps + 1):
                if step == 1:
                    protos = prototypes(emb, support_y, self.n_way)
                rec.add(
                    step,
                    self.logits(emb, protos),
                    support_y,
                    query_logits=None if qemb is None else self.logits(qemb, protos),
                    params={"prototypes": protos},
                    support_emb=emb,
                    query_emb=qemb,
                )
        final = protos
        return Predictor(
            embed, lambda h: self.logits(h, final), n_way=self.n_way, params={"prototypes": final}
        ), rec.trace
