"""``medmeta`` command line: run the notebook pipeline, open the lab, manage data, train, evaluate."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

__all__ = ["build_parser", "main"]


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


def _cmd_docs_params(a: argparse.Namespace) -> int:
    from medmeta_lib.config import PROJECT_ROOT
    from medmeta_lib.pipeline import parameters_markdown

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
    readme.write_text(f"{head}{begin}\n{table}\n{end}{rest.split(end, 1)[1]}")
    print(f"updated {readme}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``medmeta`` argument parser (sub-commands: run, lab, data, pretrain, meta-train, evaluate)."""
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
    r.set_defaults(func=_cmd_run)

    lab = sub.add_parser("lab", help="start JupyterLab on notebooks/")
    lab.add_argument("--port", type=int, default=8888)
    lab.add_argument("--allow-root", action="store_true")
    lab.set_defaults(func=_cmd_lab)

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
    d.set_defaults(func=_cmd_data)

    dp = sub.add_parser("docs-params", help="print (or --write into README.md) the notebook parameter table")
    dp.add_argument("--write", action="store_true")
    dp.set_defaults(func=_cmd_docs_params)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``medmeta`` command.

    Example:
        >>> main(["data", "info", "synthetic"])  # doctest: +SKIP
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError) as e:
        print(f"medmeta {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
