"""``medmeta fewshot`` end to end on a tiny MedMNIST-format file (greyscale and RGB), and its refusals."""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medmeta_lib.cli import main
from medmeta_lib.cli.fewshot import fewshot_command_line, recall_text
from medmeta_lib.cli.program import build_parser
from medmeta_lib.data import load_collection
from medmeta_lib.studies.fewshot_recipe import FewShotRecipe
from tests.conftest import write_medmnist_npz

FAST = ["--draws", "3", "--epochs", "1", "--meta-steps", "2", "--meta-members", "2"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize(("channels", "n_classes"), [(1, 2), (3, 3)])
def test_results_json_and_summary_for_grey_and_colour(tmp_path: Path, capsys, channels: int, n_classes: int) -> None:
    npz = write_medmnist_npz(tmp_path / "d.npz", channels=channels, n_classes=n_classes, per_class=8)
    out = tmp_path / "out"
    plain = ["--no-scanner-shift", "--no-mix-probe"] if channels == 3 else []  # the study's colour test: default
    tta = [] if plain else ["--tta-views", "1"]  # the mixed probe over one fixed view of each image too
    tau = ["--temperature", "0.5"] if channels == 3 else []  # a non-default SimCLR temperature reaches the study
    assert main(["fewshot", "--data", str(npz), "--k-shot", "2", "--out", str(out), *FAST, *plain, *tta, *tau]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["channels"] == channels and len(res["classes"]) == n_classes and res["k_shot"] == 2
    methods = {"simclr_protonet", "simclr_probe", "random_init_probe", "raw_pixels_probe", "scratch"}
    assert set(res["results"]) == methods
    assert res["recipe"] == "simclr_protonet" and res["meta_train"]["steps"] == 2
    for r in res["results"].values():
        assert {"acc_mean", "acc_ci95", "acc_lo95", "acc_hi95", "bal_acc_mean", "bal_acc_lo95"} <= set(r)
        assert ("auc_mean" in r) == (n_classes == 2) and r["draws"] == 3
        assert list(r["recall_per_class"]) == res["classes"]  # each class's recall, under its name
        assert np.mean([st["mean"] for st in r["recall_per_class"].values()]) == pytest.approx(r["bal_acc_mean"])
    assert res["majority_rate"] == pytest.approx(1 / n_classes)  # balanced tiny test split
    assert res["command"].startswith("medmeta fewshot --data") and (out / "figures" / "summary.png").stat().st_size
    argv = ["fewshot", "--data", str(npz), "--k-shot", "2", "--out", str(out), *FAST, *plain, *tta, *tau]
    given, replayed = build_parser().parse_args(argv), build_parser().parse_args(shlex.split(res["command"])[1:])
    assert {**vars(replayed), "out": given.out, "self_train": None} == {**vars(given), "self_train": None}
    assert res["code"].startswith("medmeta_lib ")
    assert "--head cl2_probe" in res["command"] and res["settings"]["head"] == "cl2_probe"
    assert res["settings"]["temperature"] == (0.5 if tau else 0.2)
    assert f"--temperature {res['settings']['temperature']}" in res["command"]
    assert "--meta-steps 2" in res["command"] and "--meta-members 2" in res["command"]
    assert res["meta_train"]["seeds"] == [0, 1] and res["settings"]["meta_members"] == 2
    assert res["settings"]["scanner_shift"] is not plain and ("--no-scanner-shift" in res["command"]) is bool(plain)
    assert (out / "encoder.safetensors").is_file() and (out / "protonet.safetensors").is_file()
    assert res["meta_train"]["files"] == [str(out / "protonet.safetensors"), str(out / "protonet_m1.safetensors")]
    assert (out / "protonet_m1.safetensors").is_file() and not (out / "protonet_m2.safetensors").exists()
    assert res["settings"]["mix_probe"] is not plain and ("--no-mix-probe" in res["command"]) is bool(plain)
    recipe = FewShotRecipe.load(out)  # the recipe for new images, greyscale or colour
    assert recipe.classes == tuple(res["classes"]) and (recipe.probe_stats is None) is bool(plain)
    assert recipe.tta_views == res["settings"]["tta_views"] == (0 if plain else 1)
    assert ("--tta-views 1" in res["command"]) is not bool(plain)
    train = load_collection(str(npz), split="train")
    idx = torch.cat([torch.nonzero(train.labels == c).flatten()[:2] for c in range(n_classes)])
    assert recipe.self_train == res["settings"]["self_train"] == 100 and "--self-train 100" in res["command"]  # K = 2
    support = (train.images[idx], train.labels[idx])
    probs = recipe.adapt(*support, unlabelled=train.images)(load_collection(str(npz), split="test").images)
    assert probs.shape[1] == n_classes and np.allclose(probs.sum(1), 1.0)
    printed = capsys.readouterr().out
    assert "| simclr_protonet" in printed and "| simclr_probe" in printed
    assert "majority class" in printed and "wrote" in printed and "| recall per class |" in printed
    row = res["results"]["simclr_probe"]["recall_per_class"]
    assert ", ".join(f"{c} {st['mean']:.3f}" for c, st in row.items()) in printed


def test_a_dataset_without_a_test_split_or_with_too_few_images_is_refused(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "folder"
    for c in "ab":
        (folder / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray((np.random.default_rng(i).random((28, 28)) * 255).astype("uint8")).save(
                folder / c / f"{i}.png"
            )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the refusal comes before any "returns every image" warning escapes
        assert main(["fewshot", "--data", str(folder), "--k-shot", "1", "--out", str(tmp_path / "o"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "no usable test split" in err and "give the data a test split" in err and "Traceback" not in err
    npz = write_medmnist_npz(tmp_path / "d.npz", per_class=3, n_classes=2)
    assert main(["fewshot", "--data", str(npz), "--k-shot", "5", "--out", str(tmp_path / "o2"), *FAST]) == 2
    assert "fewer than k_shot=5 train images; lower --k-shot" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--draws", "0", "draws must be an int >= 1"),
        ("--augment", "bogus", "augment (the SimCLR view preset) must be one of"),
        ("--temperature", "0", "temperature must be a finite number > 0"),
        ("--tta-views", "-1", "tta_views must be an int >= 0"),
        ("--device", "tpu", "device must be 'auto', 'cpu' or 'cuda[:N]'"),
    ],
)
def test_a_bad_flag_is_refused_before_the_data_is_read_or_a_folder_made(
    tmp_path: Path, capsys, monkeypatch, flag: str, value: str, message: str
) -> None:
    import medmeta_lib.data as data_mod

    def must_not_load(*a, **kw):
        raise AssertionError("the data was read before the flags were checked")

    monkeypatch.setattr(data_mod, "load_collection", must_not_load)
    out = tmp_path / "o"
    assert (
        main(["fewshot", "--data", str(tmp_path / "d.npz"), "--k-shot", "2", "--out", str(out), *FAST, flag, value])
        == 2
    )
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()  # nothing left behind


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_asking_for_a_gpu_without_one_is_a_clear_error(tmp_path: Path, capsys) -> None:
    npz = write_medmnist_npz(tmp_path / "d.npz", per_class=4, n_classes=2)
    argv = ["fewshot", "--data", str(npz), "--k-shot", "1", "--out", str(tmp_path / "o"), "--device", "cuda", *FAST]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "CUDA is not available" in err and "Traceback" not in err


def test_recall_text_lists_few_classes_and_names_the_extremes_of_many():
    two = {"recall_per_class": {"normal": {"mean": 0.8251}, "pneumonia": {"mean": 0.903}}}
    assert recall_text(two) == "normal 0.825, pneumonia 0.903"  # in the classes' order
    assert recall_text({}) == "–"
    many = {"recall_per_class": {f"class{i}": {"mean": m} for i, m in enumerate([0.7, 0.95, 0.41, 0.8, 0.6, 0.9])}}
    assert recall_text(many) == "lowest class2 0.410, highest class1 0.950 (6 classes)"
    assert recall_text(many, max_listed=6).count(",") == 5  # every class when allowed
    for bad in (1, 2.0, True, "4"):
        with pytest.raises(ValueError, match="max_listed"):
            recall_text(two, max_listed=bad)


def test_the_flags_defaults_are_the_studys_and_the_configs() -> None:
    """The parser does not import the study (it would cost ``medmeta --help`` ~0.8 s), so its defaults are copies."""
    import inspect

    from medmeta_lib.cli.program import build_parser
    from medmeta_lib.ssl.simclr_config import SimCLRConfig
    from medmeta_lib.studies.fewshot import fewshot_study

    study = {n: p.default for n, p in inspect.signature(fewshot_study).parameters.items()}
    a = vars(build_parser().parse_args(["fewshot", "--data", "x.npz", "--k-shot", "1"]))
    same = ("draws", "seed", "epochs", "temperature", "augment", "head", "meta_steps", "meta_members", "tta_views")
    for flag in (*same, "self_train", "device"):
        assert a[flag] == study[flag], flag
    negated = {"no_scanner_shift": "scanner_shift", "no_mix_probe": "mix_probe", "no_scratch": "scratch"}
    for flag, name in negated.items():
        assert a[flag] is not study[name], flag
    pretrain = vars(build_parser().parse_args(["pretrain", "--out", "enc.safetensors"]))
    assert pretrain["temperature"] == SimCLRConfig.temperature


def test_the_command_line_repeats_every_flag() -> None:
    """Every option but --out, each set away from its default, comes back from the command (--image-size did not)."""
    argv = ["fewshot", "--data", "my x.npz", "--k-shot", "3", "--draws", "7", "--out", "o", "--image-size", "64"]
    argv += [
        "--epochs",
        "2",
        "--temperature",
        "0.5",
        "--augment",
        "chest_xray",
        "--no-scanner-shift",
        "--head",
        "probe",
    ]
    argv += ["--meta-steps", "5", "--meta-members", "1", "--no-mix-probe", "--tta-views", "0", "--self-train", "50"]
    argv += ["--device", "auto", "--no-scratch", "--seed", "4"]
    given, defaults = (
        build_parser().parse_args(argv),
        build_parser().parse_args(["fewshot", "--data", "d", "--k-shot", "1"]),
    )
    unchanged = [k for k, v in vars(defaults).items() if getattr(given, k) == v and k not in ("func", "cmd", "out")]
    assert unchanged == [], f"set these in argv so the test covers them: {unchanged}"
    replayed = build_parser().parse_args(shlex.split(fewshot_command_line(given))[1:])
    assert {**vars(replayed), "out": given.out} == vars(given)
