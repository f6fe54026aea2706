"""Writing shards (the only module that calls ``create_dataset``): whole shards, and flow alone."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import h5py
import numpy as np

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import atomic_path
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shards import (
    COMPRESSION,
    ESTIMATED_FLOW_COMPRESSION,
    FLOW_FIELDS,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    Video,
    _all_finite,
    _dtype_ok,
    quantized_flow,
    validate_video,
)


def _put(group: h5py.Group, name: str, data: np.ndarray, chunks: tuple[int, ...] | None,
         compression: dict = COMPRESSION) -> None:
    """The one ``create_dataset``: chunked and compressed where `chunks` is given and data not empty."""
    opts = compression if chunks is not None and data.size else {}
    group.create_dataset(name, data=data, chunks=chunks if data.size else None, **opts)


def _stored_flow(flow: np.ndarray, backend: str) -> np.ndarray:
    """`flow` as the shard stores it: float16, and quantized unless it is the generator's exact flow."""
    return np.ascontiguousarray(flow, np.float16) if backend == "exact" else quantized_flow(flow)


def _put_flow(group: h5py.Group, name: str, stored: np.ndarray, backend: str) -> None:
    """A ``(T-1, H, W, 2)`` flow dataset (from :func:`_stored_flow`), one frame per chunk."""
    n, h, w = stored.shape[:3]
    _put(group, name, stored, (1, h, w, 2) if n else None,
         COMPRESSION if backend == "exact" else ESTIMATED_FLOW_COMPRESSION)


def _write_video(group: h5py.Group, v: Video) -> None:
    h, w = v.size
    k = v.num_objects

    _put(group, "frames", np.ascontiguousarray(v.frames, np.uint8), (1, h, w, 3))
    _put(group, "visible_ids", np.ascontiguousarray(v.visible_ids, np.uint16), (1, h, w))
    _put(group, "amodal", np.ascontiguousarray(v.amodal, bool), (k, 1, h, w) if k else None)
    _put(group, "amodal_annotated", np.asarray(v.amodal_annotated, bool), None)
    _put(group, "presence", np.asarray(v.presence, bool), None)
    _put(group, "track_ids", np.asarray(v.track_ids, np.int64), None)
    group.create_dataset(
        "source_frame_ids", data=np.asarray([str(s) for s in v.source_frame_ids], dtype=object),
        dtype=h5py.string_dtype(),
    )
    for name in FLOW_FIELDS:
        arr = getattr(v, name)
        if arr is not None:
            _put_flow(group, name, _stored_flow(arr, v.flow_backend), v.flow_backend)
    if v.object_class is not None:
        _put(group, "object_class", np.asarray(v.object_class, np.int32), None)
    if v.pred_amodal is not None:
        pred = np.ascontiguousarray(v.pred_amodal, np.uint8)
        _put(group, "pred_amodal", pred, (k, 1, h, w) if k else None)
    group.attrs["provenance"] = json.dumps(v.provenance, sort_keys=True)
    group.attrs["flow_backend"] = v.flow_backend


def write_shard(path: str | Path, videos: Iterable[Video], provenance: dict | None = None) -> Path:
    """Validate and write `videos` to `path` atomically (temp file + rename); return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver=("earliest", "v110"), rdcc_nbytes=0) as f:
            f.attrs["schema"] = SCHEMA_NAME
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["provenance"] = json.dumps(provenance or {}, sort_keys=True)
            root = f.create_group("videos")
            n = 0
            for v in videos:
                validate_video(v, path)
                if v.name in root:
                    raise AmodalkitError(f"duplicate video name {v.name!r}", path)
                _write_video(root.create_group(v.name), v)
                n += 1
            f.attrs["n_videos"] = n
    return path


def update_shard(path: str | Path, transform: Callable[[Video], Video],
                 provenance_update: dict | None = None) -> Path:
    """Rewrite every video of a shard through `transform`, atomically replacing the file."""
    path = Path(path)
    with ShardReader(path) as reader:
        prov = dict(reader.provenance)
        prov.update(provenance_update or {})
        videos = (transform(reader.read_video(i)) for i in range(len(reader)))
        return write_shard(path, videos, prov)


def _copy_attrs(src: h5py.HLObject, dst: h5py.HLObject) -> None:
    """Every attribute of `src` onto `dst`, with its stored type."""
    for key in src.attrs:
        dst.attrs.create(key, src.attrs[key], dtype=src.attrs.get_id(key).dtype)


def _copy_member(source: h5py.Group, group: h5py.Group, member: str, path: Path) -> None:
    """HDF5 object copy of one member (chunks as stored, never decoded), errors naming the shard."""
    try:
        source.copy(source[member], group, name=member)
    except (KeyError, OSError, RuntimeError, ValueError) as exc:
        raise AmodalkitError(f"cannot copy {source.name}/{member} (corrupt shard: {exc})", path) from exc


def _checked_flow(flow: np.ndarray, meta: dict, video: str, name: str, path: Path,
                  backend: str) -> np.ndarray:
    """`flow` as stored (:func:`_stored_flow`), checked against the video's shape facts and finite."""
    flow = np.asarray(flow)
    h, w = meta["size"]
    shape = (max(meta["num_frames"] - 1, 0), h, w, 2)
    if flow.shape != shape:
        raise AmodalkitError(f"video {video!r}: {name} has shape {flow.shape}, expected {shape}", path)
    if not _dtype_ok(flow.dtype, ("f2", "f4")):
        raise AmodalkitError(f"video {video!r}: {name} has dtype {flow.dtype}, expected float16 or float32",
                             path)
    flow = _stored_flow(flow, backend)
    if not _all_finite(flow):
        raise AmodalkitError(f"video {video!r}: {name} holds NaN or infinite values (as float16)", path)
    return flow


def _sync(path: Path) -> None:
    """Flush a file (or a folder's entries) to the disk; folders where the OS refuses are skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if path.is_dir():
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not path.is_dir():
            raise
    finally:
        os.close(fd)


def replace_flow(path: str | Path, flow_of: Callable[..., tuple[np.ndarray, np.ndarray]],
                 flow_backend: str, provenance_update: dict | None = None,
                 with_visible: bool = False) -> Path:
    """Replace ``flow`` and ``flow_backward`` of every video of a shard, copying all else undecoded; atomic.

    `flow_of(name, frames)` gets each video's ``(T, H, W, 3)`` frames (read once from the
    shard; with `with_visible` also its ``(T, H, W)`` visible id map as a third argument) and
    returns its forward and backward flow, each ``(T-1, H, W, 2)``. Every other
    dataset and attribute goes into a temporary file beside the shard as an HDF5 object copy
    (compressed chunks move as stored, nothing is decoded or re-encoded); the new flow is
    rounded to ``FLOW_QUANTUM`` px and written float16, one frame per chunk, gzip level 1, with the
    video's ``flow_backend`` set, and the root provenance is updated with `provenance_update`.
    The file is synced and renamed over `path`, so a kill at any point leaves the old shard whole.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with ShardReader(path) as reader, h5py.File(tmp, "w", libver=("earliest", "v110"),
                                                     rdcc_nbytes=0) as dst:
            src = reader._handle()
            _copy_attrs(src, dst)
            dst.attrs["provenance"] = json.dumps({**reader.provenance, **(provenance_update or {})},
                                                 sort_keys=True)
            videos = dst.create_group("videos")
            for i, name in enumerate(reader.video_names):
                source, group = src["videos"][name], videos.create_group(name)
                _copy_attrs(source, group)
                for member in source:
                    if member not in FLOW_FIELDS:
                        _copy_member(source, group, member, path)
                inputs = [reader.read_field(i, "frames")]
                if with_visible:
                    inputs.append(reader.read_field(i, "visible_ids"))
                pair = flow_of(name, *inputs)
                for field_name, flow in zip(FLOW_FIELDS, pair, strict=True):
                    stored = _checked_flow(flow, reader.meta(i), name, field_name, path, flow_backend)
                    _put_flow(group, field_name, stored, flow_backend)
                group.attrs["flow_backend"] = flow_backend
        _sync(tmp)
    _sync(path.parent)
    return path
