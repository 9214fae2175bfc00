"""A network that writes a network: a weight generator, trained contrastively, produces each task's classifier.

The first network (the backbone ``f_θ``) embeds images. The **second network** (:class:`WeightGenerator`,
``g_φ``) reads a task's support embeddings and *writes the parameters* of the first network's task
head: one weight vector ``w_c`` and one bias ``b_c`` per class. A query is classified by
``τ · cos(f_θ(x), w_c) + b_c``. Nothing is fitted per task by gradient descent: adapting to a new task
is one forward pass of ``g_φ`` (Gidaris & Komodakis 2018; Qiao et al. 2018; the set-to-set step follows
FEAT, Ye et al. 2020).

The generator is permutation-invariant where it must be: within a class it averages the L2-normalised
support embeddings (the order of the support images does not matter, DeepSets-style), refines each
class summary with a residual MLP, and lets the classes of the task look at each other through one
self-attention layer without positional encodings, so permuting the episode's labels permutes the
generated rows. Both residual branches start at zero, so an untrained generator writes the class means.

**Training is contrastive.** For each query the generated weights are the candidates: its own class's
``w_c`` is the positive, the other classes' are the negatives, scored by a temperature-scaled cosine —
the InfoNCE loss, which over a meta-batch is the outer objective ``L(θ, φ) = (1/T) Σ_i L_i(θ, φ)``
(optionally plus a supervised-contrastive term over the support and query embeddings). The backbone
can start from a notebook-02 SimCLR encoder and be trained jointly or frozen (``freeze_backbone``).

**Optional refinement** (LEO-style, Rusu et al. 2019): ``refine_steps`` gradient steps on the support
loss starting from the generated parameters, so one learner shows "generated" and "generated, then
adapted". ``generator="identity"`` writes the raw class means with zero biases: the cosine-prototype
classifier, exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from medmeta_lib.data.episodes import Episode
from medmeta_lib.learners.base import Learner, Predictor, check_int, check_positive
from medmeta_lib.learners.protonet import prototypes
from medmeta_lib.learners.registry import register_learner
from medmeta_lib.learners.trace import AdaptationTrace, TraceRecorder

__all__ = ["GENERATORS", "WeightGen", "WeightGenerator", "cosine_logits", "supervised_contrastive_loss"]

GENERATORS = ("learned", "identity")


def cosine_logits(emb: Tensor, weight: Tensor, bias: Tensor, scale: Tensor | float) -> Tensor:
    """``scale · cos(emb_i, weight_c) + bias_c`` → ``(B, N)``.

    Example:
        >>> cosine_logits(torch.tensor([[1.0, 0.0]]), torch.eye(2), torch.zeros(2), 10.0)
        tensor([[10.,  0.]])
    """
    return scale * F.normalize(emb, dim=-1) @ F.normalize(weight, dim=-1).T + bias


def supervised_contrastive_loss(emb: Tensor, y: Tensor, temperature: float = 0.1) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) of embeddings ``(B, D)`` with labels ``(B,)``.

    Each embedding's positives are the other embeddings of its class; every other embedding is a
    negative. Anchors without a positive are skipped.

    Example:
        >>> e = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        >>> float(supervised_contrastive_loss(e, torch.tensor([0, 0, 1, 1]))) < 0.1
        True
    """
    z = F.normalize(emb, dim=-1)
    sim = z @ z.T / temperature
    eye = torch.eye(len(y), dtype=torch.bool, device=emb.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (y[:, None] == y[None, :]) & ~eye
    has = pos.any(1)
    if not bool(has.any()):
        return emb.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(1) / pos.sum(1).clamp_min(1))
    return per_anchor[has].mean()


class WeightGenerator(nn.Module):
    """The second network: support embeddings of one task → class weights ``(N, D)`` and biases ``(N,)``.

    Args:
        dim: embedding size ``D``.
        hidden: hidden size of the per-class MLP and of the attention projections.

    Example:
        >>> g = WeightGenerator(8)
        >>> w, b = g(torch.rand(6, 8), torch.tensor([0, 0, 1, 1, 2, 2]), 3)
        >>> w.shape, b.shape
        (torch.Size([3, 8]), torch.Size([3]))
    """

    def __init__(self, dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.dim = check_int("dim", dim, 1)
        hidden = check_int("hidden", hidden, 1)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.q = nn.Linear(dim, hidden, bias=False)
        self.k = nn.Linear(dim, hidden, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.bias_head = nn.Linear(dim, 1)
        self.gate = nn.Parameter(torch.zeros(()))  # attention branch off at the start
        out: nn.Linear = self.mlp[2]  # type: ignore[assignment]
        for layer in (out, self.bias_head):  # residual branches start at zero: writes the class means
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, support_emb: Tensor, support_y: Tensor, n_way: int) -> tuple[Tensor, Tensor]:
        """Generated ``(weights (N, D), biases (N,))`` from the support embeddings and labels."""
        z = F.normalize(support_emb, dim=-1)
        onehot = F.one_hot(support_y, n_way).to(z.dtype)
        means = (onehot.T @ z) / onehot.sum(0).clamp_min(1).unsqueeze(1)  # order-invariant within a class
        u = means + self.mlp(means)
        att = torch.softmax(self.q(u) @ self.k(u).T / math.sqrt(self.q.out_features), dim=-1)
        w = u + self.gate * (att @ self.v(u))  # classes seen together; equivariant to their order
        return w, self.bias_head(w).squeeze(-1)


@register_learner("weightgen")
class WeightGen(Learner):
    """Weight-generating learner: a second network writes each task's classifier (see the module docstring).

    Args:
        backbone: feature extractor with ``out_features`` (the first network).
        n_way: classes per task (any number works: the generator is permutation-invariant).
        generator: ``"learned"`` (the second network) or ``"identity"`` (class means: the cosine-prototype
            classifier).
        hidden: generator hidden size.
        scale: initial cosine temperature ``τ`` (learned, stored as its logarithm).
        supcon_weight: weight of the supervised-contrastive term over support and query embeddings (0: off).
        freeze_backbone: keep the backbone fixed (e.g. a SimCLR encoder) and train the generator only.
        refine_steps: gradient steps on the support loss from the generated head at test time (0: none).
        refine_lr: their step size.

    Example:
        >>> from medmeta_lib.models import create_backbone
        >>> wg = WeightGen(create_backbone("conv4", hidden=8), n_way=2)
        >>> pred, trace = wg.adapt(torch.rand(4, 1, 28, 28), torch.tensor([0, 0, 1, 1]))
        >>> pred(torch.rand(3, 1, 28, 28)).shape, trace.steps
        (torch.Size([3, 2]), [0, 1])
    """

    name = "weightgen"

    def __init__(
        self,
        backbone: nn.Module,
        *,
        n_way: int,
        generator: str = "learned",
        hidden: int = 128,
        scale: float = 10.0,
        supcon_weight: float = 0.0,
        freeze_backbone: bool = False,
        refine_steps: int = 0,
        refine_lr: float = 0.1,
    ) -> None:
        super().__init__(backbone, n_way=n_way)
        if generator not in GENERATORS:
            raise ValueError(f"weightgen: generator must be one of {GENERATORS}, got {generator!r}")
        if isinstance(supcon_weight, bool) or not isinstance(supcon_weight, (int, float)) or not supcon_weight >= 0:
            raise ValueError(f"weightgen: supcon_weight must be a number >= 0, got {supcon_weight!r}")
        if not isinstance(freeze_backbone, bool):
            raise ValueError(f"weightgen: freeze_backbone must be True or False, got {freeze_backbone!r}")
        self.generator_kind = generator
        self.generator = WeightGenerator(self.feature_dim, hidden) if generator == "learned" else None
        self.log_scale = nn.Parameter(torch.tensor(math.log(check_positive("scale", scale))))
        self.supcon_weight = float(supcon_weight)
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        self.refine_steps = check_int("refine_steps", refine_steps, 0)
        self.refine_lr = check_positive("refine_lr", refine_lr)

    def generate(self, support_emb: Tensor, support_y: Tensor) -> tuple[Tensor, Tensor]:
        """The second network's output for one task: ``(weights (N, D), biases (N,))``.

        Example:
            >>> w, b = learner.generate(learner.backbone(sx), sy)  # doctest: +SKIP
        """
        if self.generator is None:  # identity: raw class means, no bias (the cosine-prototype classifier)
            w = prototypes(support_emb, support_y, self.n_way)
            return w, torch.zeros(self.n_way, dtype=w.dtype, device=w.device)
        return self.generator(support_emb, support_y, self.n_way)

    def task_loss(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """InfoNCE of each query against the generated class weights (+ optional supervised contrastive)."""
        if self.freeze_backbone:
            with torch.no_grad():
                support, query = self.embed_pair(self.backbone, episode.support_x, episode.query_x)
        else:
            support, query = self.embed_pair(self.backbone, episode.support_x, episode.query_x)
        w, b = self.generate(support, episode.support_y)
        logits = cosine_logits(query, w, b, self.log_scale.exp())
        loss = F.cross_entropy(logits, episode.query_y)
        if self.supcon_weight > 0:
            emb = torch.cat([support, query])
            loss = loss + self.supcon_weight * supervised_contrastive_loss(
                emb, torch.cat([episode.support_y, episode.query_y])
            )
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
        """Generate the head in one forward pass, then refine it (``steps - 1`` gradient steps, if any).

        Trace steps: 0 = no head yet (all-zero weights, a uniform prediction), 1 = generated, ``s ≥ 2`` =
        after ``s - 1`` refinement steps. ``steps=None`` means ``1 + refine_steps``. The trace's ``params``
        hold ``{"weights", "bias", "prototypes"}`` per step (prototypes: the support class means).
        """
        self._check_adapt_args(support_x, support_y, query_x, query_y)
        steps = self._check_steps(steps, 1 + self.refine_steps)
        body = {n: p.detach() for n, p in self.backbone.named_parameters()}
        backbone = self.backbone
        embed, emb = self.frozen_embedder(lambda x: functional_call(backbone, body, (x,)), support_x)
        with torch.no_grad():
            qemb = None if query_x is None else embed(query_x)
            protos = prototypes(emb, support_y, self.n_way)
            scale = self.log_scale.detach().exp()
            gen_w, gen_b = (t.detach() for t in self.generate(emb, support_y))
        rec = TraceRecorder(self.name, query_y, record_params=record_params, record_embeddings=record_embeddings)
        w, b = torch.zeros_like(gen_w), torch.zeros_like(gen_b)
        for step in range(steps + 1):
            if step == 1:
                w, b = gen_w.clone(), gen_b.clone()
            elif step >= 2:
                w, b = self._refine_step(w, b, emb, support_y, scale)
            with torch.no_grad():
                q_logits = None if qemb is None else cosine_logits(qemb, w, b, scale)
                rec.add(
                    step,
                    cosine_logits(emb, w, b, scale),
                    support_y,
                    query_logits=q_logits,
                    params={"weights": w, "bias": b, "prototypes": protos},
                    support_emb=emb,
                    query_emb=qemb,
                )
        fw, fb = w.detach(), b.detach()
        params = {"weights": fw, "bias": fb, "generated_weights": gen_w, "prototypes": protos}
        return Predictor(embed, lambda h: cosine_logits(h, fw, fb, scale), n_way=self.n_way, params=params), rec.trace

    @torch.enable_grad()
    def _refine_step(self, w: Tensor, b: Tensor, emb: Tensor, y: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
        w, b = w.detach().requires_grad_(), b.detach().requires_grad_()
        loss = F.cross_entropy(cosine_logits(emb, w, b, scale), y)
        gw, gb = torch.autograd.grad(loss, (w, b))
        return (w - self.refine_lr * gw).detach(), (b - self.refine_lr * gb).detach()

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"n_way={self.n_way}, generator={self.generator_kind!r}, supcon_weight={self.supcon_weight}, "
            f"freeze_backbone={self.freeze_backbone}, refine_steps={self.refine_steps}"
        )
