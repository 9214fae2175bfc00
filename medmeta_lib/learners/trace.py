"""What an adaptation did, step by step: the record behind the adaptation curves and the explorer.

An :class:`AdaptationTrace` holds, for every inner step of one episode, the query probabilities, the
support and query loss and accuracy and (optionally) the embeddings, so notebook 04 and the
``AdaptationExplorer`` can replay an adaptation; :class:`TraceRecorder` builds one while a learner adapts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["AdaptationTrace", "TraceRecorder", "accuracy"]


def accuracy(logits: Tensor, y: Tensor) -> float:
    """Fraction of rows whose arg-max equals the label.

    Example:
        >>> accuracy(torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        0.5
    """
    return float((logits.argmax(-1) == y).float().mean())


@dataclass
class AdaptationTrace:
    """What happened while a learner adapted to one task.

    Index ``0`` of every list is the state *before* any adaptation; index ``s`` is after ``s``
    inner steps. Query entries are ``None`` when no query set was given to :meth:`Learner.adapt`.

    Attributes:
        steps: step numbers ``0 .. S``.
        support_loss: cross-entropy on the support set per step.
        support_acc: accuracy on the support set per step.
        query_loss: cross-entropy on the query set per step (or ``None``).
        query_acc: accuracy on the query set per step (or ``None``).
        params: fast weights per step (detached, on the CPU) when ``record_params=True``.
        support_emb: support embeddings per step when ``record_embeddings=True``.
        query_emb: query embeddings per step when ``record_embeddings=True`` and a query was given.
        query_probs: ``(Q, n_way)`` softmax over the query per step (when a query was given).
        learner: name of the learner that produced the trace.
    """

    steps: list[int] = field(default_factory=list)
    support_loss: list[float] = field(default_factory=list)
    support_acc: list[float] = field(default_factory=list)
    query_loss: list[float | None] = field(default_factory=list)
    query_acc: list[float | None] = field(default_factory=list)
    params: list[dict[str, Tensor]] | None = None
    support_emb: list[Tensor] | None = None
    query_emb: list[Tensor] | None = None
    query_probs: list[Tensor] | None = None
    learner: str = ""

    def to_dict(self, *, include_probs: bool = False) -> dict[str, Any]:
        """A JSON-friendly summary (no tensors).

        Args:
            include_probs: also include the per-step query probabilities as nested lists.

        Example:
            >>> AdaptationTrace(steps=[0], support_loss=[0.7], support_acc=[0.5],
            ...                 query_loss=[None], query_acc=[None]).to_dict()["steps"]
            [0]
        """
        out: dict[str, Any] = {
            "learner": self.learner,
            "steps": list(self.steps),
            "support_loss": list(self.support_loss),
            "support_acc": list(self.support_acc),
            "query_loss": list(self.query_loss),
            "query_acc": list(self.query_acc),
            "recorded_params": self.params is not None,
            "recorded_embeddings": self.support_emb is not None,
        }
        if include_probs and self.query_probs is not None:
            out["query_probs"] = [p.tolist() for p in self.query_probs]
        return out


class TraceRecorder:
    """Fill an :class:`AdaptationTrace` step by step (shared by all learners).

    Args:
        learner: name stored in the trace.
        query_y: query labels, or ``None`` when no query set is scored.
        record_params: keep a detached CPU copy of the fast weights per step.
        record_embeddings: keep the support (and query) embeddings per step.
    """

    def __init__(self, learner: str, query_y: Tensor | None, *, record_params: bool, record_embeddings: bool) -> None:
        self.query_y = query_y
        self.record_params = record_params
        self.record_embeddings = record_embeddings
        self.trace = AdaptationTrace(
            learner=learner,
            params=[] if record_params else None,
            support_emb=[] if record_embeddings else None,
            query_emb=[] if record_embeddings and query_y is not None else None,
            query_probs=[] if query_y is not None else None,
        )

    def add(
        self,
        step: int,
        support_logits: Tensor,
        support_y: Tensor,
        *,
        query_logits: Tensor | None = None,
        params: Mapping[str, Tensor] | None = None,
        support_emb: Tensor | None = None,
        query_emb: Tensor | None = None,
    ) -> None:
        """Record one step from the logits (and optionally weights/embeddings) at that step."""
        t = self.trace
        with torch.no_grad():
            t.steps.append(step)
            t.support_loss.append(float(F.cross_entropy(support_logits, support_y)))
            t.support_acc.append(accuracy(support_logits, support_y))
            if self.query_y is not None and query_logits is not None:
                t.query_loss.append(float(F.cross_entropy(query_logits, self.query_y)))
                t.query_acc.append(accuracy(query_logits, self.query_y))
                assert t.query_probs is not None
                t.query_probs.append(query_logits.detach().softmax(-1).cpu())
            else:
                t.query_loss.append(None)
                t.query_acc.append(None)
            if t.params is not None and params is not None:
                t.params.append({k: v.detach().cpu().clone() for k, v in params.items()})
            if t.support_emb is not None and support_emb is not None:
                t.support_emb.append(support_emb.detach().cpu())
            if t.query_emb is not None and query_emb is not None:
                t.query_emb.append(query_emb.detach().cpu())
