"""Digests of a folder's shards: whole-file bytes, and content (datasets and attributes) for Dask runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np


def shard_files(folder: Path) -> list[Path]:
    """The finished shards of `folder` in name order (temporary dotfiles of killed writers left out)."""
    return sorted(p for p in folder.glob("*.h5") if not p.name.startswith("."))


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of each shard file's bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in shard_files(folder)}


def attrs_bytes(obj: h5py.HLObject) -> bytes:
    """An HDF5 object's attributes as comparable bytes."""
    return repr(sorted((k, str(v)) for k, v in obj.attrs.items())).encode()


def member_bytes(name: str, obj: h5py.HLObject) -> bytes:
    """A group or dataset (name, attributes, dtype, shape, values) as comparable bytes."""
    data = obj[()] if isinstance(obj, h5py.Dataset) else np.zeros(0)
    shape = f"{data.dtype}{data.shape}".encode()
    values = repr(data.tolist()).encode() if data.dtype == object else np.ascontiguousarray(data).tobytes()
    return name.encode() + attrs_bytes(obj) + shape + values


def content_digests(folder: Path) -> dict[str, str]:
    """sha256 of every dataset (dtype, shape, bytes) and attribute of each shard, in name order.

    Shards written by Dask workers hold the same content but not always the same file bytes:
    HDF5 placed their object headers at other addresses in some runs (an open determinism
    question, see the notes); local --jobs runs are byte-identical.
    """
    out = {}
    for path in shard_files(folder):
        parts: list[bytes] = []
        with h5py.File(path) as f:
            parts.append(attrs_bytes(f))
            f.visititems(lambda name, obj, parts=parts: parts.append(member_bytes(name, obj)))
        out[path.name] = hashlib.sha256(b"".join(parts)).hexdigest()
    return out
