"""The ``medmeta`` program: its argument parser (``build_parser``) and entry point (``main``).

The sub-commands' bodies are in :mod:`medmeta_lib.cli.commands`, :mod:`medmeta_lib.cli.fewshot` and
:mod:`medmeta_lib.cli.predict`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from medmeta_lib.cli.commands import COMMANDS
from medmeta_lib.cli.fewshot import add_fewshot_parser
from medmeta_lib.cli.predict import add_predict_parser

__all__ = ["build_parser", "main"]


def _common_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="synthetic", help="source, as load_collection takes it")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="conv4")
    p.add_argument("--n-per-class-site", type=int, default=0, help="MedSynth size (0 = its default)")
    p.add_argument(
        "--taxonomy",
        default="fine",
        choices=["coarse", "fine"],
        help="MedSynth classes: 96 findings by side and size (fine: new classes within a modality, the notebooks' "
        "default) or 30 (coarse: for the held-out-modality experiment)",
    )


def _common_tasks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, default=5)
    p.add_argument("--q-query", type=int, default=15)
    p.add_argument("--protocol", default="auto", help="auto | modality | classes | sites | none")
    p.add_argument("--held-out-site", default="", help="with --protocol sites: site name(s), comma-separated")
    p.add_argument("--encoder", default=None, help="encoder checkpoint from `medmeta pretrain` / notebook 02")
    p.add_argument(
        "--exclude-modalities",
        default="",
        help="modalities left out of meta-training (comma-separated), e.g. chest_xray to hold a chest X-ray "
        "target out at the task level",
    )
    p.add_argument(
        "--transductive",
        action="store_true",
        help="normalise queries with the statistics of their own batch (default: the support set's, inductive)",
    )


def _common_training(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hidden", type=int, default=None, help="conv4 channel width (default: the backbone's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--dist-timeout",
        type=float,
        default=None,
        help="under torchrun: seconds a rank waits for the others before failing "
        "(default $MEDMETA_DIST_TIMEOUT or 600)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``medmeta`` argument parser (sub-commands: run, lab, data, pretrain, meta-train, evaluate, fewshot, predict).

    Example:
        >>> a = build_parser().parse_args(["meta-train", "--learner", "maml", "--out", "runs/m", "--steps", "50"])
        >>> a.cmd, a.learner, a.steps, a.n_way, a.k_shot
        ('meta-train', 'maml', 50, 5, 5)
    """
    p = argparse.ArgumentParser(prog="medmeta", description="MedMeta Workbench: meta-learning for medical images")
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="execute the notebook pipeline headless with papermill")
    r.add_argument("--smoke", action="store_true", help="tiny parameters: the whole chain in a few minutes")
    r.add_argument("--params", help="YAML file of parameters (name: value, or '02': {name: value})")
    r.add_argument("-p", "--param", action="append", metavar="NAME=VALUE", help="override (NAME or 02.NAME)")
    r.add_argument("--only", action="append", metavar="KEY", help="run only this notebook (repeatable): 01, 02, ...")
    r.add_argument("--from", dest="from_", metavar="KEY", help="start at this notebook")
    r.add_argument("--out", help="run directory (default runs/<timestamp>); an existing one is resumed")
    r.add_argument("--force", action="store_true", help="re-run notebooks already completed with the same parameters")
    r.add_argument("--no-progress", action="store_true", help="no per-cell progress bar")
    r.add_argument("--cell-timeout", type=int, default=3600, help="seconds one cell may run (0: no limit)")
    r.set_defaults(func=COMMANDS["run"])

    lab = sub.add_parser("lab", help="start JupyterLab on notebooks/")
    lab.add_argument("--port", type=int, default=8888)
    lab.add_argument("--allow-root", action="store_true")
    lab.set_defaults(func=COMMANDS["lab"])

    d = sub.add_parser("data", help="list, download or inspect data sources")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    dsub.add_parser("list", help="the MedMNIST 2-D datasets and their licences")
    dl = dsub.add_parser("download", help="download a MedMNIST file into the data dir (MD5-checked)")
    dl.add_argument("name")
    dl.add_argument("--size", type=int, default=28, choices=[28, 64, 128, 224])
    info = dsub.add_parser("info", help="load a source and print its summary")
    info.add_argument("source")
    info.add_argument("--split", default="train")
    info.add_argument("--image-size", type=int, default=28)
    d.set_defaults(func=COMMANDS["data"])

    pt = sub.add_parser("pretrain", help="SimCLR contrastive pretraining of an encoder (labels unused)")
    _common_data(pt)
    pt.add_argument("--epochs", type=int, default=30)
    pt.add_argument("--batch-size", type=int, default=256)
    pt.add_argument("--temperature", type=float, default=0.2, help="NT-Xent temperature (SimCLR: 0.1-0.5)")
    pt.add_argument("--augment", default="chest_xray", help="augmentation preset")
    pt.add_argument(
        "--site-invariance",
        action="store_true",
        help="positive pairs across acquisition styles; on MedSynth the second view re-renders the patient at "
        "another site, which reads each image's class label (not label-free: see --site-views)",
    )
    pt.add_argument(
        "--site-views",
        choices=("auto", "scanner_shift"),
        default="auto",
        help="auto: MedSynth re-rendering (uses labels) or scanner shift elsewhere; scanner_shift: the label-free "
        "simulated scanner change on any data (implies --site-invariance)",
    )
    pt.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    pt.add_argument("--out", required=True, help="encoder checkpoint (.safetensors)")
    _common_training(pt)
    pt.set_defaults(func=COMMANDS["pretrain"])

    mt = sub.add_parser("meta-train", help="meta-train one learner; checkpoints in --out/<learner>/")
    _common_data(mt)
    _common_tasks(mt)
    mt.add_argument("--learner", required=True)
    mt.add_argument("--steps", type=int, default=1000)
    mt.add_argument("--meta-batch", type=int, default=4, help="episodes per step over all ranks (torchrun)")
    mt.add_argument("--inner-steps", type=int, default=None, help="inner-loop steps (MAML family, ANIL)")
    mt.add_argument("--lr", type=float, default=1e-3)
    mt.add_argument("--val-every", type=int, default=100)
    mt.add_argument("--val-episodes", type=int, default=100)
    mt.add_argument("--out", required=True)
    _common_training(mt)
    mt.set_defaults(func=COMMANDS["meta-train"])

    ev = sub.add_parser(
        "evaluate",
        help="evaluate learners on the same fixed episodes (mean ± 95%% CI), or with --full-test-split on every "
        "test image with K labelled train images per class",
    )
    _common_data(ev)
    _common_tasks(ev)
    ev.add_argument("--split", default="test", choices=["train", "val", "test"])
    ev.add_argument("--learners", required=True, help="comma-separated learner names")
    ev.add_argument("--episodes", type=int, default=600)
    ev.add_argument(
        "--full-test-split",
        action="store_true",
        help="K labelled train images per class (--k-shot), every image of --split scored, --draws label draws "
        "shared by all learners; reports ACC, balanced ACC, AUC (two classes) with draw and draw+test-image "
        "intervals, the majority-class rate and paired differences against the best learner",
    )
    ev.add_argument("--draws", type=int, default=100, help="label draws for --full-test-split")
    ev.add_argument("--checkpoint", action="append", help="meta-train checkpoint (NAME=PATH for several learners)")
    ev.add_argument("--json", help="write results as JSON here")
    ev.set_defaults(func=COMMANDS["evaluate"])

    add_fewshot_parser(sub)
    add_predict_parser(sub)

    dp = sub.add_parser("docs-params", help="print (or --write into README.md) the notebook parameter table")
    dp.add_argument("--write", action="store_true")
    dp.set_defaults(func=COMMANDS["docs-params"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medmeta`` command.

    Example:
        >>> main(["data", "info", "synthetic"])  # doctest: +SKIP
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what was typed: a results file records it
    try:
        return int(args.func(args))
    except (ValueError, OSError) as e:  # OSError covers missing files and failed downloads
        print(f"medmeta {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
