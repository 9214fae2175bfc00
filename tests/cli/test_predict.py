"""``medmeta predict``: a saved few-shot recipe classifies image files, each on its own, greyscale or RGB."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medmeta_lib.cli import main
from medmeta_lib.config import code_version
from medmeta_lib.data import load_collection
from medmeta_lib.data.image_files import read_image
from medmeta_lib.studies.fewshot_recipe import FewShotRecipe
from tests.conftest import write_medmnist_npz

FAST = ["--draws", "2", "--epochs", "1", "--meta-steps", "2", "--meta-members", "1", "--no-scratch"]


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny two-class recipe that self-trains (5 pseudo-labels per class), its .npz and PNG copies of its test set."""
    root = tmp_path_factory.mktemp("predict")
    npz = write_medmnist_npz(root / "d.npz", n_classes=2, per_class=8)
    out = root / "recipe"
    argv = ["fewshot", "--data", str(npz), "--k-shot", "3", "--self-train", "5", "--out", str(out), *FAST]
    assert main(argv) == 0
    files = root / "files"
    files.mkdir()
    test = np.load(npz)["test_images"]
    for i, image in enumerate(test[:5]):
        Image.fromarray(image).save(files / f"grey{i}.png")
    Image.fromarray(np.repeat(test[5][..., None], 3, axis=2)).save(files / "colour.png")  # an RGB file
    return npz, out, files


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_each_file_gets_the_recipes_own_prediction(recipe_run, tmp_path: Path, capsys) -> None:
    npz, out, files = recipe_run
    csv_path = tmp_path / "p.csv"
    argv = ["predict", "--recipe", str(out), "--support", str(npz), "--unlabelled", str(npz), str(files)]
    assert main([*argv, "--out", str(csv_path)]) == 0
    rows = _rows(csv_path)
    names = sorted(p.name for p in files.iterdir())
    assert [Path(r["path"]).name for r in rows] == names and list(rows[0]) == [
        "path",
        "prediction",
        "p(class0)",
        "p(class1)",
    ]
    recipe = FewShotRecipe.load(out)
    train = load_collection(str(npz), split="train")
    predict = recipe.adapt(train.images, train.labels, unlabelled=train.images)
    images = torch.stack([read_image(files / n, scale="uint8") for n in names])  # as the .npz images are scaled
    expected = predict(images)  # all at once: the same numbers, since each image is classified on its own
    got = np.array([[float(r["p(class0)"]), float(r["p(class1)"])] for r in rows])
    np.testing.assert_allclose(got, expected, atol=6e-5)
    assert [r["prediction"] for r in rows] == [recipe.classes[i] for i in expected.argmax(1)]
    grey = torch.stack([images[names.index(f"grey{i}.png")] for i in range(5)])
    assert np.allclose(grey.numpy(), np.load(npz)["test_images"][:5, None] / 255.0)  # the PNGs read as the .npz
    printed = capsys.readouterr().out
    assert "6 image(s) (uint8 scaling), each classified on its own, with 16 labelled" in printed
    assert f"saved by {code_version()}" in printed and recipe.code == code_version()  # the code that made it


def test_k_shot_draws_k_labelled_images_per_class(recipe_run, tmp_path: Path, capsys) -> None:
    npz, out, files = recipe_run
    argv = ["predict", "--recipe", str(out), "--support", str(npz), "--unlabelled", str(npz), "--k-shot", "2"]
    assert main([*argv, str(files / "grey0.png"), "--out", str(tmp_path / "p.csv")]) == 0
    assert "1 image(s) (uint8 scaling), each classified on its own, with 4 labelled" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--unlabelled": None}, "this recipe self-trains (5 pseudo-labels per class"),
        ({"images": "missing.png"}, "missing.png: no such image file or folder"),
        ({"--k-shot": "9"}, "class 'class0' has 8 image(s), fewer than --k-shot 9"),
        (
            {"--support": "three"},
            "has classes ['class0', 'class1', 'class2'], but the recipe was trained on ['class0', 'class1']",
        ),
        ({"images": "not_an_image"}, "not_an_image.png: cannot be read as an image"),
        ({"--out": "exists"}, "exists; pass --overwrite to replace it"),
    ],
)
def test_bad_input_is_refused_by_name_and_nothing_is_written(
    recipe_run, tmp_path: Path, capsys, change: dict, message: str
) -> None:
    npz, out, files = recipe_run
    csv_path = tmp_path / "p.csv"
    args = {"--recipe": str(out), "--support": str(npz), "--unlabelled": str(npz), "--out": str(csv_path)}
    images = str(files)
    if change.get("--support") == "three":
        change = {"--support": str(write_medmnist_npz(tmp_path / "three.npz", n_classes=3, per_class=4))}
    if change.get("images") == "not_an_image":
        (tmp_path / "not_an_image.png").write_text("an HTML error page, not a PNG")
        change = {"images": str(tmp_path / "not_an_image.png")}
    if change.get("--out") == "exists":
        csv_path.write_text("earlier predictions\n")
        change = {}
    args.update({k: v for k, v in change.items() if k != "images"})
    images = change.get("images", images)
    argv = ["predict", images, *(w for k, v in args.items() if v is not None for w in (k, v))]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not csv_path.exists() or csv_path.read_text() == "earlier predictions\n"  # nothing written or lost
