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
        source_frame_ids  (T,)           str      where each frame came from (UTF-8 bytes)
      optional:
        flow              (T-1, H, W, 2) float16  forward flow: I[t+1][y+v, x+u] ~ I[t][y, x]
        flow_backward     (T-1, H, W, 2) float16  backward flow: I[t][y+v, x+u] ~ I[t+1][y, x]
        object_class      (K,)           int32    class id per object (dataset specific)
        pred_amodal       (K, T, H, W)   uint8    a model's amodal probability x 255
                                                  (`amodalkit predict --format shard`; its
                                                  method in the root provenance "prediction")

Per-frame datasets are chunked along time and compressed (deflate + shuffle, any HDF5 reader
decodes them) by the rule of :mod:`amodalkit.io.chunk_codec`: 4 frames per chunk for the fields
read frame by frame, flow as many frames as fit in 1 MiB; small datasets are compact. Estimated
flow (any ``flow_backend`` but the generator's ``exact``) is rounded to :data:`FLOW_QUANTUM` px.
Shards written before this layout (one frame per chunk, h5py's gzip) read the same. Shards are
written under a temporary name and renamed when complete, so a file with the final name is
always whole; :func:`amodalkit.io.shard_write.replace_flow` rewrites only the flow datasets
of a shard (the rest is copied as stored) under the same rule. This module holds the schema
(the fields, :class:`Video`, :func:`validate_video`); :mod:`amodalkit.io.shard_write` is the
only module that creates datasets and :mod:`amodalkit.io.shard_read` reads.

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
import os
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import is_hidden_or_temp
from amodalkit.io.remote import RemoteShard, ShardLocation, expand_url, is_url

SCHEMA_NAME = "amodalkit-shard"


SCHEMA_VERSION = 1


#: estimated flow (``amodalkit flow``, the KINS-Video-Car build, ``tracks --flow``) is stored rounded
#: to this many pixels, float16's own spacing for 32-64 px motions, so the estimator's noise in
#: the low bits is not stored (DIS flow 4x smaller) and compresses fast
FLOW_QUANTUM = 1 / 32


REQUIRED_FIELDS = (
    "frames",
    "visible_ids",
    "amodal",
    "amodal_annotated",
    "presence",
    "track_ids",
    "source_frame_ids",
)


OPTIONAL_FIELDS = ("flow", "flow_backward", "object_class", "pred_amodal")


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
    pred_amodal: np.ndarray | None = None
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


def _cast(arr: np.ndarray, dtype: type) -> np.ndarray:
    """`arr` as a new float16 or float32 array; between those two through torch, whose SIMD casts are
    IEEE round-to-nearest-even like numpy's and 10x faster (numpy converts float16 element by element)."""
    arr = np.asarray(arr)
    if {arr.dtype, np.dtype(dtype)} == {np.dtype(np.float16), np.dtype(np.float32)}:
        import torch

        source = arr if arr.flags.c_contiguous and arr.flags.writeable else np.array(arr)
        return torch.from_numpy(source).to(torch.float16 if dtype is np.float16 else torch.float32).numpy()
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(dtype)


def quantized_flow(flow: np.ndarray) -> np.ndarray:
    """`flow` rounded to ``FLOW_QUANTUM`` px as float16: how shards store estimated flow (overflow: inf).

    One float32 pass in torch (scale, round half to even, unscale, cast): the bits of numpy's
    ``rint(flow / FLOW_QUANTUM) * FLOW_QUANTUM`` in float32 then float16, as the scale is a power of two.
    """
    import torch

    steps = torch.from_numpy(_cast(flow, np.float32))  # a new array: the caller's stays
    return steps.mul_(1 / FLOW_QUANTUM).round_().mul_(FLOW_QUANTUM).to(torch.float16).numpy()


def flow_for_storage(flow: np.ndarray) -> np.ndarray:
    """Flow as shards store it: float16, clipped to its finite range (T-1, H, W, 2)."""
    stored = _cast(flow, np.float16)
    if _all_finite(stored):  # nothing beyond float16's range: clipping would change nothing
        return stored
    return _cast(np.clip(flow, -FLOW_STORAGE_MAX, FLOW_STORAGE_MAX), np.float16)


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
        "pred_amodal": ((k, t, h, w), ("u1",)),
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


def expand_shard_paths(patterns: str | Path | Iterable[str | Path],
                       remote: bool = False) -> list[ShardLocation]:
    """Expand globs, paths and fsspec URLs to a sorted list of shard files, each once; none is an error.

    Globs and folders never yield dotfiles, so temporary files of a running or killed run
    (``.NAME.tmp-PID.h5``) and locks are skipped. With `remote`, a ``scheme://`` pattern is
    expanded by fsspec into :class:`~amodalkit.io.remote.RemoteShard` locations; without it
    (a caller that writes beside its inputs or needs local files) a URL is refused.
    """
    if isinstance(patterns, (str, Path)):
        patterns = [patterns]
    paths: list[ShardLocation] = []
    for pat in patterns:
        pat = str(pat)
        if is_url(pat):
            if not remote:
                raise AmodalkitError("this command reads local shards only (evaluate and info read URLs); "
                                     "copy the shards here first", pat)
            paths.extend(expand_url(pat))
        elif glob.has_magic(pat):
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
        key = str(p) if isinstance(p, RemoteShard) else os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
