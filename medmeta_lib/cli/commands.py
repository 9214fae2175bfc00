"""The bodies of the ``medmeta`` sub-commands (``COMMANDS``); :mod:`medmeta_lib.cli.program` parses the arguments.

Each command takes the parsed ``argparse.Namespace`` and returns the exit status. Heavy imports happen inside
the commands, so ``medmeta --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

__all__ = ["COMMANDS"]


def _cmd_run(a: argparse.Namespace) -> int:
    from medmeta_lib.pipeline import ParameterError, PipelineError, parse_overrides, run_pipeline

    overrides: dict = {}
    try:
        if a.params:
            loaded = yaml.safe_load(Path(a.params).read_text())
            if not isinstance(loaded, dict):
                raise ParameterError(f"{a.params}: expected a YAML mapping of name: value")
            for k, v in loaded.items():
                if isinstance(v, dict) and k in {"01", "02", "03", "04"}:
                    overrides.update({f"{k}.{n}": x for n, x in v.items()})
                else:
                    overrides[str(k)] = v
        overrides.update(parse_overrides(a.param or []))
        run_pipeline(
            out=a.out,
            overrides=overrides,
            smoke=a.smoke,
            only=a.only,
            from_=a.from_,
            force=a.force,
            progress=not a.no_progress,
            cell_timeout=a.cell_timeout or None,
        )
    except ParameterError as e:
        print(f"medmeta run: parameter error: {e}", file=sys.stderr)
        return 2
    except PipelineError as e:
        print(f"medmeta run: FAILED: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_lab(a: argparse.Namespace) -> int:
    from medmeta_lib.config import PROJECT_ROOT

    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={PROJECT_ROOT / 'notebooks'}", f"--port={a.port}"]
    if a.allow_root:
        cmd.append("--allow-root")
    return subprocess.call(cmd)


def _cmd_data(a: argparse.Namespace) -> int:
    from medmeta_lib.data import load_collection

    if a.data_cmd == "list":
        from medmeta_lib.data.medmnist import MEDMNIST_DATASETS

        for name, info in MEDMNIST_DATASETS.items():
            print(f"{name:16s} {info.licence:12s} {len(info.label_names):3d} classes  {info.description}")
        return 0
    if a.data_cmd == "download":
        from medmeta_lib.data.medmnist import download_medmnist

        path = download_medmnist(a.name, size=a.size)
        print(f"saved {path}")
        return 0
    if a.data_cmd == "info":
        col = load_collection(a.source, image_size=a.image_size, split=a.split)
        print(json.dumps(col.summary(), indent=2))
        return 0
    return 2


def _synth_kwargs(a: argparse.Namespace) -> dict:
    """MedSynth's size and taxonomy from the command line (nothing for other sources)."""
    if a.data != "synthetic":
        return {}
    kw = {"n_per_class_site": a.n_per_class_site} if a.n_per_class_site else {}
    return kw | {"taxonomy": a.taxonomy}


def _load_pair(a: argparse.Namespace, test_split: str = "test") -> tuple:
    from medmeta_lib.data import load_collection

    kw = _synth_kwargs(a)
    train = load_collection(a.data, image_size=a.image_size, split="train", seed=a.seed, **kw)
    test = load_collection(a.data, image_size=a.image_size, split=test_split, seed=a.seed, **kw)
    return train, test


def _split(a: argparse.Namespace, train, test, k_shot: int, val=None):
    from medmeta_lib.studies.experiment_split import make_split

    held = [s for s in (a.held_out_site or "").split(",") if s]
    return make_split(
        train,
        test,
        val=val,
        split=a.protocol,
        n_way=a.n_way,
        k_shot=k_shot,
        q_query=a.q_query,
        held_out_sites=held,
        exclude_modalities=[m for m in (getattr(a, "exclude_modalities", "") or "").split(",") if m],
        seed=a.seed,
    )


def _backbone_kwargs(a: argparse.Namespace) -> dict:
    return {"hidden": a.hidden} if a.hidden is not None else {}


def _distributed(a: argparse.Namespace, body: Callable[[argparse.Namespace, int], int]) -> int:
    """Run ``body(a, rank)`` in the process group torchrun describes (one process without torchrun)."""
    from medmeta_lib.training.distributed import distributed_session, exit_failed_session

    world = 1
    try:
        with distributed_session(timeout_s=a.dist_timeout) as (rank, world):
            return body(a, rank)
    except RuntimeError as e:  # no rendezvous, a rank died: the message says what to do
        print(f"medmeta {a.cmd}: error: {e}", file=sys.stderr)
        if world > 1:  # the group was joined and has been left: exit now, not through a teardown that may abort
            exit_failed_session(1)
        return 1


@contextmanager
def _named_by_flags(config: str, renamed: Mapping[str, str]) -> Iterator[None]:
    """Re-raise a config's ``ValueError`` naming the command-line flag instead of the config's field.

    ``MetaTrainConfig.meta_batch`` becomes ``--meta-batch``, unless ``renamed`` names another flag for the field
    (``{"augment_preset": "--augment"}``).
    """
    try:
        yield
    except ValueError as e:

        def flag(m: re.Match[str]) -> str:
            return renamed.get(m.group(1), "--" + m.group(1).replace("_", "-")) + " "

        raise ValueError(re.sub(rf"\b{config}\.(\w+) ", flag, str(e))) from e


def _meta_config(a: argparse.Namespace) -> Any:
    """``MetaTrainConfig`` from the flags; an invalid value is named by its flag."""
    from medmeta_lib.training.meta_training import MetaTrainConfig

    with _named_by_flags("MetaTrainConfig", {"checkpoint_every": "--val-every"}):
        return MetaTrainConfig(
            steps=a.steps,
            meta_batch=a.meta_batch,
            lr=a.lr,
            val_every=a.val_every,
            checkpoint_every=a.val_every,
            seed=a.seed,
        )


def _simclr_config(a: argparse.Namespace) -> Any:
    """``SimCLRConfig`` from the flags; an invalid value is named by its flag."""
    from medmeta_lib.ssl.simclr_config import SimCLRConfig

    with _named_by_flags("SimCLRConfig", {"augment_preset": "--augment"}):
        return SimCLRConfig(
            epochs=a.epochs,
            batch_size=a.batch_size,
            temperature=a.temperature,
            seed=a.seed,
            site_invariance=a.site_invariance or a.site_views == "scanner_shift",
            site_views=a.site_views,
            augment_preset=a.augment,
            max_steps=a.max_steps,
        )


def _cmd_meta_train(a: argparse.Namespace) -> int:
    return _distributed(a, _meta_train)


def _meta_train(a: argparse.Namespace, rank: int) -> int:
    from medmeta_lib.studies.experiment import train_learners

    cfg = _meta_config(a)  # before the data: a bad flag fails at once
    train, val = _load_pair(a, "val")
    sp = _split(a, train, val, a.k_shot, val=val)  # meta-training never tests: the val split validates
    if rank == 0:
        print(f"[medmeta] {sp.description}")
    lkw = {a.learner: {"inner_steps": a.inner_steps} if a.inner_steps is not None else {}}
    if a.transductive:
        lkw[a.learner]["transductive"] = True
    res = train_learners(
        [a.learner],
        sp,
        backbone=a.backbone,
        backbone_kwargs=_backbone_kwargs(a),
        encoder=a.encoder,
        learner_kwargs=lkw,
        config=cfg,
        val_episodes=a.val_episodes,
        out_dir=a.out,
        progress=not a.no_progress,
    )[a.learner]
    if rank != 0:
        return 0
    print(
        json.dumps(
            {
                "learner": a.learner,
                "best_step": res.best_step,
                "best_val_acc": res.best_val_acc,
                "last_checkpoint": str(res.last_checkpoint),
                "best_checkpoint": str(res.best_checkpoint),
                "seconds": round(res.seconds, 1),
            },
            indent=2,
        )
    )
    return 0


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from medmeta_lib.cli.evaluate import evaluate_command

    return evaluate_command(a, load_pair=_load_pair, make_split=_split)


def _cmd_pretrain(a: argparse.Namespace) -> int:
    return _distributed(a, _pretrain)


def _pretrain(a: argparse.Namespace, rank: int) -> int:
    from medmeta_lib.data import load_collection
    from medmeta_lib.ssl.simclr import pretrain_simclr

    cfg = _simclr_config(a)  # before the data: a bad flag fails at once
    kw = _synth_kwargs(a)
    col = load_collection(a.data, image_size=a.image_size, split="train", seed=a.seed, **kw)
    res = pretrain_simclr(
        col,
        backbone=a.backbone,
        backbone_kwargs=_backbone_kwargs(a),
        config=cfg,
        out=Path(a.out),
        progress=not a.no_progress,
    )
    if rank == 0:
        print(f"encoder checkpoint: {res.checkpoint}; final loss {res.history[-1]['loss']:.4f}")
    return 0


def _cmd_docs_params(a: argparse.Namespace) -> int:
    from medmeta_lib.config import PROJECT_ROOT
    from medmeta_lib.pipeline.runner import parameters_markdown
    from medmeta_lib.runio import atomic_write_text

    table = parameters_markdown()
    if not a.write:
        print(table)
        return 0
    readme = PROJECT_ROOT / "README.md"
    text = readme.read_text()
    begin, end = "<!-- params:begin -->", "<!-- params:end -->"
    if begin not in text or end not in text:
        raise ValueError(f"{readme}: markers {begin} / {end} not found")
    head, rest = text.split(begin, 1)
    atomic_write_text(readme, f"{head}{begin}\n{table}\n{end}{rest.split(end, 1)[1]}")
    print(f"updated {readme}")
    return 0


#: sub-command name → its body; ``medmeta fewshot`` lives in :mod:`medmeta_lib.cli.fewshot`
COMMANDS: Mapping[str, Callable[[argparse.Namespace], int]] = {
    "run": _cmd_run,
    "lab": _cmd_lab,
    "data": _cmd_data,
    "pretrain": _cmd_pretrain,
    "meta-train": _cmd_meta_train,
    "evaluate": _cmd_evaluate,
    "docs-params": _cmd_docs_params,
}
