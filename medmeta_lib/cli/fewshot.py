"""``medmeta fewshot``: the few-shot recipe on a user's own dataset, beside the baselines it should beat.

The recipe is SimCLR on the dataset's unlabelled train images, then ProtoNets meta-trained on MedSynth from
that encoder with three seeds, their probabilities averaged and then averaged 1:1 with a logistic probe on the
encoder's features, within a CPU budget (:mod:`medmeta_lib.studies.fewshot`).
"""

from __future__ import annotations

import argparse
import shlex
import time
import warnings
from pathlib import Path
from typing import Any

__all__ = ["add_fewshot_parser", "fewshot_command", "fewshot_command_line", "fewshot_table", "recall_text"]


def add_fewshot_parser(sub: Any) -> None:
    """Register ``medmeta fewshot`` on the sub-command parsers ``sub``.

    Example:
        >>> sub = argparse.ArgumentParser().add_subparsers()
        >>> add_fewshot_parser(sub)
        >>> a = sub.choices["fewshot"].parse_args(["--data", "my.npz", "--k-shot", "5"])
        >>> a.k_shot, a.draws, a.head, a.func is fewshot_command
        (5, 100, 'cl2_probe', True)
    """
    fs = sub.add_parser(
        "fewshot",
        help="few-shot classification of your own dataset: SimCLR on its unlabelled train images, ProtoNets "
        "meta-trained on MedSynth from that encoder (an ensemble over seeds) mixed with a probe on the encoder, "
        "K labelled images per class; every test image scored, beside "
        "the encoder's linear probe, raw pixels, a random-init encoder and scratch",
    )
    fs.add_argument("--data", required=True, help="a MedMNIST-format .npz, a class folder or a CSV manifest")
    fs.add_argument("--k-shot", type=int, required=True, help="labelled train images per class")
    fs.add_argument("--draws", type=int, default=100, help="label draws, the same for every method")
    fs.add_argument("--out", default=None, help="output folder (default runs/fewshot-<time>)")
    fs.add_argument("--image-size", type=int, default=28)
    fs.add_argument("--epochs", type=int, default=60, help="SimCLR epochs over the unlabelled train images")
    fs.add_argument("--temperature", type=float, default=0.2, help="SimCLR's NT-Xent temperature")
    fs.add_argument(
        "--augment", default="generic", help="SimCLR view preset: generic, chest_xray, dermoscopy, fundus, histology..."
    )
    fs.add_argument(
        "--no-scanner-shift",
        action="store_true",
        help="plain SimCLR views (default: one view of each positive pair also through a simulated scanner change)",
    )
    fs.add_argument(
        "--head",
        default="cl2_probe",
        choices=["cl2_probe", "probe"],
        help="cl2_probe: centred + L2-normalised features, logistic regression (default); probe: standardised features",
    )
    fs.add_argument(
        "--meta-steps",
        type=int,
        default=300,
        help="ProtoNet meta-training steps on MedSynth (4 tasks each); 0 leaves the stage out",
    )
    fs.add_argument(
        "--meta-members",
        type=int,
        default=3,
        help="ProtoNets meta-trained with seeds SEED, SEED+1, ...; the recipe averages their probabilities "
        "(1: a single ProtoNet)",
    )
    fs.add_argument(
        "--no-mix-probe",
        action="store_true",
        help="the ProtoNets alone (default: their mean probabilities averaged 1:1 with a logistic probe, C = 0.1, "
        "on the standardised features of the SimCLR encoder)",
    )
    fs.add_argument(
        "--tta-views",
        type=int,
        default=8,
        help="the mixed probe's features averaged over each image and this many fixed augmented views (the same "
        "seeded transforms for every image); 0: plain features",
    )
    fs.add_argument(
        "--self-train",
        type=int,
        default=None,
        help="pseudo-labels per class from the unlabelled train images, one refit of the recipe (default: 100 at "
        "K <= 2, none above, as chosen on validation); 0: none",
    )
    fs.add_argument("--device", default="cpu", help="where SimCLR trains: cpu, cuda or auto")
    fs.add_argument("--no-scratch", action="store_true", help="leave out the scratch baseline (the slowest one)")
    fs.add_argument("--seed", type=int, default=0)
    fs.set_defaults(func=fewshot_command)


#: the training stages each method's seconds include (the scoring seconds are in every row)
_STAGES = {"simclr_protonet": ("pretrain", "meta"), "simclr_probe": ("pretrain",)}


def _cell(r: dict[str, Any], metric: str) -> str:
    if r.get(f"{metric}_mean") is None:
        return "–"
    lo, hi = r.get(f"{metric}_lo95"), r.get(f"{metric}_hi95")
    band = f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else ""
    return f"{r[f'{metric}_mean']:.3f}{band}"


def recall_text(r: dict[str, Any], *, max_listed: int = 4) -> str:
    """Each class's mean recall in one method's result, as ``"name 0.825, name 0.903"`` (``"–"`` if absent).

    With more than ``max_listed`` classes only the lowest and the highest recall are named, so that a table of
    10+ classes stays readable; the JSON result always holds every class.

    Args:
        r: one method's result, with ``recall_per_class`` (class name -> ``{"mean": ...}``).
        max_listed: list every class up to this many (>= 2).

    Raises:
        ValueError: if ``max_listed`` is not an int >= 2.

    Example:
        >>> recall_text({"recall_per_class": {"normal": {"mean": 0.8251}, "pneumonia": {"mean": 0.903}}})
        'normal 0.825, pneumonia 0.903'
        >>> recall_text({"recall_per_class": {f"c{i}": {"mean": i / 10} for i in range(1, 6)}}, max_listed=4)
        'lowest c1 0.100, highest c5 0.500 (5 classes)'
    """
    if isinstance(max_listed, bool) or not isinstance(max_listed, int) or max_listed < 2:
        raise ValueError(f"max_listed must be an int >= 2, got {max_listed!r}")
    rc = {name: st["mean"] for name, st in (r.get("recall_per_class") or {}).items()}
    if len(rc) > max_listed:
        lo, hi = min(rc, key=rc.__getitem__), max(rc, key=rc.__getitem__)
        return f"lowest {lo} {rc[lo]:.3f}, highest {hi} {rc[hi]:.3f} ({len(rc)} classes)"
    return ", ".join(f"{name} {mean:.3f}" for name, mean in rc.items()) or "–"


def fewshot_table(result: dict[str, Any]) -> str:
    """The results as a Markdown table (95% intervals over label draws and test images; each class's recall).

    Example:
        >>> print(fewshot_table(fewshot_study(train, test, k_shot=10)))  # doctest: +SKIP
    """
    lines = [
        "| method | accuracy | balanced accuracy | recall per class | AUC | seconds |",
        "|---|---|---|---|---|---|",
    ]
    stage_s = {"pretrain": result["pretrain"]["seconds"], "meta": (result.get("meta_train") or {}).get("seconds", 0.0)}
    for name, r in result["results"].items():
        star = " (best)" if name == result["best"] else ""
        secs = r.get("seconds", 0.0) + sum(stage_s[s] for s in _STAGES.get(name, ()))
        cells = f"{_cell(r, 'acc')} | {_cell(r, 'bal_acc')} | {recall_text(r)} | {_cell(r, 'auc')}"
        lines.append(f"| {name}{star} | {cells} | {secs:.0f} |")
    lines.append(f"| majority class | {result['majority_rate']:.3f} | {1 / len(result['classes']):.3f} | | | |")
    return "\n".join(lines)


def fewshot_command_line(a: argparse.Namespace, *, self_train: int | None = None) -> str:
    """The ``medmeta fewshot`` command that repeats the run ``a`` describes, every flag but ``--out`` spelt out.

    The flags come from the parser itself, so a new one cannot be left out. ``self_train``, when given, is the
    number of pseudo-labels the study chose for ``--self-train``'s default (it depends on K).

    Example:
        >>> sub = argparse.ArgumentParser().add_subparsers()
        >>> add_fewshot_parser(sub)
        >>> a = sub.choices["fewshot"].parse_args(["--data", "my x.npz", "--k-shot", "5", "--out", "o"])
        >>> fewshot_command_line(a).split(" --draws")[0]
        "medmeta fewshot --data 'my x.npz' --k-shot 5"
    """
    sub = argparse.ArgumentParser().add_subparsers()
    add_fewshot_parser(sub)
    words = ["medmeta", "fewshot"]
    for action in sub.choices["fewshot"]._actions:  # argparse lists the options only here
        if not action.option_strings or action.dest in ("help", "out"):
            continue
        value = self_train if action.dest == "self_train" and self_train is not None else getattr(a, action.dest)
        flag = max(action.option_strings, key=len)
        if action.nargs == 0:  # an on/off flag
            words += [flag] if value else []
        elif value is not None:
            words += [flag, shlex.quote(str(value))]
    return " ".join(words)


def fewshot_command(a: argparse.Namespace) -> int:
    """Run :func:`~medmeta_lib.studies.fewshot.fewshot_study` and write ``results.json`` and ``summary.png``.

    Example:
        >>> from medmeta_lib.cli.program import build_parser
        >>> a = build_parser().parse_args(["fewshot", "--data", "my.npz", "--k-shot", "5"])
        >>> a.func is fewshot_command, a.meta_members, a.tta_views
        (True, 3, 8)
        >>> fewshot_command(a)  # doctest: +SKIP
    """
    from medmeta_lib.config import code_version, runs_dir
    from medmeta_lib.data import load_collection
    from medmeta_lib.runio import write_metrics
    from medmeta_lib.studies.fewshot import fewshot_study
    from medmeta_lib.studies.fewshot_checks import check_fewshot_data, check_fewshot_settings
    from medmeta_lib.viz import save_figure
    from medmeta_lib.viz.fewshot_plots import fewshot_summary_figure

    if a.data == "synthetic":
        raise ValueError("fewshot is for your own data: pass --data path/to/file.npz, a class folder or a CSV")
    settings = {
        "draws": a.draws,
        "epochs": a.epochs,
        "temperature": a.temperature,
        "augment": a.augment,
        "scanner_shift": not a.no_scanner_shift,
        "head": a.head,
        "meta_steps": a.meta_steps,
        "meta_members": a.meta_members,
        "mix_probe": not a.no_mix_probe,
        "tta_views": a.tta_views,
        "self_train": a.self_train,
        "device": a.device,
    }
    check_fewshot_settings(k_shot=a.k_shot, **settings)  # every flag, before the data is read or a folder made
    t0 = time.perf_counter()
    train = load_collection(a.data, image_size=a.image_size, split="train", seed=a.seed)
    try:
        with warnings.catch_warnings():  # a folder or CSV without splits returns every image as "test": refuse
            warnings.filterwarnings("error", message=".*returns every image.*")
            test = load_collection(a.data, image_size=a.image_size, split="test", seed=a.seed)
    except (ValueError, OSError, UserWarning) as e:
        raise ValueError(
            f"{a.data}: no usable test split ({e}); few-shot results are scored on held-out test images: give the "
            "data a test split (train/ and test/ folders, a split column in the CSV, or test_images in the .npz)"
        ) from e
    check_fewshot_data(train, test, a.k_shot)  # before any pretraining: fail fast on data that cannot be scored
    out_dir = Path(a.out) if a.out else runs_dir() / time.strftime("fewshot-%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"[fewshot] {train.source}: {len(train)} train / {len(test)} test images, {train.num_classes} classes, "
        f"{train.channels} channel(s); K = {a.k_shot}, {a.draws} draws → {out_dir}"
    )
    result = fewshot_study(
        train,
        test,
        k_shot=a.k_shot,
        seed=a.seed,
        **settings,
        scratch=not a.no_scratch,
        encoder_out=out_dir / "encoder.safetensors",
        learner_out=out_dir / "protonet.safetensors",  # members 1, 2, ...: protonet_m1.safetensors, ...
    )
    result["data"] = str(a.data)
    result["seconds_total"] = round(time.perf_counter() - t0, 1)
    result["command"] = fewshot_command_line(a, self_train=result["settings"]["self_train"])
    result["code"] = code_version()
    write_metrics(out_dir, result, name="results.json")
    save_figure(fewshot_summary_figure(result), out_dir, "summary", close=True)
    print(fewshot_table(result))
    best, paired = result["best"], result["paired_vs_best"]
    if paired:
        runner_up = max(paired, key=lambda n: result["results"][n]["bal_acc_mean"])
        d = paired[runner_up]["bal_acc"]
        print(
            f"best: {best}; balanced accuracy {best} − {runner_up} = {d['mean']:+.3f} "
            f"[{d['lo95']:.3f}, {d['hi95']:.3f}] (paired, same draws and test images)"
        )
    print(
        f"wrote {out_dir / 'results.json'} and {out_dir / 'figures' / 'summary.png'} in {result['seconds_total']:.0f} s"
    )
    return 0
