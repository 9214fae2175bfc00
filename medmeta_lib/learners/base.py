"""The learner interface: meta-training objective, test-time adaptation and its trace.

A *learner* owns a backbone (the feature extractor, ``θ``) and knows how to

* compute the outer objective ``L(θ) = (1/T) Σ_i L_i(θ)`` over a meta-batch of tasks
  (:meth:`Learner.meta_loss`; ``L_i`` is the query loss after adapting to task ``i``'s support),
* take one optimiser step on it (:meth:`Learner.meta_step`), and
* adapt to a new task at test time (:meth:`Learner.adapt`), returning a :class:`Predictor` and an
  :class:`AdaptationTrace` (per-step support/query loss and accuracy, optionally the fast weights,
  embeddings and query probabilities) that the adaptation-visualisation notebook draws.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medmeta_lib.data.episodes import Episode
from medmeta_lib.learners.trace import AdaptationTrace, accuracy
from medmeta_lib.models.task_norm import TaskBatchNorm2d, context_forward, frozen_forward

__all__ = ["Learner", "Predictor", "check_int", "check_positive", "parameter_state"]


class Predictor:
    """An adapted model for one task: ``logits = classify(embed(x))``.

    Predictors hold detached weights; calling them never changes the learner. They do not switch
    off autograd, so gradients with respect to the *input* (saliency maps) are available.

    Args:
        embed_fn: images ``(B, C, H, W)`` → features ``(B, D)``.
        classify_fn: features → logits ``(B, n_way)``.
        n_way: number of classes.
        params: the adapted weights (detached), for inspection.

    Example:
        >>> p = Predictor(lambda x: x.flatten(1), lambda h: h[:, :2], n_way=2)
        >>> p(torch.zeros(3, 1, 2, 2)).shape
        torch.Size([3, 2])
    """

    def __init__(
        self,
        embed_fn: Callable[[Tensor], Tensor],
        classify_fn: Callable[[Tensor], Tensor],
        *,
        n_way: int,
        params: Mapping[str, Tensor] | None = None,
    ) -> None:
        self._embed = embed_fn
        self._classify = classify_fn
        self.n_way = n_way
        self.params: dict[str, Tensor] = dict(params or {})

    def __call__(self, x: Tensor) -> Tensor:
        """Logits ``(B, n_way)`` for images ``x``."""
        return self._classify(self._embed(x))

    def embed(self, x: Tensor) -> Tensor:
        """Features used by the head (or the prototypes) for images ``x``."""
        return self._embed(x)

    def classify(self, features: Tensor) -> Tensor:
        """Logits from features (e.g. for decision maps drawn in embedding space)."""
        return self._classify(features)

    def predict_proba(self, x: Tensor) -> Tensor:
        """Class probabilities ``(B, n_way)`` without building a graph."""
        with torch.no_grad():
            return self(x).softmax(-1)


def check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as int if it is an integer ``>= minimum`` (numpy integers too), else raise ``ValueError``.

    Example:
        >>> check_int("steps", 3, 0)
        3
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_positive(name: str, value: Any) -> float:
    """Return ``value`` as float if it is a finite number ``> 0``, else raise ``ValueError``.

    Example:
        >>> check_positive("inner_lr", 0.01), check_positive("scale", 10)
        (0.01, 10.0)
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or value != value:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")
    if value == float("inf"):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def parameter_state(module: nn.Module) -> tuple[int, ...]:
    """The identity and in-place version of every parameter of ``module``: a key for features computed with it.

    It changes after an optimiser step, a ``load_state_dict`` or a replaced parameter, so features stored
    under it go stale together with the weights.

    Example:
        >>> net = nn.Linear(2, 2)
        >>> before = parameter_state(net)
        >>> with torch.no_grad():
        ...     _ = net.weight.mul_(2.0)
        >>> parameter_state(net) == before
        False
    """
    return tuple(v for p in module.parameters() for v in (id(p), p._version))


class Learner(nn.Module):
    """Base class of every learner (see the module docstring for the protocol).

    Subclasses implement :meth:`task_loss` (episodic learners) or override :meth:`meta_loss`,
    and :meth:`adapt`.

    Inductive by default: batch-norm layers normalise the queries (and every image a
    :class:`Predictor` is given) with the statistics of the task's support set, in meta-training and
    at test time (MetaBN, Bronskill et al. 2020), so a prediction depends on the support set and the
    image alone. ``transductive = True`` restores per-batch statistics for the queries (the usual
    MAML setting; a prediction then depends on the other images of its batch).

    Args:
        backbone: feature extractor ``(B, C, H, W) → (B, D)`` with an ``out_features`` attribute.
        n_way: classes per task.

    Example:
        >>> from medmeta_lib.learners import create_learner
        >>> from medmeta_lib.models import create_backbone
        >>> learner = create_learner("protonet", create_backbone("conv4", hidden=8), n_way=2)
        >>> predictor, trace = learner.adapt(torch.rand(4, 1, 28, 28), torch.tensor([0, 0, 1, 1]))
        >>> predictor(torch.rand(3, 1, 28, 28)).shape, trace.steps
        (torch.Size([3, 2]), [0, 1])
    """

    name: ClassVar[str] = "learner"
    meta_trainable: ClassVar[bool] = True
    backbone: nn.Module

    def __init__(self, backbone: nn.Module, *, n_way: int) -> None:
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise ValueError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
        out = getattr(backbone, "out_features", None)
        if isinstance(out, bool) or not isinstance(out, int) or out < 1:
            raise ValueError(
                "backbone must have an integer attribute 'out_features' (the feature size); "
                "build it with medmeta_lib.models.create_backbone or set it on your module"
            )
        plain = [
            n
            for n, m in backbone.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and not m.track_running_stats
            and not isinstance(m, TaskBatchNorm2d)
        ]
        if plain:
            raise ValueError(
                f"backbone layer '{plain[0]}' is a BatchNorm without running statistics that cannot use a task's "
                "support statistics, so predictions would depend on their batch; build the backbone with "
                "create_backbone(..., norm='batch') or medmeta_lib.models.replace_norm(module, 'batch')"
            )
        self.backbone = backbone
        self.feature_dim = out
        self.n_way = check_int("n_way", n_way, 2)
        self._transductive = False

    # ----------------------------------------------------------------- inductive / transductive
    @property
    def transductive(self) -> bool:
        """Normalise queries with their own batch's statistics (``True``) or the support set's (default)."""
        return self._transductive

    @transductive.setter
    def transductive(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"transductive must be True or False, got {value!r}")
        self._transductive = value

    def embed_pair(
        self, embed: Callable[[Tensor], Tensor], support_x: Tensor, query_x: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Support and query embeddings (differentiable), queries normalised as :attr:`transductive` says."""
        if self._transductive:
            return embed(support_x), embed(query_x)
        return context_forward(embed, support_x, query_x)

    def frozen_embedder(
        self, embed: Callable[[Tensor], Tensor], support_x: Tensor
    ) -> tuple[Callable[[Tensor], Tensor], Tensor]:
        """``(embed_fn, support_embedding)`` for a predictor: ``embed_fn`` uses the support's statistics.

        In transductive mode ``embed_fn`` is ``embed`` itself (per-batch statistics).
        """
        if self._transductive:
            with torch.no_grad():
                return embed, embed(support_x)
        return frozen_forward(embed, support_x)

    @property
    def support_free_features(self) -> bool:
        """True when the features an adapted :class:`Predictor` gives an image do not depend on the support set.

        Then ``predictor.embed(x)`` can be computed once and reused for every support set (only
        ``classify`` changes), as :func:`~medmeta_lib.evaluation.full_test_split.learner_predictor` does.
        ``False`` here (the safe default): learners that adapt the backbone, or normalise with the support's
        statistics, embed an image differently for each support set.
        """
        return False

    # ----------------------------------------------------------------- n-way handling
    @property
    def way_agnostic(self) -> bool:
        """True when no parameter's shape depends on ``n_way`` (see :meth:`set_n_way`)."""
        return True

    def set_n_way(self, n_way: int) -> None:
        """Change the number of classes per task (e.g. meta-train 5-way, evaluate 2-way).

        Raises:
            ValueError: if the learner has parameters whose shape depends on ``n_way``
                (MAML/MetaSGD/ANIL with ``head_init="learned"``).
        """
        n_way = check_int("n_way", n_way, 2)
        if n_way != self.n_way and not self.way_agnostic:
            raise ValueError(
                f"{self.name}: n_way is fixed at {self.n_way} by the learned head; "
                "use head_init='zero' to evaluate with another number of classes"
            )
        self.n_way = n_way

    def _check_labels(self, y: Tensor, what: str) -> None:
        if y.ndim != 1 or y.numel() == 0:
            raise ValueError(f"{self.name}: {what} labels must be a non-empty 1-D tensor, got shape {tuple(y.shape)}")
        present = torch.unique(y).tolist()
        if present != list(range(self.n_way)):
            raise ValueError(
                f"{self.name}: {what} labels {present} do not match n_way={self.n_way} "
                f"(expected every label 0..{self.n_way - 1}); sample {self.n_way}-way episodes "
                "or change the learner's n_way (create_learner(..., n_way=...) or set_n_way)"
            )

    def check_episode(self, episode: Episode) -> None:
        """Raise ``ValueError`` if ``episode`` does not fit this learner (n-way, labels)."""
        if episode.n_way != self.n_way:
            raise ValueError(
                f"{self.name}: episode is {episode.n_way}-way but the learner has n_way={self.n_way}; "
                f"sample {self.n_way}-way episodes or change the learner's n_way (set_n_way)"
            )
        self._check_labels(episode.support_y, "support")
        self._check_labels(episode.query_y, "query")

    def _check_steps(self, steps: int | None, default: int) -> int:
        return default if steps is None else check_int("steps", steps, 0)

    # ----------------------------------------------------------------- meta-training
    def task_loss(self, episode: Episode) -> tuple[Tensor, Tensor]:
        """Query loss ``L_i(θ)`` and query accuracy after adapting to one episode's support."""
        raise NotImplementedError

    def meta_loss(self, episodes: Sequence[Episode]) -> tuple[Tensor, dict[str, float]]:
        """The outer objective ``L(θ) = (1/T) Σ_i L_i(θ)`` over a meta-batch of episodes.

        Returns:
            The loss (differentiable w.r.t. ``self.parameters()``) and ``{"loss", "acc"}``.

        Example:
            >>> loss, stats = learner.meta_loss(episodes)  # doctest: +SKIP
            >>> loss.backward()  # doctest: +SKIP
        """
        episodes = self._check_batch(episodes)
        losses, accs = zip(*(self.task_loss(ep) for ep in episodes))
        loss = torch.stack(losses).mean()
        return loss, {"loss": float(loss.detach()), "acc": float(torch.stack(accs).mean())}

    def meta_step(self, episodes: Sequence[Episode], optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """One outer step: zero the gradients, back-propagate ``L(θ)``, step the optimiser.

        Episodic learners back-propagate task by task (same gradient as ``meta_loss``, lower
        peak memory: only one task's graph is alive at a time).

        Example:
            >>> opt = torch.optim.Adam(learner.parameters(), lr=1e-3)  # doctest: +SKIP
            >>> learner.meta_step(episodes, opt)  # doctest: +SKIP
            {'loss': 1.6, 'acc': 0.2}
        """
        if not self.meta_trainable:
            raise RuntimeError(f"{self.name} is not meta-trainable (meta_trainable=False); skip meta-training")
        optimizer.zero_grad(set_to_none=True)
        if type(self).meta_loss is not Learner.meta_loss:  # a learner with its own batch objective
            loss, stats = self.meta_loss(episodes)
            loss.backward()
        else:
            episodes = self._check_batch(episodes)
            total, acc = 0.0, 0.0
            for ep in episodes:
                li, ai = self.task_loss(ep)
                (li / len(episodes)).backward()
                total += float(li.detach())
                acc += float(ai)
            stats = {"loss": total / len(episodes), "acc": acc / len(episodes)}
        optimizer.step()
        return stats

    def _check_batch(self, episodes: Sequence[Episode]) -> list[Episode]:
        if isinstance(episodes, Episode):
            episodes = [episodes]
        episodes = list(episodes)
        if not episodes:
            raise ValueError(f"{self.name}: the meta-batch is empty; pass at least one episode")
        for ep in episodes:
            self.check_episode(ep)
        return episodes

    # ----------------------------------------------------------------- adaptation
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
        """Adapt to a new task from its support set; never changes the meta-parameters.

        Args:
            support_x: ``(N*K, C, H, W)`` support images.
            support_y: ``(N*K,)`` labels ``0 .. n_way-1``.
            steps: adaptation steps (``None``: the learner's evaluation default).
            query_x: optional query images, scored at every step in the trace.
            query_y: their labels (required with ``query_x``).
            record_params: keep the fast weights per step in the trace.
            record_embeddings: keep the embeddings per step in the trace.

        Returns:
            ``(predictor, trace)``.
        """
        raise NotImplementedError

    def _check_adapt_args(self, support_x: Tensor, support_y: Tensor, query_x: Tensor | None, query_y: Tensor | None):
        spec = getattr(self.backbone, "spec", None)
        channels = spec["kwargs"].get("in_channels") if isinstance(spec, dict) else None
        for what, x in (("support_x", support_x), ("query_x", query_x)):
            if x is not None and (x.ndim != 4 or (channels is not None and x.shape[1] != channels)):
                raise ValueError(
                    f"{self.name}: {what} must be (N, {channels or 'C'}, H, W) images for this backbone, got "
                    f"{tuple(x.shape)}; convert greyscale/RGB to the backbone's channels, or add the batch axis"
                )
        self._check_labels(support_y, "support")
        if support_x.shape[0] != support_y.shape[0]:
            raise ValueError(
                f"{self.name}: support_x has {support_x.shape[0]} images but support_y {support_y.shape[0]} labels"
            )
        if (query_x is None) != (query_y is None):
            raise ValueError(f"{self.name}: pass both query_x and query_y, or neither")
        if query_x is not None and query_y is not None and query_x.shape[0] != query_y.shape[0]:
            raise ValueError(
                f"{self.name}: query_x has {query_x.shape[0]} images but query_y {query_y.shape[0]} labels"
            )

    def evaluate_episode(self, episode: Episode, *, steps: int | None = None) -> dict[str, Any]:
        """Adapt on the episode's support and score its query set.

        Returns:
            ``{"acc": float, "loss": float, "probs": (Q, n_way) tensor on the CPU}``.

        Example:
            >>> learner.evaluate_episode(episode)["acc"]  # doctest: +SKIP
            0.84
        """
        self.check_episode(episode)
        predictor, _ = self.adapt(episode.support_x, episode.support_y, steps=steps)
        with torch.no_grad():
            logits = predictor(episode.query_x)
            loss = float(F.cross_entropy(logits, episode.query_y))
        return {
            "acc": accuracy(logits, episode.query_y),
            "loss": loss,
            "probs": logits.softmax(-1).cpu(),
        }
