"""``medmeta evaluate``: fixed episodes, or the full-test-split protocol with both intervals.

Kept out of ``cli.py`` so that the parser stays one file and each command's body one concept.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["build_eval_learners", "evaluate_command"]


def build_eval_learners(a: argparse.Namespace, train: Any, *, n_way: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The learners named by ``--learners``: from ``--checkpoint`` (``NAME=PATH``) or built (random/encoder init).

    Returns:
        ``(learners, checkpoints)``.

    Example:
        >>> import torch
        >>> from medmeta_lib.cli.program import build_parser
        >>> from medmeta_lib.data import ImageCollection
        >>> train = ImageCollection(torch.rand(8, 1, 28, 28), torch.arange(8) % 4, tuple("abcd"))
        >>> a = build_parser().parse_args(["evaluate", "--learners", "protonet,baseline"])
        >>> learners, checkpoints = build_eval_learners(a, train, n_way=2)
        >>> sorted(learners), learners["baseline"].num_train_classes, checkpoints
        (['baseline', 'protonet'], 4, {})
    """
    from medmeta_lib.studies.experiment import learner_defaults
    from medmeta_lib.training.learner_io import build_learner, load_learner

    names = [n for n in a.learners.split(",") if n]
    if not names:
        raise ValueError("--learners names no learner; give e.g. --learners protonet,baseline")
    ckpts = dict(c.split("=", 1) if "=" in c else ("", c) for c in (a.checkpoint or []))
    if "" in ckpts and len(names) > 1:
        raise ValueError(
            f"--checkpoint {ckpts['']} names no learner, and --learners has {len(names)}; "
            f"write --checkpoint NAME=PATH (e.g. {names[0]}={ckpts['']})"
        )
    unknown = sorted(set(ckpts) - set(names) - {""})
    if unknown:
        raise ValueError(f"--checkpoint names {unknown}, which --learners ({','.join(names)}) does not list")
    learners = {}
    for name in names:
        path = ckpts.get(name) or (ckpts.get("") if len(names) == 1 else None)
        if path:
            learners[name] = load_learner(path, expect_learner=name)
        else:
            learners[name] = build_learner(
                name,
                backbone=a.backbone,
                n_way=n_way,
                in_channels=train.channels,
                encoder=a.encoder,
                learner_kwargs=learner_defaults(name, train),
                seed=a.seed,
            )
    return learners, ckpts


def _write(a: argparse.Namespace, out: dict[str, Any]) -> None:
    if a.json:
        from medmeta_lib.config import code_version
        from medmeta_lib.runio import write_metrics

        if getattr(a, "argv", None) is not None:  # the command as typed (main sets it), and the code it ran
            out = {**out, "command": "medmeta " + shlex.join(a.argv)}
        p = write_metrics(Path(a.json).parent, {**out, "code": code_version()}, name=Path(a.json).name)
        print(f"wrote {p}")


def _full_test_split(a: argparse.Namespace, train: Any, test: Any) -> int:
    from medmeta_lib.cli.fewshot import recall_text
    from medmeta_lib.evaluation.full_test_split import compare_full_test_split

    learners, ckpts = build_eval_learners(a, train, n_way=train.num_classes)
    res = compare_full_test_split(
        learners,
        train,
        test,
        k_shot=a.k_shot,
        draws=a.draws,
        seed=a.seed,
        transductive=True if a.transductive else None,
    )
    mode = "transductive" if a.transductive else "inductive"
    print(f"{test.source} {a.split}: {len(test)} images, {train.num_classes} classes, K = {a.k_shot}, {a.draws} draws")
    print(f"predictions: {mode}; ± is the 95% interval over label draws and test images")
    for name, r in res["results"].items():
        auc = f", AUC {r['auc_mean']:.3f} ± {r['auc_ci95_total']:.3f}" if "auc_mean" in r else ""
        print(
            f"{name}: ACC {r['acc_mean']:.3f} ± {r['acc_ci95_total']:.3f}, balanced ACC {r['bal_acc_mean']:.3f} ± "
            f"{r['bal_acc_ci95_total']:.3f}{auc} (draws + test images; majority class {r['majority_rate']:.3f}); "
            f"recall per class: {recall_text(r)}"
        )
    for name, d in res["paired_vs_best"].items():
        b = d["bal_acc"]
        print(f"{res['best']} − {name}: balanced ACC {b['mean']:+.3f} [{b['lo95']:+.3f}, {b['hi95']:+.3f}]")
    out = {
        "settings": {
            "protocol": "full_test_split",
            "data": a.data,
            "split": a.split,
            "k_shot": a.k_shot,
            "draws": a.draws,
            "seed": a.seed,
            "transductive": bool(a.transductive),
            "encoder": a.encoder,
            "checkpoints": ckpts,
            "test_images": len(test),
            "classes": list(test.class_names),
        },
        "learners": res["results"],
        "best": res["best"],
        "paired_vs_best": res["paired_vs_best"],
    }
    _write(a, out)
    return 0


def evaluate_command(a: argparse.Namespace, *, load_pair: Callable[..., tuple], make_split: Callable[..., Any]) -> int:
    """Run ``medmeta evaluate`` (``load_pair`` and ``make_split`` are the CLI's shared helpers).

    Example:
        >>> from medmeta_lib.cli.program import build_parser
        >>> a = build_parser().parse_args(["evaluate", "--learners", "protonet", "--episodes", "100"])
        >>> a.learners, a.episodes, a.split, a.full_test_split
        ('protonet', 100, 'test', False)
        >>> evaluate_command(a, load_pair=load_pair, make_split=make_split)  # doctest: +SKIP
    """
    train, test = load_pair(a, a.split)
    if a.full_test_split:
        return _full_test_split(a, train, test)
    from medmeta_lib.studies.experiment import evaluate_split

    sp = make_split(a, train, test, a.k_shot)
    learners, ckpts = build_eval_learners(a, train, n_way=a.n_way)
    mode = True if a.transductive else None
    results = evaluate_split(learners, sp, episodes=a.episodes, seed=a.seed + 12345, transductive=mode)
    out = {
        "settings": {
            "data": a.data,
            "split": a.split,
            "protocol": sp.description,
            "n_way": a.n_way,
            "k_shot": a.k_shot,
            "q_query": a.q_query,
            "episodes": a.episodes,
            "encoder": a.encoder,
            "checkpoints": ckpts,
            "transductive": bool(a.transductive),
        },
        "learners": {n: r.to_dict() for n, r in results.items()},
    }
    for r in results.values():
        print(r)
    _write(a, out)
    return 0
