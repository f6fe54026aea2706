"""Writing shards (the only module that creates datasets): whole shards, and flow alone."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import h5py
import numpy as np
from h5py import h5a, h5d, h5g, h5o, h5p, h5s, h5t

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import atomic_path
from amodalkit.io.chunk_codec import (
    ESTIMATED_FLOW,
    EXACT_FLOW,
    PER_FRAME,
    Deflate,
    chunk_blocks,
    encode_chunk,
    frames_per_chunk,
)
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shards import (
    FLOW_FIELDS,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    Video,
    _all_finite,
    _dtype_ok,
    quantized_flow,
    validate_video,
)

#: small datasets (per-object and per-frame facts) up to this size go in the object header
COMPACT_BYTES = 16 << 10


_TYPES: dict[np.dtype, h5t.TypeID] = {}


def _type(dtype: np.dtype) -> h5t.TypeID:
    """The HDF5 type of a numpy dtype (h5py's mapping: bool is h5py's enum), built once per dtype."""
    dtype = np.dtype(dtype)
    if dtype not in _TYPES:
        tid = h5t.py_create(dtype)
        if dtype.kind == "S":
            tid = tid.copy()
            tid.set_cset(h5t.CSET_UTF8)
        _TYPES[dtype] = tid
    return _TYPES[dtype]


_STR = h5py.string_dtype()
_STR_FILE_TYPE = h5t.py_create(_STR, logical=True)  # variable-length UTF-8, as h5py's attrs store a str
_STR_MEMORY_TYPE = h5t.py_create(_STR)


def _put_str_attr(oid: h5g.GroupID, name: str, value: str) -> None:
    """A str attribute in h5py's own layout, through the low-level API (a third of ``attrs[...] = ...``)."""
    attr = h5a.create(oid, name.encode(), _STR_FILE_TYPE, h5s.create_simple(()))
    attr.write(np.asarray(value, dtype=_STR), mtype=_STR_MEMORY_TYPE)


def _new_group(parent: h5py.Group, name: str) -> h5py.Group:
    """A new member group (the low-level call, without the high-level checks)."""
    return h5py.Group(h5g.create(parent.id, name.encode()))


def _new_dataset(group: h5py.Group, name: str, data: np.ndarray, dcpl: h5p.PropDCID) -> h5d.DatasetID:
    """The one dataset creation of amodalkit (no timestamps, so equal arrays give equal bytes)."""
    dcpl.set_obj_track_times(False)
    return h5d.create(group.id, name.encode(), _type(data.dtype), h5s.create_simple(data.shape), dcpl=dcpl)


def _put(group: h5py.Group, name: str, data: np.ndarray) -> None:
    """A small dataset, unchunked: compact (in the object header) up to ``COMPACT_BYTES``."""
    data = np.ascontiguousarray(data)
    dcpl = h5p.create(h5p.DATASET_CREATE)
    if 0 < data.nbytes <= COMPACT_BYTES:
        dcpl.set_layout(h5d.COMPACT)
    ds = _new_dataset(group, name, data, dcpl)
    if data.size:
        ds.write(h5s.ALL, h5s.ALL, data, mtype=_type(data.dtype))


_CHUNKED_DCPLS: dict[tuple[tuple[int, ...], int], h5p.PropDCID] = {}


def _chunked_dcpl(chunk: tuple[int, ...], level: int) -> h5p.PropDCID:
    """Creation properties of a chunked dataset (shuffle + deflate declared), built once per chunk shape."""
    key = (chunk, level)
    if key not in _CHUNKED_DCPLS:
        dcpl = h5p.create(h5p.DATASET_CREATE)
        dcpl.set_chunk(chunk)
        dcpl.set_shuffle()
        dcpl.set_deflate(level)
        dcpl.set_fill_time(h5d.FILL_TIME_NEVER)
        dcpl.set_obj_track_times(False)
        _CHUNKED_DCPLS[key] = dcpl
    return _CHUNKED_DCPLS[key]


def _put_chunked(group: h5py.Group, name: str, data: np.ndarray, axis: int = 0,
                 windowed: bool = False, how: Deflate = PER_FRAME) -> None:
    """A per-frame dataset (frames along `axis`), chunked by :func:`frames_per_chunk`, chunks encoded here."""
    data = np.ascontiguousarray(data)
    if not data.size:
        _put(group, name, data)
        return
    per = frames_per_chunk(data.nbytes // data.shape[axis], data.shape[axis], windowed)
    chunk = list(data.shape)
    chunk[axis] = per
    ds = _new_dataset(group, name, data, _chunked_dcpl(tuple(chunk), how.level))
    for offset, block in chunk_blocks(data, axis, per):
        ds.write_direct_chunk(offset, encode_chunk(block, how))


def _flow_deflate(backend: str) -> Deflate:
    """How a flow is deflated: the generator's exact flow compresses well, estimated flow does not."""
    return EXACT_FLOW if backend == "exact" else ESTIMATED_FLOW


def _stored_flow(flow: np.ndarray, backend: str) -> np.ndarray:
    """`flow` as the shard stores it: float16, and quantized unless it is the generator's exact flow."""
    return np.ascontiguousarray(flow, np.float16) if backend == "exact" else quantized_flow(flow)


def _source_ids(ids: np.ndarray) -> np.ndarray:
    """Source frame ids as fixed-length UTF-8 bytes (readers decode them to str)."""
    encoded = [str(s).encode("utf-8") for s in ids]
    return np.asarray(encoded, dtype=f"S{max([len(b) for b in encoded], default=1) or 1}")


def _write_video(group: h5py.Group, v: Video) -> None:
    _put_chunked(group, "frames", v.frames.astype(np.uint8, copy=False))
    _put_chunked(group, "visible_ids", v.visible_ids.astype(np.uint16, copy=False))
    _put_chunked(group, "amodal", v.amodal.astype(bool, copy=False), axis=1)
    _put(group, "amodal_annotated", np.asarray(v.amodal_annotated, bool))
    _put(group, "presence", np.asarray(v.presence, bool))
    _put(group, "track_ids", np.asarray(v.track_ids, np.int64))
    _put(group, "source_frame_ids", _source_ids(v.source_frame_ids))
    for name in FLOW_FIELDS:
        arr = getattr(v, name)
        if arr is not None:
            _put_chunked(group, name, _stored_flow(arr, v.flow_backend), windowed=True,
                         how=_flow_deflate(v.flow_backend))
    if v.object_class is not None:
        _put(group, "object_class", np.asarray(v.object_class, np.int32))
    if v.pred_amodal is not None:
        _put_chunked(group, "pred_amodal", v.pred_amodal.astype(np.uint8, copy=False), axis=1)
    _put_str_attr(group.id, "provenance", json.dumps(v.provenance, sort_keys=True))
    _put_str_attr(group.id, "flow_backend", v.flow_backend)


def write_shard(path: str | Path, videos: Iterable[Video], provenance: dict | None = None) -> Path:
    """Validate and write `videos` to `path` atomically (temp file + rename); return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver=("earliest", "v110"), rdcc_nbytes=0) as f:
            f.attrs["schema"] = SCHEMA_NAME
            f.attrs["schema_version"] = SCHEMA_VERSION
            f.attrs["provenance"] = json.dumps(provenance or {}, sort_keys=True)
            root = f.create_group("videos")
            names: set[str] = set()
            for v in videos:
                validate_video(v, path)
                if v.name in names:
                    raise AmodalkitError(f"duplicate video name {v.name!r}", path)
                if not v.name or "/" in v.name or v.name == ".":
                    raise AmodalkitError(f"video name {v.name!r} cannot name an HDF5 group "
                                         "(empty, '.' or with '/')", path)
                names.add(v.name)
                _write_video(_new_group(root, v.name), v)
            f.attrs["n_videos"] = len(names)
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


def _copy_attrs(src: h5py.HLObject, dst: h5py.HLObject, skip: tuple[str, ...] = ()) -> None:
    """Every attribute of `src` but `skip` onto `dst`, with its stored type (str ones low-level)."""
    for key in src.attrs:
        if key in skip:
            continue
        attr = h5a.open(src.id, key.encode())
        if attr.shape == () and attr.get_type() == _STR_FILE_TYPE:
            value = np.empty((), dtype=_STR)
            attr.read(value, mtype=_STR_MEMORY_TYPE)
            _put_str_attr(dst.id, key, value[()])
        else:
            dst.attrs.create(key, src.attrs[key], dtype=attr.dtype)


def _copy_member(source: h5py.Group, group: h5py.Group, member: str, path: Path) -> None:
    """HDF5 object copy of one member (chunks as stored, never decoded), errors naming the shard."""
    try:
        h5o.copy(source.id, member.encode(), group.id, member.encode())
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
    rounded to ``FLOW_QUANTUM`` px and written float16 in the layout of :mod:`.chunk_codec`, with the
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
                source, group = src["videos"][name], _new_group(videos, name)
                _copy_attrs(source, group, skip=("flow_backend",))
                for member in source:
                    if member not in FLOW_FIELDS:
                        _copy_member(source, group, member, path)
                inputs = [reader.read_field(i, "frames")]
                if with_visible:
                    inputs.append(reader.read_field(i, "visible_ids"))
                pair = flow_of(name, *inputs)
                for field_name, flow in zip(FLOW_FIELDS, pair, strict=True):
                    stored = _checked_flow(flow, reader.meta(i), name, field_name, path, flow_backend)
                    _put_chunked(group, field_name, stored, windowed=True, how=_flow_deflate(flow_backend))
                _put_str_attr(group.id, "flow_backend", flow_backend)
        _sync(tmp)
    _sync(path.parent)
    return path
