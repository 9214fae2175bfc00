"""The bad-input catalogue's other entries (episodes, checkpoints, notebook parameters, downloads, the CLI).

``CASES`` is the whole catalogue: ``catalogue_data.py``'s entries, then these.
"""

from __future__ import annotations

import io
import pickle
import warnings
import zipfile
from pathlib import Path

import torch

import medmeta_lib as mm
from medmeta_lib.data.download import DownloadError, download_file
from medmeta_lib.data.medmnist import MEDMNIST_DATASETS, download_medmnist
from medmeta_lib.models import create_backbone
from medmeta_lib.pipeline import NOTEBOOKS, ParameterError, resolve_parameters, run_pipeline
from medmeta_lib.training.checkpoint import load_backbone, load_checkpoint, save_backbone, save_checkpoint
from tests.reliability.catalogue_data import DATA_CASES, Call, Case, Ctx
from tests.reliability.support import Unpickled


def _sampler(**kw: object) -> Call:
    from tests.conftest import make_collection

    col = make_collection(n_classes=4, per_class=10, n_sites=2)  # 4 classes x 10 images, 2 sites
    return lambda: mm.EpisodeSampler(col, **kw)  # type: ignore[arg-type]


def episodes_n_too_large(c: Ctx) -> tuple[Call, list[str]]:
    return _sampler(n_way=5, k_shot=1, q_query=1), ["toy", "5-way", "only 4 class(es)"]


def episodes_kq_too_large(c: Ctx) -> tuple[Call, list[str]]:
    return _sampler(n_way=2, k_shot=6, q_query=5), ["toy", "K+Q=11"]


def episodes_one_site_too_small(c: Ctx) -> tuple[Call, list[str]]:
    return _sampler(n_way=2, k_shot=3, q_query=3, one_site=True), ["toy", "any single site"]


def episodes_zero_shot(c: Ctx) -> tuple[Call, list[str]]:
    return _sampler(n_way=2, k_shot=0, q_query=3), ["k_shot", "got 0"]


def episodes_fractional_query(c: Ctx) -> tuple[Call, list[str]]:
    return _sampler(n_way=2, k_shot=1, q_query=2.5), ["q_query", "2.5"]


def episodes_unknown_class(c: Ctx) -> tuple[Call, list[str]]:
    return _sampler(n_way=2, k_shot=1, q_query=1, classes=[0, 9]), ["toy", "classes [9]", "0..3"]


def learner_wrong_channels(c: Ctx) -> tuple[Call, list[str]]:
    learner = mm.create_learner("protonet", create_backbone("conv4", in_channels=1, hidden=8), n_way=2)
    rgb, labels = torch.rand(4, 3, 28, 28), torch.tensor([0, 0, 1, 1])
    return (lambda: learner.adapt(rgb, labels)), ["protonet", "support_x", "(N, 1, H, W)", "(4, 3, 28, 28)"]


def recipe_wrong_image_size(c: Ctx) -> tuple[Call, list[str]]:
    from medmeta_lib.ssl.features import CONV4_BLOCKS_2_4
    from medmeta_lib.studies import FewShotRecipe

    encoder = create_backbone("conv4", in_channels=1, hidden=8)
    member = mm.create_learner("protonet", create_backbone("conv4", in_channels=1, hidden=8), n_way=2)
    recipe = FewShotRecipe([member], encoder, layers=CONV4_BLOCKS_2_4, classes=("normal", "pneumonia"), image_size=28)
    images, labels = torch.rand(4, 1, 64, 64), torch.tensor([0, 0, 1, 1])
    return (lambda: recipe.adapt(images, labels)), ["support images", "64x64 px", "28x28"]


def _encoder(c: Ctx, name: str = "encoder.safetensors") -> Path:
    torch.manual_seed(0)
    return save_backbone(c.tmp / name, create_backbone("conv4", hidden=8), metadata={"epochs": 3})


def ckpt_truncated(c: Ctx) -> tuple[Call, list[str]]:
    p = _encoder(c)
    p.write_bytes(p.read_bytes()[: p.stat().st_size - 100])
    return (lambda: load_backbone(p)), [str(p)]


def ckpt_tampered_header(c: Ctx) -> tuple[Call, list[str]]:
    p = _encoder(c)
    raw = p.read_bytes()
    assert raw.count(b'\\"epochs\\": 3') == 1
    p.write_bytes(raw.replace(b'\\"epochs\\": 3', b'\\"epochs\\": 9'))  # same length: only the checksum can tell
    return (lambda: load_checkpoint(p)), [str(p), "SHA-256"]


def ckpt_tampered_tensor(c: Ctx) -> tuple[Call, list[str]]:
    p = _encoder(c)
    raw = bytearray(p.read_bytes())
    raw[-5] ^= 0x01  # one bit of the last weight
    p.write_bytes(bytes(raw))
    return (lambda: load_backbone(p)), [str(p), "SHA-256"]


def ckpt_other_backbone(c: Ctx) -> tuple[Call, list[str]]:
    p = _encoder(c)
    return (lambda: load_backbone(p, expected_name="resnet12")), [str(p), "'conv4'", "'resnet12'"]


def ckpt_other_backbone_arguments(c: Ctx) -> tuple[Call, list[str]]:
    p = _encoder(c)
    return (lambda: load_backbone(p, expected_name="conv4", hidden=64)), [str(p), "hidden", "8", "64"]


def ckpt_learner_as_encoder(c: Ctx) -> tuple[Call, list[str]]:
    p = save_checkpoint(c.tmp / "last.safetensors", {"learner.w": torch.zeros(2)}, {"kind": "learner", "step": 4})
    return (lambda: load_backbone(p)), [str(p), "kind='learner'"]


def ckpt_foreign_safetensors(c: Ctx) -> tuple[Call, list[str]]:
    from safetensors.torch import save_file

    p = c.tmp / "model.safetensors"
    save_file({"weight": torch.zeros(3)}, str(p))
    return (lambda: load_backbone(p)), [str(p), "no MedMeta metadata"]


def ckpt_pickle_renamed(c: Ctx) -> tuple[Call, list[str]]:
    p = c.tmp / "encoder.safetensors"
    p.write_bytes(pickle.dumps({"state_dict": Unpickled(c.tmp / "EXECUTED")}, protocol=4))
    return (lambda: load_backbone(p)), [str(p), "pickle", "without unpickling"]


def ckpt_torch_save_renamed(c: Ctx) -> tuple[Call, list[str]]:
    p = c.tmp / "encoder.safetensors"
    buf = io.BytesIO()
    torch.save({"state_dict": Unpickled(c.tmp / "EXECUTED")}, buf)
    assert zipfile.is_zipfile(io.BytesIO(buf.getvalue()))
    p.write_bytes(buf.getvalue())
    return (lambda: load_checkpoint(p)), [str(p), "without unpickling"]


def param_unknown(c: Ctx) -> tuple[Call, list[str]]:
    out = c.tmp / "run"  # run_pipeline validates before it creates anything: `out` must not appear
    return (
        lambda: run_pipeline(out=out, overrides={"imag_size": 28}, only=["01"], progress=False, log=lambda s: None)
    ), ["'imag_size'", "'image_size'"]


def param_missing_data_source(c: Ctx) -> tuple[Call, list[str]]:
    out, missing = c.tmp / "run", c.tmp / "xrays" / "train.npz"  # nothing may be created: no run folder
    overrides = {"data_source": str(missing)}
    return (lambda: run_pipeline(out=out, overrides=overrides, progress=False, log=lambda s: None)), [
        "01_data_exploration",
        "'data_source'",
        str(missing),
    ]


def param_unknown_for_notebook(c: Ctx) -> tuple[Call, list[str]]:
    return (lambda: resolve_parameters(NOTEBOOKS, {"02.k_shot": 5})), ["02_contrastive_pretraining", "'k_shot'"]


def param_wrong_type(c: Ctx) -> tuple[Call, list[str]]:
    return (lambda: resolve_parameters(NOTEBOOKS, {"image_size": "large"})), ["'image_size'", "must be int", "'large'"]


def param_bool_for_int(c: Ctx) -> tuple[Call, list[str]]:
    return (lambda: resolve_parameters(NOTEBOOKS, {"03.meta_steps": True})), ["03_meta_training", "'meta_steps'"]


def _old_file(c: Ctx) -> Path:
    dest = c.tmp / "cache" / "pneumoniamnist.npz"
    dest.parent.mkdir()
    dest.write_bytes(b"previous download, must survive")
    return dest


def download_interrupted(c: Ctx) -> tuple[Call, list[str]]:
    dest, url = _old_file(c), f"{c.server.url}/cut.npz"
    return (lambda: download_file(url, dest, progress=False)), [url, str(dest), "nothing was written"]


def download_md5_mismatch(c: Ctx) -> tuple[Call, list[str]]:
    dest, url = _old_file(c), f"{c.server.url}/ok.npz"
    official = MEDMNIST_DATASETS["pneumoniamnist"].md5(28)

    def call() -> object:
        with warnings.catch_warnings():  # "exists but its MD5 differs; downloading it again"
            warnings.simplefilter("ignore")
            return download_medmnist("pneumoniamnist", data_dir=dest.parent, url=url, progress=False)

    return call, [url, str(dest), "MD5", str(official), "nothing was written"]


def download_not_found(c: Ctx) -> tuple[Call, list[str]]:
    dest, url = _old_file(c), f"{c.server.url}/moved.npz"
    return (lambda: download_file(url, dest, md5="0" * 32, progress=False)), [url, "404", "nothing was written"]


def fewshot_bad_flag(c: Ctx) -> tuple[Call, list[str]]:
    from medmeta_lib.cli.fewshot import fewshot_command
    from medmeta_lib.cli.program import build_parser
    from tests.conftest import write_medmnist_npz

    npz = write_medmnist_npz(c.tmp / "mine.npz", per_class=4, n_classes=2)
    argv = ["fewshot", "--data", str(npz), "--k-shot", "2", "--out", str(c.tmp / "out"), "--augment", "xray"]
    return lambda: fewshot_command(build_parser().parse_args(argv)), ["augment", "'xray'", "'chest_xray'"]


def _predict(c: Ctx, *extra: str) -> Call:
    from medmeta_lib.cli.predict import predict_command
    from medmeta_lib.cli.program import build_parser

    argv = ["predict", "--recipe", str(c.tmp / "recipe"), "--support", str(c.tmp / "mine.npz"), *extra]
    return lambda: predict_command(build_parser().parse_args(argv))


def predict_missing_image(c: Ctx) -> tuple[Call, list[str]]:
    return _predict(c, "--out", str(c.tmp / "p.csv"), str(c.tmp / "scan_0001.png")), ["scan_0001.png"]


def predict_existing_out(c: Ctx) -> tuple[Call, list[str]]:
    out = c.tmp / "predictions.csv"
    out.write_text("path,prediction\nearlier.png,normal\n")  # an earlier run's predictions: kept
    return _predict(c, "--out", str(out), str(c.tmp)), [str(out), "exists"]


CASES = [
    *DATA_CASES,
    Case("episodes-n-too-large", episodes_n_too_large, ValueError, r"lower n_way"),
    Case("episodes-kq-too-large", episodes_kq_too_large, ValueError, r"lower n_way, k_shot or q_query"),
    Case("episodes-one-site-too-small", episodes_one_site_too_small, ValueError, r"allow more classes/sites"),
    Case("episodes-zero-shot", episodes_zero_shot, ValueError, r"whole number >= 1"),
    Case("episodes-fractional-query", episodes_fractional_query, ValueError, r"whole number >= 1"),
    Case("episodes-unknown-class", episodes_unknown_class, ValueError, r"class ids from that range"),
    Case("learner-wrong-channels", learner_wrong_channels, ValueError, r"convert greyscale/RGB"),
    Case("recipe-wrong-image-size", recipe_wrong_image_size, ValueError, r"resize them"),
    Case("ckpt-truncated", ckpt_truncated, ValueError, r"re-create it|re-run the step"),
    Case("ckpt-tampered-header", ckpt_tampered_header, ValueError, r"re-create it|re-run the step"),
    Case("ckpt-tampered-tensor", ckpt_tampered_tensor, ValueError, r"re-create it|re-run the step"),
    Case("ckpt-other-backbone", ckpt_other_backbone, ValueError, r"pass the matching backbone|another checkpoint"),
    Case("ckpt-other-backbone-args", ckpt_other_backbone_arguments, ValueError, r"use matching ones"),
    Case("ckpt-learner-as-encoder", ckpt_learner_as_encoder, ValueError, r"pass a file written by save_backbone"),
    Case("ckpt-foreign-safetensors", ckpt_foreign_safetensors, ValueError, r"re-create it"),
    Case("ckpt-pickle-renamed", ckpt_pickle_renamed, ValueError, r"re-create it"),
    Case("ckpt-torch-save-renamed", ckpt_torch_save_renamed, ValueError, r"re-create it"),
    Case("param-unknown", param_unknown, ParameterError, r"fix the name"),
    Case("param-missing-data-source", param_missing_data_source, ParameterError, r"a source is one of"),
    Case("param-unknown-for-notebook", param_unknown_for_notebook, ParameterError, r"fix the name"),
    Case("param-wrong-type", param_wrong_type, ParameterError, r"pass a value of type int"),
    Case("param-bool-for-int", param_bool_for_int, ParameterError, r"pass a value of type int"),
    Case("download-interrupted", download_interrupted, DownloadError, r"run the download again"),
    Case("download-md5-mismatch", download_md5_mismatch, DownloadError, r"check the url and the expected checksum"),
    Case("download-not-found", download_not_found, DownloadError, r"check the url"),
    Case("fewshot-bad-flag", fewshot_bad_flag, ValueError, r"must be one of"),
    Case("predict-missing-image", predict_missing_image, FileNotFoundError, r"check the path"),
    Case("predict-existing-out", predict_existing_out, ValueError, r"pass --overwrite to replace it, or another --out"),
]
