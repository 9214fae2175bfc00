"""Safetensors checkpoints: round trip, atomic writes, refusal of damaged or foreign files, exact resume."""

from __future__ import annotations

import json
import os
import pickle
import random
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import medmeta_lib.training.checkpoint as ckpt
from medmeta_lib.models import create_backbone
from medmeta_lib.training.checkpoint import load_backbone, load_checkpoint, save_backbone, save_checkpoint
from medmeta_lib.training.train_state import (
    load_optimizer_state,
    load_scheduler_state,
    optimizer_state_to_tensors,
    restore_rng_state,
    rng_state_to_tensors,
    scheduler_state_to_json,
)


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "a": torch.randn(3, 4, generator=g),
        "b.int": torch.arange(5),
        "c.half": torch.randn(2, generator=g).half(),
        "d.bf16": torch.randn(2, generator=g).bfloat16(),
        "e.bool": torch.tensor([True, False]),
        "scalar": torch.tensor(2.5),
    }


def test_round_trip_tensors_and_metadata(tmp_path: Path) -> None:
    meta = {"kind": "demo", "step": 7, "lrs": [0.1, 0.01], "betas": (0.9, 0.99), "nested": {"x": None, "y": "z"}}
    shared = torch.randn(4)
    tensors = {**_tensors(), "view1": shared[:2], "view2": shared}  # shared memory is allowed
    p = save_checkpoint(tmp_path / "sub" / "dir" / "ck.safetensors", tensors, meta)
    assert p == tmp_path / "sub" / "dir" / "ck.safetensors" and p.is_file()
    ck = load_checkpoint(p)
    assert ck.path == p
    assert ck.metadata == meta  # tuples come back as tuples
    assert ck.tensors.keys() == tensors.keys()
    for k, v in tensors.items():
        assert ck.tensors[k].dtype == v.dtype and torch.equal(ck.tensors[k], v), k
    # only the temp-free final file remains
    assert [f.name for f in p.parent.iterdir()] == ["ck.safetensors"]


def test_file_is_plain_safetensors_with_json_metadata(tmp_path: Path) -> None:
    from safetensors import safe_open

    p = save_checkpoint(tmp_path / "x.safetensors", {"w": torch.ones(2)}, {"kind": "encoder"})
    with safe_open(str(p), framework="pt") as f:
        header = f.metadata()
        assert list(f.keys()) == ["w"]
    assert header["format_version"] == "1"
    assert json.loads(header["medmeta"]) == {"kind": "encoder"}
    assert len(header["sha256"]) == 64


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.safetensors"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_metadata_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"metadata\.obj.*not JSON-serialisable"):
        save_checkpoint(tmp_path / "x.safetensors", {}, {"obj": object()})
    with pytest.raises(ValueError, match=r"torch\.Tensor"):
        save_checkpoint(tmp_path / "x.safetensors", {"w": [1.0]}, {})  # type: ignore[dict-item]


def test_truncated_file_refused(tmp_path: Path) -> None:
    p = save_checkpoint(tmp_path / "x.safetensors", _tensors(), {"kind": "demo"})
    raw = p.read_bytes()
    for cut in (4, 20, len(raw) - 3):
        bad = tmp_path / f"cut{cut}.safetensors"
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match=rf"cut{cut}\.safetensors.*(truncated|cannot be parsed).*Re-create"):
            load_checkpoint(bad)


def _rewrite_header(p: Path, edit) -> None:
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    p.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n :])


def test_tampered_metadata_refused(tmp_path: Path) -> None:
    p = save_checkpoint(tmp_path / "x.safetensors", {"w": torch.ones(3)}, {"kind": "encoder", "epochs": 3})

    def edit(h):
        h["__metadata__"]["medmeta"] = json.dumps({"kind": "encoder", "epochs": 30})

    _rewrite_header(p, edit)
    with pytest.raises(ValueError, match=r"x\.safetensors.*SHA-256"):
        load_checkpoint(p)


def test_tampered_tensor_bytes_refused(tmp_path: Path) -> None:
    p = save_checkpoint(tmp_path / "x.safetensors", {"w": torch.ones(3)}, {"kind": "encoder"})
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 0x40  # flip a bit of the last float
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="SHA-256"):
        load_checkpoint(p)


def test_corrupt_header_json_refused(tmp_path: Path) -> None:
    p = save_checkpoint(tmp_path / "x.safetensors", {"w": torch.ones(3)}, {})
    raw = bytearray(p.read_bytes())
    raw[8] = ord("[") + 100  # break the JSON
    p.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt safetensors header"):
        load_checkpoint(p)


def test_foreign_safetensors_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    p = tmp_path / "foreign.safetensors"
    save_file({"w": torch.ones(2)}, str(p))
    with pytest.raises(ValueError, match="no MedMeta metadata"):
        load_checkpoint(p)


class _Bomb:
    def __reduce__(self):
        return (_explode, ())


def _explode():  # pragma: no cover - must never run
    raise AssertionError("unpickled!")


@pytest.mark.parametrize("low_byte", [0x80, ord("P")])
def test_valid_file_whose_header_length_looks_like_a_magic_loads(tmp_path: Path, low_byte: int) -> None:
    # Regression: a header of 0x3480 bytes starts the file with 0x80 (the pickle protocol byte) and
    # one of 0x..50 with "P"; both are valid safetensors files and must load, not be refused.
    found = None
    for pad in range(600):
        p = save_checkpoint(tmp_path / "ck.safetensors", {"w": torch.ones(3)}, {"kind": "demo", "pad": "x" * pad})
        if p.read_bytes()[0] == low_byte:
            found = pad
            break
    assert found is not None, "no padding gave the wanted first byte"
    ck = load_checkpoint(p)
    assert ck.metadata["pad"] == "x" * found and torch.equal(ck.tensors["w"], torch.ones(3))


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_pickle_renamed_refused_without_unpickling(tmp_path: Path, how: str, monkeypatch) -> None:
    p = tmp_path / "model.safetensors"
    if how == "pickle":
        p.write_bytes(pickle.dumps({"w": _Bomb()}))
    else:
        torch.save({"w": torch.ones(2)}, p)

    def no_unpickle(*a, **k):  # pragma: no cover - must never run
        raise AssertionError("pickle.load called")

    monkeypatch.setattr(pickle, "load", no_unpickle)
    monkeypatch.setattr(pickle, "loads", no_unpickle)
    monkeypatch.setattr(torch, "load", no_unpickle)
    with pytest.raises(ValueError, match=r"model\.safetensors.*pickle.*refused without unpickling"):
        load_checkpoint(p)


def test_expect_mismatch_names_field_and_values(tmp_path: Path) -> None:
    p = save_checkpoint(tmp_path / "x.safetensors", {}, {"kind": "encoder", "backbone": {"name": "conv4"}})
    assert load_checkpoint(p, expect={"kind": "encoder", "backbone": {"name": "conv4"}}).metadata["kind"] == "encoder"
    with pytest.raises(ValueError, match=r"'kind' is 'encoder' in the checkpoint, expected 'learner'"):
        load_checkpoint(p, expect={"kind": "learner"})
    with pytest.raises(ValueError, match=r"'backbone\.name' is 'conv4' in the checkpoint, expected 'resnet12'"):
        load_checkpoint(p, expect={"backbone": {"name": "resnet12"}})
    with pytest.raises(ValueError, match=r"no field 'seed'"):
        load_checkpoint(p, expect={"seed": 1})


@pytest.mark.parametrize("fail_at", ["fsync", "replace", "write"])
def test_atomic_write_keeps_old_file(tmp_path: Path, monkeypatch, fail_at: str) -> None:
    p = save_checkpoint(tmp_path / "x.safetensors", {"w": torch.zeros(2)}, {"version": 1})
    before = p.read_bytes()

    def boom(*a, **k):
        raise OSError(f"simulated crash in {fail_at}")

    if fail_at == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    elif fail_at == "replace":
        monkeypatch.setattr(os, "replace", boom)
    else:
        monkeypatch.setattr(ckpt, "st_save", lambda *a, **k: b"partial" + boom())
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(p, {"w": torch.ones(2)}, {"version": 2})
    monkeypatch.undo()
    assert p.read_bytes() == before
    assert load_checkpoint(p).metadata == {"version": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["x.safetensors"]  # no temp files left behind


# ---------------------------------------------------------------- backbones


def test_backbone_round_trip(tmp_path: Path) -> None:
    net = create_backbone("conv4", hidden=8, norm="group")
    p = save_backbone(tmp_path / "enc.safetensors", net, metadata={"epochs": 3})
    ck = load_checkpoint(p, expect={"kind": "encoder", "backbone": {"name": "conv4"}})
    assert ck.metadata["epochs"] == 3 and ck.metadata["backbone"] == net.spec
    twin = load_backbone(p, expected_name="conv4", in_channels=1, hidden=8, norm="group")
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(twin(x), net(x))
    assert twin.spec == net.spec
    # defaults count as matching
    load_backbone(p, expected_name="conv4", pool="avg")


def test_backbone_mismatch_messages(tmp_path: Path) -> None:
    p = save_backbone(tmp_path / "enc.safetensors", create_backbone("conv4", hidden=8))
    with pytest.raises(ValueError, match=r"enc\.safetensors.*holds backbone 'conv4'.*hidden.*8.*expected 'resnet12'"):
        load_backbone(p, expected_name="resnet12")
    with pytest.raises(ValueError, match=r"enc\.safetensors.*hidden: checkpoint 8, expected 64"):
        load_backbone(p, expected_name="conv4", hidden=64)
    with pytest.raises(ValueError, match=r"in_channels: checkpoint 1, expected 3"):
        load_backbone(p, in_channels=3)
    other = save_checkpoint(tmp_path / "learner.safetensors", {}, {"kind": "learner"})
    with pytest.raises(ValueError, match="not an encoder"):
        load_backbone(other)


def test_backbone_weights_shape_mismatch(tmp_path: Path) -> None:
    net = create_backbone("conv4", hidden=8)
    tensors = dict(net.state_dict())
    tensors["features.0.weight"] = torch.zeros(8, 1, 5, 5)
    p = save_checkpoint(tmp_path / "bad.safetensors", tensors, {"kind": "encoder", "backbone": net.spec})
    with pytest.raises(ValueError, match=r"bad\.safetensors: weights do not fit backbone 'conv4'"):
        load_backbone(p)


def test_save_backbone_needs_spec(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="create_backbone"):
        save_backbone(tmp_path / "x.safetensors", nn.Linear(2, 2))


# ---------------------------------------------------------------- exact resume


def _train(model, opt, sched, steps: int, losses: list[float]) -> None:
    for _ in range(steps):
        x = torch.randn(8, 3)
        # consume the global numpy and python RNGs too: their states must be restored as well
        noise = float(np.random.rand()) + random.random()  # noqa: NPY002
        loss = ((model(x) - noise) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.8, 0.95)),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1, amsgrad=True),
        lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, nesterov=True),
    ],
    ids=["adam", "adamw-amsgrad", "sgd-nesterov"],
)
def test_resume_reproduces_uninterrupted_run(tmp_path: Path, make_opt) -> None:
    def fresh():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
        opt = make_opt(model.parameters())
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=20)
        return model, opt, sched

    def seed_all():
        torch.manual_seed(1)
        np.random.seed(1)  # noqa: NPY002
        random.seed(1)

    # uninterrupted: 10 + 10 steps
    model, opt, sched = fresh()
    seed_all()
    full: list[float] = []
    _train(model, opt, sched, 20, full)
    final = {k: v.clone() for k, v in model.state_dict().items()}

    # interrupted after 10 steps: save, scramble everything, rebuild and restore
    model, opt, sched = fresh()
    seed_all()
    first: list[float] = []
    _train(model, opt, sched, 10, first)
    t_opt, m_opt = optimizer_state_to_tensors(opt)
    t_rng, m_rng = rng_state_to_tensors()
    tensors = {**{f"model.{k}": v for k, v in model.state_dict().items()}, **t_opt, **t_rng}
    meta = {"optimizer": m_opt, "scheduler": scheduler_state_to_json(sched), "rng": m_rng}
    p = save_checkpoint(tmp_path / "last.safetensors", tensors, meta)

    torch.manual_seed(123)
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    model, opt, sched = fresh()
    ck = load_checkpoint(p)
    model.load_state_dict({k[6:]: v for k, v in ck.tensors.items() if k.startswith("model.")})
    load_optimizer_state(opt, ck.tensors, ck.metadata["optimizer"])
    load_scheduler_state(sched, ck.metadata["scheduler"])
    restore_rng_state(ck.tensors, ck.metadata["rng"])
    second: list[float] = []
    _train(model, opt, sched, 10, second)

    assert first + second == full  # bit-exact
    for k, v in model.state_dict().items():
        assert torch.equal(v, final[k]), k
    assert opt.param_groups[0]["lr"] == pytest.approx(sched.get_last_lr()[0])


def test_optimizer_state_type_and_layout_checked() -> None:
    p = [nn.Parameter(torch.zeros(2))]
    t, m = optimizer_state_to_tensors(torch.optim.Adam(p))
    with pytest.raises(ValueError, match=r"'Adam'.*SGD"):
        load_optimizer_state(torch.optim.SGD(p, lr=0.1), t, m)
    with pytest.raises(ValueError, match="does not fit"):
        load_optimizer_state(torch.optim.Adam([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(1))]), t, m)


def test_rng_named_generators() -> None:
    tg = torch.Generator().manual_seed(5)
    ng = np.random.default_rng(5)
    t, m = rng_state_to_tensors(generators={"torch_g": tg, "np_g": ng})
    a, b = torch.rand(3, generator=tg), ng.random(3)
    tg.manual_seed(99)
    ng2 = np.random.default_rng(99)
    restore_rng_state(t, m, generators={"torch_g": tg, "np_g": ng2})
    assert torch.equal(torch.rand(3, generator=tg), a)
    assert np.array_equal(ng2.random(3), b)
    with pytest.raises(ValueError, match="no saved state for generator 'other'"):
        restore_rng_state(t, m, generators={"other": tg})
    with pytest.raises(
        ValueError, match="generator 'torch_g' was saved as a torch generator; pass a torch one, not numpy"
    ):
        restore_rng_state(t, m, generators={"torch_g": ng2})
    with pytest.raises(
        ValueError, match="generator 'np_g' was saved as a numpy generator; pass a numpy one, not torch"
    ):
        restore_rng_state(t, m, generators={"np_g": tg})


def test_state_json_is_plain_json() -> None:
    p = [nn.Parameter(torch.ones(2))]
    opt = torch.optim.Adam(p, lr=0.1, betas=(0.5, 0.6))
    p[0].grad = torch.ones(2)
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    t, m = optimizer_state_to_tensors(opt)
    s = scheduler_state_to_json(sched)
    m2, s2 = json.loads(json.dumps(m)), json.loads(json.dumps(s))  # no custom encoder needed
    opt2 = torch.optim.Adam([nn.Parameter(torch.ones(2))], lr=0.1)
    load_optimizer_state(opt2, t, m2)
    assert opt2.param_groups[0]["betas"] == (0.5, 0.6)
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    sched2 = torch.optim.lr_scheduler.StepLR(opt2, step_size=2, gamma=0.5)
    load_scheduler_state(sched2, s2)
    assert sched2.state_dict() == sched.state_dict()


def test_load_backbone_with_encoder_prefix(tmp_path: Path) -> None:
    # e.g. a SimCLR checkpoint: encoder weights under "encoder.", plus a projection head and optimiser state
    net = create_backbone("conv4", hidden=8)
    tensors = {f"encoder.{k}": v for k, v in net.state_dict().items()}
    tensors["head.weight"] = torch.zeros(4, 8)
    meta = {"kind": "encoder", "backbone": net.spec, "encoder_prefix": "encoder."}
    p = save_checkpoint(tmp_path / "simclr.safetensors", tensors, meta)
    twin = load_backbone(p, expected_name="conv4", hidden=8)
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(twin(x), net(x))


def test_a_checkpoint_names_the_code_that_wrote_it(tmp_path: Path) -> None:
    """The header records code_version() (not checksummed); a file written before that loads with code None."""
    from safetensors.torch import save as st_save

    from medmeta_lib.config import code_version

    p = save_checkpoint(tmp_path / "new.safetensors", {"w": torch.ones(2)}, {"kind": "demo"})
    loaded = load_checkpoint(p)
    assert loaded.code == code_version() and loaded.metadata == {"kind": "demo"}  # the caller's metadata unchanged
    data = {"w": torch.ones(2)}
    meta_json = json.dumps({"kind": "demo"}, sort_keys=True)
    header = {"format_version": ckpt.FORMAT_VERSION, "medmeta": meta_json, "sha256": ckpt._digest(meta_json, data)}
    old = tmp_path / "old.safetensors"
    old.write_bytes(st_save(data, metadata=header))  # as files were written before the code was kept
    assert load_checkpoint(old).code is None and load_checkpoint(old).metadata == {"kind": "demo"}
