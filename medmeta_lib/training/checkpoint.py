"""Checkpoints as safetensors files with JSON metadata: atomic writes, integrity check, never pickle.

Layout of a checkpoint file: a plain safetensors file whose header ``__metadata__`` holds

* ``"format_version"``: ``"1"``,
* ``"medmeta"``: the caller's metadata as a JSON string, and
* ``"sha256"``: a SHA-256 over the format version, that JSON string and every tensor (name, dtype,
  shape, bytes), so a truncated or edited file is refused instead of silently loaded, and
* ``"code"``: the code that wrote it (:func:`medmeta_lib.config.code_version`: library version, git commit);
  provenance for a reader, not part of the checksum (files written before it have none).

Optimiser, LR-scheduler and RNG states go into the same files through :mod:`medmeta_lib.training.train_state`
(tensors in the file, the rest in the metadata), so a resumed run continues exactly like an
uninterrupted one, without ``torch.load`` and its pickle.

Example:
    >>> import tempfile, torch
    >>> p = save_checkpoint(tempfile.mkdtemp() + "/a.safetensors", {"w": torch.ones(2)}, {"kind": "demo"})
    >>> load_checkpoint(p, expect={"kind": "demo"}).tensors["w"].tolist()
    [1.0, 1.0]
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from medmeta_lib.config import code_version

__all__ = [
    "FORMAT_VERSION",
    "Checkpoint",
    "from_json",
    "load_backbone",
    "load_checkpoint",
    "save_backbone",
    "save_checkpoint",
    "to_json",
]

FORMAT_VERSION = "1"
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


@dataclass
class Checkpoint:
    """A loaded checkpoint: tensors, the caller's metadata, the file it came from and the code that wrote it."""

    tensors: dict[str, Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path = Path()
    code: str | None = None  # e.g. "medmeta_lib 0.1.0, commit 1a2b3c4"; None for files written before it was kept


# ---------------------------------------------------------------- JSON helpers


def to_json(value: Any, where: str) -> Any:
    """Convert to JSON types, tagging tuples and small tensors so :func:`from_json` restores them exactly.

    Args:
        value: None, bool, int, float, str, a Path, a numpy scalar, a tensor of at most 64 elements, or
            tuples, lists and string-keyed mappings of these.
        where: what the value is, for the error message (e.g. ``"metadata"``).

    Raises:
        ValueError: naming ``where`` for anything else (store arrays as tensors instead).

    Example:
        >>> from_json(to_json({"t": (1, 2), "x": torch.tensor([0.5])}, "demo"))
        {'t': (1, 2), 'x': tensor([0.5000])}
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return {"__tuple__": [to_json(v, where) for v in value]}
    if isinstance(value, list):
        return [to_json(v, where) for v in value]
    if isinstance(value, Mapping):
        # already-encoded values (e.g. from scheduler_state_to_json) pass through unchanged
        if set(value) == {"__tuple__"} and isinstance(value["__tuple__"], list):
            return {"__tuple__": [to_json(v, where) for v in value["__tuple__"]]}
        if set(value) == {"__tensor__", "dtype"}:
            return dict(value)
        if "__tuple__" in value or "__tensor__" in value:
            raise ValueError(f"{where}: keys '__tuple__'/'__tensor__' are reserved; rename them")
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"{where}: mapping keys must be strings for JSON, got {[k for k in value][:5]!r}")
        return {k: to_json(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Tensor) and value.numel() <= 64:
        return {"__tensor__": value.detach().cpu().tolist(), "dtype": str(value.dtype).removeprefix("torch.")}
    raise ValueError(
        f"{where}: {type(value).__name__} is not JSON-serialisable; store arrays as tensors and "
        "metadata as str/int/float/bool/None/list/dict"
    )


def from_json(value: Any) -> Any:
    """Inverse of :func:`to_json`: tagged tuples and tensors come back as tuples and tensors.

    Example:
        >>> from_json({"t": {"__tuple__": [1, 2]}, "x": {"__tensor__": [1.5], "dtype": "float32"}, "n": [3]})
        {'t': (1, 2), 'x': tensor([1.5000]), 'n': [3]}
    """
    if isinstance(value, list):
        return [from_json(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(from_json(v) for v in value["__tuple__"])
        if set(value) == {"__tensor__", "dtype"}:
            return torch.tensor(value["__tensor__"], dtype=getattr(torch, value["dtype"]))
        return {k: from_json(v) for k, v in value.items()}
    return value


def _digest(meta_json: str, tensors: Mapping[str, Tensor]) -> str:
    h = hashlib.sha256()
    h.update(FORMAT_VERSION.encode())
    h.update(b"\0")
    h.update(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(b"\0" + name.encode() + b"\0" + str(t.dtype).encode() + repr(tuple(t.shape)).encode() + b"\0")
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- save / load


def save_checkpoint(path: str | Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, Any]) -> Path:
    """Write ``tensors`` and JSON ``metadata`` to a safetensors file, atomically.

    The bytes go to a temporary file in the same folder, which is fsynced and then renamed over
    ``path`` (``os.replace``): a crash midway leaves any existing checkpoint intact.

    Args:
        path: destination (parents are created).
        tensors: name → tensor (any device; stored from CPU copies). Shared or non-contiguous tensors
            are copied.
        metadata: JSON-serialisable mapping (tuples round-trip as tuples).

    Returns:
        The path written.

    Example:
        >>> save_checkpoint("/tmp/x/ck.safetensors", {"w": torch.zeros(1)}, {"step": 3})  # doctest: +SKIP
    """
    path = Path(path)
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be a mapping, got {type(metadata).__name__}")
    bad = [k for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"tensors must map str names to torch.Tensor; bad entries: {bad[:5]!r}")
    # safetensors refuses tensors that share memory; give each its own contiguous CPU copy.
    data = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    meta_json = json.dumps(to_json(dict(metadata), "metadata"), sort_keys=True)
    header = {
        "format_version": FORMAT_VERSION,
        "medmeta": meta_json,
        "sha256": _digest(meta_json, data),
        "code": code_version(),
    }
    blob = st_save(data, metadata=header)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; give it the permissions any other new file would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (POSIX); not possible on every platform
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
    return path


def _refuse(path: Path, why: str) -> ValueError:
    return ValueError(
        f"{path}: {why}; it is not a valid MedMeta checkpoint. Re-create it with save_checkpoint "
        "(or re-run the step that wrote it) instead of using this file"
    )


def load_checkpoint(path: str | Path, *, expect: Mapping[str, Any] | None = None) -> Checkpoint:
    """Load and verify a checkpoint written by :func:`save_checkpoint`; never unpickles anything.

    Args:
        path: the ``.safetensors`` file.
        expect: metadata that must match, compared recursively on the given keys only, e.g.
            ``{"kind": "encoder", "backbone": {"name": "conv4"}}``.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a safetensors file (e.g. a pickle), truncated, header or tensors edited
            (checksum mismatch), or ``expect`` mismatch (the message names the field and both values).

    Example:
        >>> ck = load_checkpoint("runs/x/encoder.safetensors", expect={"kind": "encoder"})  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; check the path or create it first")
    raw = path.read_bytes()
    # A safetensors file is an 8-byte little-endian header length followed by a JSON object; only
    # when that structure is absent do the pickle (0x80 protocol byte) and zip ("PK", torch.save)
    # magics say what the file is. (A valid header length can itself start with byte 0x80.)
    if raw[8:9] != b"{" and (raw[:1] == b"\x80" or raw[:2] == b"PK"):
        raise _refuse(path, "looks like a pickle / torch.save file (refused without unpickling)")
    if len(raw) < 8:
        raise _refuse(path, f"is truncated ({len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > _MAX_HEADER or 8 + n > len(raw):
        raise _refuse(
            path, f"has a bad or truncated safetensors header (declares {n} header bytes, file has {len(raw)})"
        )
    try:
        header = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _refuse(path, f"has a corrupt safetensors header ({err})") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or "medmeta" not in meta or "sha256" not in meta:
        raise _refuse(path, "has no MedMeta metadata (a foreign safetensors file?)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise _refuse(path, f"has format_version {meta.get('format_version')!r}, this library reads {FORMAT_VERSION!r}")
    try:
        tensors = st_load(raw)
    except Exception as err:  # safetensors raises its own SafetensorError for a bad body
        raise _refuse(path, f"cannot be parsed as safetensors ({err})") from None
    if _digest(meta["medmeta"], tensors) != meta["sha256"]:
        raise _refuse(path, "fails its SHA-256 check (the file was modified or corrupted after writing)")
    try:
        metadata = from_json(json.loads(meta["medmeta"]))
    except json.JSONDecodeError as err:
        raise _refuse(path, f"has unreadable metadata JSON ({err})") from None
    if expect is not None:
        _check_expect(path, metadata, expect, "")
    code = meta.get("code")
    return Checkpoint(tensors=dict(tensors), metadata=metadata, path=path, code=code if isinstance(code, str) else None)


def _check_expect(path: Path, have: Any, want: Mapping[str, Any], prefix: str) -> None:
    for key, expected in want.items():
        name = f"{prefix}{key}"
        if not isinstance(have, Mapping) or key not in have:
            raise ValueError(
                f"{path}: metadata has no field {name!r} (expected {expected!r}); is this the right checkpoint?"
            )
        got = have[key]
        if isinstance(expected, Mapping) and isinstance(got, Mapping):
            _check_expect(path, got, expected, f"{name}.")
        elif _norm(got) != _norm(expected):
            raise ValueError(f"{path}: field {name!r} is {got!r} in the checkpoint, expected {expected!r}")


def _norm(v: Any) -> Any:
    """Compare tuples and lists alike (JSON turns one into the other)."""
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _norm(x) for k, x in v.items()}
    return v


# ---------------------------------------------------------------- backbones


def save_backbone(path: str | Path, backbone: nn.Module, *, metadata: Mapping[str, Any] | None = None) -> Path:
    """Save a backbone built by ``create_backbone``: weights plus ``spec`` under ``metadata["backbone"]``.

    Example:
        >>> from medmeta_lib.models import create_backbone
        >>> save_backbone("/tmp/enc.safetensors", create_backbone("conv4"), metadata={"epochs": 3})  # doctest: +SKIP
    """
    spec = getattr(backbone, "spec", None)
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(
            "backbone has no 'spec'; build it with medmeta_lib.models.create_backbone so it can be rebuilt"
        )
    meta = {**dict(metadata or {}), "kind": "encoder", "backbone": dict(spec)}
    tensors = {k: v for k, v in backbone.state_dict().items()}
    return save_checkpoint(path, tensors, meta)


def load_backbone(path: str | Path, *, expected_name: str | None = None, **expected_kwargs: Any) -> nn.Module:
    """Rebuild a backbone from :func:`save_backbone` output and load its weights strictly.

    Files that hold more than the encoder (e.g. a SimCLR checkpoint with a projection head and
    optimiser state) name the encoder's tensors by the metadata field ``encoder_prefix``
    (e.g. ``"encoder."``); only those are loaded.

    Args:
        path: checkpoint file.
        expected_name: backbone name the caller needs (None: accept any).
        **expected_kwargs: backbone arguments the caller needs (e.g. ``in_channels=1, hidden=64``);
            defaults are filled in on both sides, so ``{}`` and ``{"hidden": 64}`` agree for conv4.

    Raises:
        ValueError: not an encoder checkpoint, another backbone than expected, or weights that do not fit.

    Example:
        >>> net = load_backbone("runs/simclr/encoder.safetensors", expected_name="conv4")  # doctest: +SKIP
    """
    from medmeta_lib.models.backbones import create_backbone, resolve_backbone_kwargs

    ck = load_checkpoint(path)
    spec = ck.metadata.get("backbone")
    if ck.metadata.get("kind") != "encoder" or not isinstance(spec, Mapping):
        raise ValueError(
            f"{ck.path}: holds kind={ck.metadata.get('kind')!r}, not an encoder; pass a file written by save_backbone"
        )
    name, kwargs = spec["name"], dict(spec.get("kwargs", {}))
    have = resolve_backbone_kwargs(name, **kwargs)
    if expected_name is not None and expected_name != name:
        raise ValueError(
            f"{ck.path}: holds backbone {name!r} with {have}, expected {expected_name!r}; "
            "pass the matching backbone name/arguments or another checkpoint"
        )
    if expected_kwargs:
        want = resolve_backbone_kwargs(name, **expected_kwargs)
        diff = {k: (have.get(k), want[k]) for k in want if k in expected_kwargs and have.get(k) != want[k]}
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a!r}, expected {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"{ck.path}: backbone {name!r} was saved with other arguments ({detail}); use matching ones"
            )
    prefix = ck.metadata.get("encoder_prefix", "")
    if not isinstance(prefix, str):
        raise ValueError(f"{ck.path}: metadata encoder_prefix must be a string, got {prefix!r}")
    weights = {k[len(prefix) :]: v for k, v in ck.tensors.items() if k.startswith(prefix)}
    net = create_backbone(name, **kwargs)
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{ck.path}: weights do not fit backbone {name!r} with {have}: {err}") from None
    return net
