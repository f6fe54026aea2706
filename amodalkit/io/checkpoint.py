"""Checkpoints: safetensors weights with the model name and config in the file's metadata.

Loading never unpickles code: the weights are plain tensors and the config is JSON, so a
checkpoint from an untrusted source cannot run anything. A JSON sidecar ``NAME.json`` with
the same config is written beside every checkpoint for people to read.

Reading validates the metadata's types, refuses non-finite weights, and
:func:`build_checked` builds the network first on the ``meta`` device (no memory) and
compares its parameter shapes with the tensors in the file, so a tiny file whose config
asks for a huge network is refused before anything is allocated.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import atomic_path, write_json

C = TypeVar("C")
M = TypeVar("M", bound=torch.nn.Module)

FORMAT = "amodalkit-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    """What a checkpoint holds: which model, its config, its weights and free-form extras."""

    model: str
    config: dict
    state_dict: dict[str, torch.Tensor]
    extra: dict


def save_checkpoint(path: str | Path, model: str, config: dict, state_dict: dict[str, torch.Tensor],
                    extra: dict | None = None, half: bool = False) -> Path:
    """Write weights (optionally as float16) and metadata atomically, plus a JSON sidecar."""
    path = Path(path)
    tensors = {}
    for k, v in state_dict.items():
        v = v.detach().cpu().contiguous()
        tensors[k] = v.half() if half and v.is_floating_point() else v
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "model": model,
            "config": json.dumps(config, sort_keys=True), "extra": json.dumps(extra or {}, sort_keys=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    write_json(path.with_suffix(".json"), {"model": model, "config": config, "extra": extra or {}})
    return path


def read_checkpoint(path: str | Path, expect_model: str | None = None) -> Checkpoint:
    """Read a checkpoint; raise AmodalkitError for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise AmodalkitError("checkpoint file does not exist", path)
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AmodalkitError(f"not a readable safetensors checkpoint (truncated or corrupt: {exc})",
                             path) from exc
    if meta.get("format") != FORMAT:
        raise AmodalkitError("not an amodalkit checkpoint (metadata 'format' missing)", path)
    version = meta.get("format_version", "0")
    if not version.isdigit():
        raise AmodalkitError(f"checkpoint metadata 'format_version' must be an integer, got {version!r:.40}",
                             path)
    if int(version) > FORMAT_VERSION:
        raise AmodalkitError("checkpoint format is newer than this amodalkit reads; upgrade", path)
    model = meta.get("model", "")
    if expect_model is not None and model != expect_model:
        raise AmodalkitError(f"checkpoint holds a {model!r} model, expected {expect_model!r}", path)
    try:
        config = json.loads(meta.get("config", "{}"))
        extra = json.loads(meta.get("extra", "{}"))
    except ValueError as exc:
        raise AmodalkitError(f"checkpoint metadata is not valid JSON ({exc})", path) from exc
    if not isinstance(config, dict) or not isinstance(extra, dict):
        raise AmodalkitError("checkpoint metadata 'config' and 'extra' must be JSON objects", path)
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise AmodalkitError(f"checkpoint weight {k!r} holds NaN or infinite values", path)
    return Checkpoint(model=model, config=config, state_dict=state, extra=extra)


def check_state_shapes(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Compare `module`'s weights (any device, ``meta`` too) with `state`: names and shapes must match."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise AmodalkitError(f"config does not match the weights: missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}", path)
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise AmodalkitError(f"config does not match the weights: {k} has shape {tuple(v.shape)}, "
                                 f"the model expects {tuple(own[k].shape)}", path)


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Load weights into `module`, naming missing/unexpected keys and shape mismatches."""
    check_state_shapes(module, state, path)
    own = module.state_dict()
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def build_checked(factory: Callable[[], M], state: dict[str, torch.Tensor], path: str | Path) -> M:
    """Build ``factory()`` on the meta device, check its shapes against `state`, then build and load it."""
    with torch.device("meta"):
        shell = factory()
    check_state_shapes(shell, state, path)
    module = factory()
    load_state_strict(module, state, path)
    return module


def config_from_dict(cls: type[C], data: dict, label: str) -> C:
    """Rebuild a config dataclass from ``asdict`` output (a checkpoint's JSON), refusing unknown keys."""
    if not isinstance(data, dict):
        raise AmodalkitError(f"{label} config must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise AmodalkitError(f"unknown {label} config keys {unknown}")
    try:
        return cls(**data)
    except (TypeError, ValueError, OverflowError) as exc:
        raise AmodalkitError(f"invalid {label} config ({exc})") from exc
