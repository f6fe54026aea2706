"""Writers of small hostile files: forged PNG headers, shards and checkpoints that declare huge sizes."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import h5py
import numpy as np
import torch
from safetensors.torch import save_file

from amodalkit.io.shards import SCHEMA_NAME, SCHEMA_VERSION


def png_chunk(kind: bytes, data: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def forged_png(path: Path, width: int, height: int, bit_depth: int = 8, color_type: int = 2) -> Path:
    """A PNG of a few dozen bytes whose valid header declares width x height pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(b"\0" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat)
                     + png_chunk(b"IEND", b""))
    return path


def declared_shard(path: Path, t: int, h: int, w: int, k: int = 1) -> Path:
    """A shard whose datasets declare (T, H, W) frames but hold no data (chunks never written)."""
    ch, cw = min(h, 1024), min(w, 1024)
    per_frame = {"frames": ((t, h, w, 3), np.uint8, (1, ch, cw, 3)),
                 "visible_ids": ((t, h, w), np.uint16, (1, ch, cw)),
                 "amodal": ((k, t, h, w), bool, (1, 1, ch, cw))}
    with h5py.File(path, "w") as f:
        f.attrs["schema"] = SCHEMA_NAME
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["provenance"] = "{}"
        f.attrs["n_videos"] = 1
        g = f.create_group("videos/v0")
        for name, (shape, dtype, chunks) in per_frame.items():
            g.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, compression="gzip")
        g["amodal_annotated"] = np.ones((k, t), bool)
        g["presence"] = np.ones((k, t), bool)
        g["track_ids"] = np.arange(k, dtype=np.int64)
        g.create_dataset("source_frame_ids", data=np.array([str(i) for i in range(t)], dtype=object),
                         dtype=h5py.string_dtype())
        g.attrs["provenance"] = "{}"
        g.attrs["flow_backend"] = ""
    return path


def raw_checkpoint(path: Path, config: dict, tensors: dict[str, torch.Tensor] | None = None,
                   model: str = "savos", meta: dict[str, str] | None = None) -> Path:
    """A safetensors file with amodalkit metadata (entries of `meta` override) around arbitrary tensors."""
    metadata = {"format": "amodalkit-checkpoint", "format_version": "1", "model": model,
                "config": json.dumps(config), "extra": "{}", **(meta or {})}
    save_file(tensors or {"x": torch.zeros(1)}, str(path), metadata=metadata)
    return path


def snapshot(*paths: Path) -> dict[Path, bytes]:
    """The bytes of every file under `paths` (files or folders), to check inputs stay untouched."""
    out: dict[Path, bytes] = {}
    for p in paths:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                out[f] = f.read_bytes()
    return out
