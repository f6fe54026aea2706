"""THE shard schema: the HDF5 contract between every generator, preprocessing stage and model.

Layout of one shard (``schema_version`` 1)::

    /                               attrs: schema="amodalkit-shard", schema_version, n_videos,
                                           provenance (JSON: who wrote it, with which config)
    /videos/<name>/                 attrs: provenance (JSON: seed, generator parameters, ...),
                                           flow_backend ("" when no flow)
        frames            (T, H, W, 3)   uint8    RGB
        visible_ids       (T, H, W)      uint16   0 = background, k + 1 = object k (no overlap)
        amodal            (K, T, H, W)   bool     amodal ground truth (zeros where unknown)
        amodal_annotated  (K, T)         bool     where `amodal` is ground truth
        presence          (K, T)         bool     object k is in the scene at frame t
        track_ids         (K,)           int64    tracker / source identity of object k
        source_frame_ids  (T,)           str      where each frame came from
      optional:
        flow              (T-1, H, W, 2) float16  forward flow: I[t+1][y+v, x+u] ~ I[t][y, x]
        flow_backward     (T-1, H, W, 2) float16  backward flow: I[t][y+v, x+u] ~ I[t+1][y, x]
        object_class      (K,)           int32    class id per object (dataset specific)

Every per-frame dataset is chunked one frame per chunk and gzip-compressed. Shards are
written under a temporary name and renamed when complete, so a file with the final name is
always whole; :func:`replace_flow` rewrites only the flow datasets of a shard (the rest is
copied as stored) under the same rule. Only this module calls ``create_dataset``.

Reading validates before allocating: attribute types (``schema_version`` and ``n_videos``
integers, ``provenance`` a JSON object, ``flow_backend`` a string), that ``/videos`` and
each video are groups and each field a dataset, the shapes and dtypes above, frame sizes
within :mod:`amodalkit.io.images`' limits, and that the bytes each dataset declares are held
by the file (contiguous data in full; gzip chunks at most deflate's 1032:1 ratio; no
virtual or external storage). Values are checked as they are read: ``visible_ids`` may
not name an object the video lacks and flow must be finite.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import atomic_path, is_hidden_or_temp
from amodalkit.io.images import check_size

SCHEMA_NAME = "amodalkit-shard"
SCHEMA_VERSION = 1
COMPRESSION = {"compression": "gzip", "compression_opts": 4, "shuffle": True}

REQUIRED_FIELDS = (
    "frames",
    "visible_ids",
    "amodal",
    "amodal_annotated",
    "presence",
    "track_ids",
    "source_frame_ids",
)
OPTIONAL_FIELDS = ("flow", "flow_backward", "object_class")
ALL_FIELDS = REQUIRED_FIELDS + OPTIONAL_FIELDS
FLOW_FIELDS = ("flow", "flow_backward")
MAX_EXPANSION = {None: 1, "gzip": 1100, "lzf": 100}


@dataclass
class Video:
    """One video with its objects, in memory. Shapes as in the module docstring."""

    name: str
    frames: np.ndarray
    visible_ids: np.ndarray
    amodal: np.ndarray
    amodal_annotated: np.ndarray
    presence: np.ndarray
    track_ids: np.ndarray
    source_frame_ids: np.ndarray
    flow: np.ndarray | None = None
    flow_backward: np.ndarray | None = None
    object_class: np.ndarray | None = None
    provenance: dict = field(default_factory=dict)
    flow_backend: str = ""

    @property
    def num_frames(self) -> int:
        return int(self.visible_ids.shape[0])

    @property
    def num_objects(self) -> int:
        return int(self.presence.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of the frames."""
        return int(self.visible_ids.shape[1]), int(self.visible_ids.shape[2])

    def visible_masks(self) -> np.ndarray:
        """Per-object visible masks decoded from the id map: (K, T, H, W) bool."""
        ids = np.arange(1, self.num_objects + 1, dtype=self.visible_ids.dtype)
        return self.visible_ids[None] == ids[:, None, None, None]

    def evolve(self, **changes: object) -> Video:
        """A copy with some fields replaced (e.g. ``flow``), re-validated."""
        new = replace(self, **changes)
        validate_video(new)
        return new


FLOW_STORAGE_MAX = float(np.finfo(np.float16).max)


def flow_for_storage(flow: np.ndarray) -> np.ndarray:
    """Flow as shards store it: float16, clipped to its finite range (T-1, H, W, 2)."""
    return np.clip(flow, -FLOW_STORAGE_MAX, FLOW_STORAGE_MAX).astype(np.float16)


def _expected_shapes(v: Video) -> dict[str, tuple[tuple[int, ...], tuple[str, ...]]]:
    t, h, w = v.visible_ids.shape if v.visible_ids.ndim == 3 else (-1, -1, -1)
    k = v.presence.shape[0] if v.presence.ndim == 2 else -1
    return {
        "frames": ((t, h, w, 3), ("u1",)),
        "visible_ids": ((t, h, w), ("u2",)),
        "amodal": ((k, t, h, w), ("b1",)),
        "amodal_annotated": ((k, t), ("b1",)),
        "presence": ((k, t), ("b1",)),
        "track_ids": ((k,), ("i8",)),
        "source_frame_ids": ((t,), ("U", "O", "S")),
        "flow": ((max(t - 1, 0), h, w, 2), ("f2", "f4")),
        "flow_backward": ((max(t - 1, 0), h, w, 2), ("f2", "f4")),
        "object_class": ((k,), ("i4",)),
    }


def _all_finite(arr: np.ndarray) -> bool:
    """No NaN or infinity in `arr`; float16 is checked on its bits (exponent all ones), much faster."""
    arr = np.asarray(arr)
    if arr.dtype == np.float16:
        return bool(((arr.view(np.uint16) & 0x7C00) != 0x7C00).all())
    return bool(np.isfinite(arr).all())


def _dtype_ok(dtype: np.dtype, allowed: tuple[str, ...]) -> bool:
    code = dtype.str[1:]
    return code in allowed or dtype.kind in allowed


def validate_video(v: Video, where: str | Path | None = None) -> None:
    """Check every array of `v` against the schema; raise AmodalkitError naming the field."""
    label = f"video {v.name!r}"
    if v.visible_ids.ndim != 3 or v.presence.ndim != 2:
        raise AmodalkitError(
            f"{label}: visible_ids must be (T, H, W) and presence (K, T), got "
            f"{v.visible_ids.shape} and {v.presence.shape}",
            where,
        )
    for name, (shape, dtypes) in _expected_shapes(v).items():
        arr = getattr(v, name)
        if arr is None:
            if name in REQUIRED_FIELDS:
                raise AmodalkitError(f"{label}: missing required field {name!r}", where)
            continue
        if tuple(arr.shape) != shape:
            raise AmodalkitError(f"{label}: {name} has shape {tuple(arr.shape)}, expected {shape}", where)
        if not _dtype_ok(np.dtype(arr.dtype), dtypes):
            raise AmodalkitError(f"{label}: {name} has dtype {arr.dtype}, expected one of {dtypes}", where)
    if int(v.visible_ids.max(initial=0)) > v.num_objects:
        raise AmodalkitError(f"{label}: visible_ids refers to object {int(v.visible_ids.max())} "
                             f"but the video has {v.num_objects} objects", where)
    for name in FLOW_FIELDS:
        arr = getattr(v, name)
        if arr is not None and not _all_finite(arr):
            raise AmodalkitError(f"{label}: {name} holds NaN or infinite values", where)


def _put(group: h5py.Group, name: str, data: np.ndarray, chunks: tuple[int, ...] | None) -> None:
    """The one ``create_dataset``: chunked and gzip-compressed where `chunks` is given and data not empty."""
    opts = COMPRESSION if chunks is not None and data.size else {}
    group.create_dataset(name, data=data, chunks=chunks if data.size else None, **opts)


def _put_flow(group: h5py.Group, name: str, flow: np.ndarray) -> None:
    """A ``(T-1, H, W, 2)`` flow dataset as float16, one frame per chunk."""
    n, h, w = flow.shape[:3]
    _put(group, name, np.ascontiguousarray(flow, np.float16), (1, h, w, 2) if n else None)


def _write_video(group: h5py.Group, v: Video) -> None:
    h, w = v.size
    k = v.num_objects

    _put(group, "frames", np.ascontiguousarray(v.frames, np.uint8), (1, h, w, 3))
    _put(group, "visible_ids", np.ascontiguousarray(v.visible_ids, np.uint16), (1, h, w))
    _put(group, "amodal", np.ascontiguousarray(v.amodal, bool), (1, 1, h, w) if k else None)
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
            _put_flow(group, name, arr)
    if v.object_class is not None:
        _put(group, "object_class", np.asarray(v.object_class, np.int32), None)
    group.attrs["provenance"] = json.dumps(v.provenance, sort_keys=True)
    group.attrs["flow_backend"] = v.flow_backend


def write_shard(path: str | Path, videos: Iterable[Video], provenance: dict | None = None) -> Path:
    """Validate and write `videos` to `path` atomically (temp file + rename); return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver=("earliest", "v110")) as f:
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


def _dataset(g: h5py.Group, name: str, video: str, path: Path) -> h5py.Dataset:
    """Member `name` of a video group, which must be a dataset whose bytes the file holds."""
    obj = g.get(name)
    if obj is None:
        raise AmodalkitError(f"video {video!r}: missing dataset {name!r}", path)
    if not isinstance(obj, h5py.Dataset):
        raise AmodalkitError(f"video {video!r}: {name!r} must be a dataset, found a {type(obj).__name__}",
                             path)
    if obj.is_virtual or obj.external:
        raise AmodalkitError(f"video {video!r}: {name} is stored outside the shard (virtual or external "
                             "dataset)", path)
    if h5py.check_string_dtype(obj.dtype) is None and obj.dtype.kind != "O":
        declared = int(np.prod(obj.shape, dtype=np.float64)) * obj.dtype.itemsize if obj.shape else 0
        stored = obj.id.get_storage_size()
        ratio = MAX_EXPANSION.get(obj.compression, max(MAX_EXPANSION.values())) if obj.chunks else 1
        if declared > stored * ratio:
            raise AmodalkitError(f"video {video!r}: {name} declares shape {obj.shape} ({declared} bytes) but "
                                 f"the file holds {stored} bytes of it (truncated or forged)", path)
    return obj


class ShardReader:
    """Read-only access to one shard; validates the whole layout on open.

    The h5py handle is opened lazily and re-opened in a forked child (DataLoader worker),
    never shared across ``fork``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
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
        self._meta = [self._validate_group(f["videos"].get(n), n) for n in self.video_names]
        n_videos = _int_attr(f.attrs, "n_videos", -1, "root", self.path)
        if n_videos != len(self.video_names):
            raise AmodalkitError(
                f"shard is incomplete: root says {n_videos} videos, found {len(self.video_names)}",
                self.path,
            )

    def _handle(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            if not self.path.exists():
                raise AmodalkitError("shard file does not exist", self.path)
            try:
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

    def _validate_group(self, g: h5py.Group | None, name: str) -> dict:
        if not isinstance(g, h5py.Group):
            raise AmodalkitError(f"video {name!r} must be a group, found a {type(g).__name__}", self.path)
        ids = g.get("visible_ids")
        if isinstance(ids, h5py.Dataset) and len(ids.shape) == 3 and all(ids.shape[1:]):
            check_size(*ids.shape[1:], f"video {name!r}: frames", self.path)
        present = [n for n in ALL_FIELDS if n in REQUIRED_FIELDS or n in g]
        ds = {n: _dataset(g, n, name, self.path) for n in present}
        stub = Video(
            name=name,
            frames=_ShapeOnly(ds["frames"]),
            visible_ids=_ShapeOnly(ds["visible_ids"]),
            amodal=_ShapeOnly(ds["amodal"]),
            amodal_annotated=_ShapeOnly(ds["amodal_annotated"]),
            presence=_ShapeOnly(ds["presence"]),
            track_ids=_ShapeOnly(ds["track_ids"]),
            source_frame_ids=_ShapeOnly(ds["source_frame_ids"], "O"),
            **{n: _ShapeOnly(ds[n]) for n in OPTIONAL_FIELDS if n in ds},
        )
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
            "fields": tuple(n for n in ALL_FIELDS if n in g),
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
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def meta(self, index: int) -> dict:
        """Shape facts of video `index` without reading its arrays."""
        return self._meta[index]

    def read_field(self, index: int, name: str, selection: object = ()) -> np.ndarray:
        """Read one dataset (optionally a slice of it) of video `index`."""
        g = self._handle()["videos"][self.video_names[index]]
        if name not in g:
            raise AmodalkitError(f"video {self.video_names[index]!r} has no {name!r}", self.path)
        try:
            data = g[name][selection]
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


class _ShapeOnly:
    """Shape/dtype view of an h5py dataset, so validation never reads data."""

    def __init__(self, ds: h5py.Dataset, kind: str | None = None) -> None:
        self.shape = ds.shape
        self.dtype = np.dtype(kind) if kind else ds.dtype
        self.ndim = len(ds.shape)


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


def expand_shard_paths(patterns: str | Path | Iterable[str | Path]) -> list[Path]:
    """Expand globs / paths to a sorted list of shard files, each once; error when nothing matches.

    Globs and folders never yield dotfiles, so temporary files of a running or killed run
    (``.NAME.tmp-PID.h5``) and locks are skipped.
    """
    if isinstance(patterns, (str, Path)):
        patterns = [patterns]
    paths: list[Path] = []
    for pat in patterns:
        pat = str(pat)
        if glob.has_magic(pat):
            found = sorted(p for p in glob.glob(pat) if not is_hidden_or_temp(p))
            if not found:
                raise AmodalkitError("no shard matches this pattern", pat)
            paths.extend(Path(p) for p in found)
        else:
            p = Path(pat)
            if p.is_dir():
                found = sorted(f for f in p.glob("*.h5") if not is_hidden_or_temp(f))
                if not found:
                    raise AmodalkitError("folder holds no .h5 shards", p)
                paths.extend(found)
            elif not p.exists():
                raise AmodalkitError("no such file", p)
            else:
                paths.append(p)
    seen: set[str] = set()
    unique = []
    for p in paths:
        if os.path.realpath(p) not in seen:
            seen.add(os.path.realpath(p))
            unique.append(p)
    return unique


def iter_videos(paths: Iterable[Path], fields: Sequence[str] | None = None) -> Iterator[tuple[Path, Video]]:
    """Yield (shard path, video) over several shards in order."""
    for p in paths:
        with ShardReader(p) as r:
            for i in range(len(r)):
                yield p, r.read_video(i, fields)


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


def _checked_flow(flow: np.ndarray, meta: dict, video: str, name: str, path: Path) -> np.ndarray:
    """`flow` as float16 after checking it against the video's shape facts (and that it is finite)."""
    flow = np.asarray(flow)
    h, w = meta["size"]
    shape = (max(meta["num_frames"] - 1, 0), h, w, 2)
    if flow.shape != shape:
        raise AmodalkitError(f"video {video!r}: {name} has shape {flow.shape}, expected {shape}", path)
    if not _dtype_ok(flow.dtype, ("f2", "f4")):
        raise AmodalkitError(f"video {video!r}: {name} has dtype {flow.dtype}, expected float16 or float32",
                             path)
    with np.errstate(over="ignore"):
        flow = np.ascontiguousarray(flow, np.float16)
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


def replace_flow(path: str | Path, flow_of: Callable[[str, np.ndarray], tuple[np.ndarray, np.ndarray]],
                 flow_backend: str, provenance_update: dict | None = None) -> Path:
    """Replace ``flow`` and ``flow_backward`` of every video of a shard, copying all else undecoded; atomic.

    `flow_of(name, frames)` gets each video's ``(T, H, W, 3)`` frames (read once from the
    shard) and returns its forward and backward flow, each ``(T-1, H, W, 2)``. Every other
    dataset and attribute goes into a temporary file beside the shard as an HDF5 object copy
    (compressed chunks move as stored, nothing is decoded or re-encoded); the new flow is
    written as :func:`write_shard` writes it (float16, one frame per chunk, gzip) with the
    video's ``flow_backend`` set, and the root provenance is updated with `provenance_update`.
    The file is synced and renamed over `path`, so a kill at any point leaves the old shard whole.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        with ShardReader(path) as reader, h5py.File(tmp, "w", libver=("earliest", "v110")) as dst:
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
                pair = flow_of(name, reader.read_field(i, "frames"))
                for field_name, flow in zip(FLOW_FIELDS, pair, strict=True):
                    _put_flow(group, field_name, _checked_flow(flow, reader.meta(i), name, field_name, path))
                group.attrs["flow_backend"] = flow_backend
        _sync(tmp)
    _sync(path.parent)
    return path
