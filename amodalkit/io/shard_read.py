"""Reading shards: validated before anything is allocated, fields read lazily per video."""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

import h5py
import numpy as np
from h5py import h5d, h5g, h5o, h5t, h5z

from amodalkit.errors import AmodalkitError
from amodalkit.io.images import check_size
from amodalkit.io.remote import RemoteShard, as_shard_location
from amodalkit.io.shards import (
    ALL_FIELDS,
    FLOW_FIELDS,
    MAX_EXPANSION,
    REQUIRED_FIELDS,
    SCHEMA_NAME,
    SCHEMA_VERSION,
    Video,
    _all_finite,
    _dtype_ok,
    _expected_shapes,
)


def _decode_strings(arr: np.ndarray) -> np.ndarray:
    return np.asarray([s.decode() if isinstance(s, bytes) else str(s) for s in arr], dtype=object)


def _scalar(value: object) -> object:
    if isinstance(value, np.ndarray) and value.shape == ():
        return value[()]
    return value


def _int_attr(attrs: h5py.AttributeManager, name: str, default: int, label: str, path: Path) -> int:
    """An integer attribute, or AmodalkitError naming it when it holds another type."""
    value = _scalar(attrs.get(name, default))
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise AmodalkitError(f"{label} attribute {name!r} must be an integer, got {value!r:.60}", path)
    return int(value)


def _str_attr(attrs: h5py.AttributeManager, name: str, default: str, label: str, path: Path) -> str:
    """A string attribute, or AmodalkitError naming it when it holds another type."""
    value = _scalar(attrs.get(name, default))
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise AmodalkitError(f"{label} attribute {name!r} is not UTF-8 text", path) from exc
    if not isinstance(value, str):
        raise AmodalkitError(f"{label} attribute {name!r} must be a string, got {value!r:.60}", path)
    return value


def _json_attr(attrs: h5py.AttributeManager, name: str, label: str, path: Path) -> dict:
    """A JSON-object string attribute (e.g. ``provenance``) parsed."""
    text = _str_attr(attrs, name, "{}", label, path)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise AmodalkitError(f"{label} attribute {name!r} is not valid JSON ({exc})", path) from exc
    if not isinstance(data, dict):
        raise AmodalkitError(f"{label} attribute {name!r} must be a JSON object, got "
                             f"{type(data).__name__}", path)
    return data


_COMPRESSION_NAMES = {h5z.FILTER_DEFLATE: "gzip", h5z.FILTER_LZF: "lzf", h5z.FILTER_SZIP: "szip"}


def _kind(oid: object) -> str:
    """What an HDF5 object is, in h5py's words (for messages)."""
    for cls, name in ((h5d.DatasetID, "Dataset"), (h5g.GroupID, "Group"), (h5t.TypeID, "Datatype")):
        if isinstance(oid, cls):
            return name
    return type(oid).__name__


def _open_member(gid: h5g.GroupID, name: str) -> object | None:
    """The HDF5 object `name` of a group (h5py's low-level id), or None when there is none."""
    try:
        return h5o.open(gid, name.encode())
    except KeyError:
        return None


class _ShapeOnly:
    """Shape/dtype of a dataset, from its header, so validation never reads data."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.shape = shape
        self.dtype = dtype
        self.ndim = len(shape)


def _dataset(oid: object, name: str, video: str, path: Path) -> _ShapeOnly | None:
    """Member `name` of a video group (`oid`, its low-level id; None when absent): a dataset whose
    bytes the file holds. Read from HDF5's headers through h5py's low-level API (a high-level
    ``Dataset`` per check cost most of a shard's validation time)."""
    if oid is None:
        return None
    if not isinstance(oid, h5d.DatasetID):
        raise AmodalkitError(f"video {video!r}: {name!r} must be a dataset, found a {_kind(oid)}", path)
    dcpl = oid.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5d.VIRTUAL or dcpl.get_external_count():
        raise AmodalkitError(f"video {video!r}: {name} is stored outside the shard (virtual or external "
                             "dataset)", path)
    shape, dtype = tuple(oid.shape), oid.dtype
    if h5py.check_string_dtype(dtype) is None and dtype.kind != "O":
        declared = math.prod(shape) * dtype.itemsize if shape else 0
        stored = oid.get_storage_size()
        codes = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        compression = next((_COMPRESSION_NAMES[c] for c in codes if c in _COMPRESSION_NAMES), None)
        ratio = MAX_EXPANSION.get(compression, max(MAX_EXPANSION.values())) if layout == h5d.CHUNKED else 1
        if declared > stored * ratio:
            raise AmodalkitError(f"video {video!r}: {name} declares shape {shape} ({declared} bytes) but "
                                 f"the file holds {stored} bytes of it (truncated or forged)", path)
    return _ShapeOnly(shape, dtype)


#: datasets a reader keeps open (most recently read first out last): reopening one costs more than
#: reading a frame, and an open dataset keeps its last chunk (HDF5's chunk cache, 1 MiB each at most)
OPEN_DATASETS = 32


class ShardReader:
    """Read-only access to one shard; validates the whole layout on open.

    The h5py handle is opened lazily and re-opened in a forked child (DataLoader worker),
    never shared across ``fork``. The last ``OPEN_DATASETS`` datasets read stay open, so
    frame-by-frame and random single-frame reads neither look them up again nor decode a
    chunk twice in a row.
    """

    def __init__(self, path: str | Path | RemoteShard) -> None:
        self.path = as_shard_location(path)
        self._file: h5py.File | None = None
        self._remote: IO[bytes] | None = None
        self._pid: int | None = None
        self._open: OrderedDict[tuple[int, str], h5py.Dataset] = OrderedDict()
        try:
            self._open_and_validate()
        except (OSError, RuntimeError, KeyError, TypeError, ValueError) as exc:
            self.close()
            raise AmodalkitError(f"not a readable shard (corrupt layout: {exc})", self.path) from exc
        except BaseException:
            self.close()
            raise

    def _open_and_validate(self) -> None:
        f = self._handle()
        self.schema_version = _int_attr(f.attrs, "schema_version", -1, "root", self.path)
        self.provenance = _json_attr(f.attrs, "provenance", "root", self.path)
        self.video_names: list[str] = sorted(f["videos"].keys())
        self._meta = [self._validate_group(f["videos"].id, n) for n in self.video_names]
        n_videos = _int_attr(f.attrs, "n_videos", -1, "root", self.path)
        if n_videos != len(self.video_names):
            raise AmodalkitError(
                f"shard is incomplete: root says {n_videos} videos, found {len(self.video_names)}",
                self.path,
            )

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._open = OrderedDict()
            if not self.path.exists():
                raise AmodalkitError("shard file does not exist", self.path)
            try:
                if isinstance(self.path, RemoteShard):
                    self._remote = self.path.open()
                    self._file = h5py.File(self._remote, "r")
                else:
                    self._file = h5py.File(self.path, "r")
            except OSError as exc:
                raise AmodalkitError(f"not a readable HDF5 shard (truncated or corrupt: {exc})",
                                     self.path) from exc
            self._pid = os.getpid()
            attrs = self._file.attrs
            schema = _scalar(attrs.get("schema"))
            if isinstance(schema, bytes):
                schema = schema.decode("utf-8", "replace")
            if not isinstance(schema, str) or schema != SCHEMA_NAME:
                raise AmodalkitError("not an amodalkit shard (root attribute 'schema' missing)", self.path)
            version = _int_attr(attrs, "schema_version", -1, "root", self.path)
            if version > SCHEMA_VERSION:
                raise AmodalkitError(
                    f"schema version {version} is newer than this amodalkit reads "
                    f"({SCHEMA_VERSION}); upgrade amodalkit",
                    self.path,
                )
            if version < 1:
                raise AmodalkitError(f"invalid schema version {version}", self.path)
            if "videos" not in self._file:
                raise AmodalkitError("missing group '/videos'", self.path)
            if not isinstance(self._file.get("videos"), h5py.Group):
                raise AmodalkitError("'/videos' must be a group, found a dataset", self.path)
        return self._file

    def _validate_group(self, videos: h5g.GroupID, name: str) -> dict:
        gid = _open_member(videos, name)
        if not isinstance(gid, h5g.GroupID):
            raise AmodalkitError(f"video {name!r} must be a group, found a {_kind(gid)}", self.path)
        members = set(gid)
        ids = {n: _open_member(gid, n) if n.encode() in members else None for n in ALL_FIELDS}
        vis = ids["visible_ids"]
        if isinstance(vis, h5d.DatasetID) and len(vis.shape) == 3 and all(vis.shape[1:]):
            check_size(*vis.shape[1:], f"video {name!r}: frames", self.path)
        ds = {n: _dataset(ids[n], n, name, self.path) for n in ALL_FIELDS}
        missing = next((n for n in REQUIRED_FIELDS if ds[n] is None), None)
        if missing is not None:
            raise AmodalkitError(f"video {name!r}: missing dataset {missing!r}", self.path)
        stub = Video(
            name=name,
            **{n: ds[n] for n in ALL_FIELDS if n != "source_frame_ids"},
            source_frame_ids=_ShapeOnly(ds["source_frame_ids"].shape, np.dtype("O")),
        )
        g = h5py.Group(gid)
        _json_attr(g.attrs, "provenance", f"video {name!r}", self.path)
        for fname, (shape, dtypes) in _expected_shapes(stub).items():
            arr = getattr(stub, fname)
            if arr is None:
                continue
            if tuple(arr.shape) != shape:
                raise AmodalkitError(
                    f"video {name!r}: {fname} has shape {tuple(arr.shape)}, expected {shape}", self.path)
            if not _dtype_ok(np.dtype(arr.dtype), dtypes):
                raise AmodalkitError(
                    f"video {name!r}: {fname} has dtype {arr.dtype}, expected one of {dtypes}", self.path)
        return {
            "num_frames": stub.num_frames,
            "num_objects": stub.num_objects,
            "size": stub.size,
            "fields": tuple(n for n in ALL_FIELDS if ds[n] is not None),
            "flow_backend": _str_attr(g.attrs, "flow_backend", "", f"video {name!r}", self.path),
        }

    def __len__(self) -> int:
        return len(self.video_names)

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the h5py handle (it re-opens on the next read)."""
        self._open = OrderedDict()
        if self._pid == os.getpid():
            if self._file is not None:
                self._file.close()
            if self._remote is not None:
                self._remote.close()
        self._file = None
        self._remote = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_remote"] = None
        state["_pid"] = None
        state["_open"] = OrderedDict()
        return state

    def meta(self, index: int) -> dict:
        """Shape facts of video `index` without reading its arrays."""
        return self._meta[index]

    def _open_dataset(self, index: int, name: str) -> h5py.Dataset:
        """Dataset `name` of video `index`, from the open ones when it is among them."""
        f = self._handle()
        key = (index, name)
        ds = self._open.get(key)
        if ds is not None:
            self._open.move_to_end(key)
            return ds
        if name not in self._meta[index]["fields"]:
            raise AmodalkitError(f"video {self.video_names[index]!r} has no {name!r}", self.path)
        where = f"videos/{self.video_names[index]}/{name}".encode()
        ds = self._open[key] = h5py.Dataset(h5d.open(f.id, where))  # one path lookup, not three
        if len(self._open) > OPEN_DATASETS:
            self._open.popitem(last=False)
        return ds

    def read_field(self, index: int, name: str, selection: object = ()) -> np.ndarray:
        """Read one dataset (optionally a slice of it) of video `index`."""
        ds = self._open_dataset(index, name)
        try:
            data = ds[selection]
        except (OSError, RuntimeError) as exc:
            raise AmodalkitError(f"cannot read {name!r} of video {self.video_names[index]!r} "
                                 f"(corrupt data: {exc})", self.path) from exc
        if name == "visible_ids" and data.size and int(data.max()) > self._meta[index]["num_objects"]:
            raise AmodalkitError(f"video {self.video_names[index]!r}: visible_ids refers to object "
                                 f"{int(data.max())} but the video has {self._meta[index]['num_objects']} "
                                 "objects", self.path)
        if name in FLOW_FIELDS and not _all_finite(data):
            raise AmodalkitError(f"video {self.video_names[index]!r}: {name} holds NaN or infinite values",
                                 self.path)
        return _decode_strings(data) if name == "source_frame_ids" else data

    def read_video(self, index: int, fields: Sequence[str] | None = None) -> Video:
        """Read video `index` (all fields, or only `fields` plus the required shape carriers)."""
        g = self._handle()["videos"][self.video_names[index]]
        wanted = set(ALL_FIELDS if fields is None else fields) | {"visible_ids", "presence"}
        arrays: dict[str, np.ndarray | None] = {}
        for name in ALL_FIELDS:
            if name in g and name in wanted:
                arrays[name] = self.read_field(index, name)
            elif name in REQUIRED_FIELDS:
                arrays[name] = _placeholder(name, self._meta[index])
            else:
                arrays[name] = None
        label = f"video {self.video_names[index]!r}"
        return Video(
            name=self.video_names[index],
            provenance=_json_attr(g.attrs, "provenance", label, self.path),
            flow_backend=_str_attr(g.attrs, "flow_backend", "", label, self.path),
            **arrays,
        )

    def __iter__(self) -> Iterator[Video]:
        for i in range(len(self)):
            yield self.read_video(i)


def _placeholder(name: str, meta: dict) -> np.ndarray:
    t, k = meta["num_frames"], meta["num_objects"]
    h, w = meta["size"]
    shapes = {
        "frames": ((t, h, w, 3), np.uint8),
        "amodal": ((k, t, h, w), bool),
        "amodal_annotated": ((k, t), bool),
        "track_ids": ((k,), np.int64),
        "source_frame_ids": ((t,), object),
    }
    shape, dtype = shapes[name]
    return np.broadcast_to(np.zeros((), dtype), shape)


def open_shard(path: str | Path) -> ShardReader:
    """Open and validate a shard (raises AmodalkitError naming the file and the problem)."""
    return ShardReader(path)


def iter_videos(paths: Iterable[Path], fields: Sequence[str] | None = None) -> Iterator[tuple[Path, Video]]:
    """Yield (shard path, video) over several shards in order."""
    for p in paths:
        with ShardReader(p) as r:
            for i in range(len(r)):
                yield p, r.read_video(i, fields)
