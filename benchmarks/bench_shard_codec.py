"""Shard write CPU time under ISA-L direct chunk writes, against ``write_shard``, same videos, same run.

    pip install isal==1.9.1    # only this script needs it; the package does not
    python benchmarks/bench_shard_codec.py --videos 100 --repeats 5 --dir /dev/shm

Tests whether the generator's write can fall far enough for its CPU time to reach 1/3 of the
official layout's (issue 17). "Direct" rows skip HDF5's filter pipeline: each chunk is shuffled
here (HDF5's byte shuffle: byte planes one after another) and compressed with ISA-L's zlib stream
(``isal_zlib.compress``, the same format as the deflate filter, so a plain h5py reads the file),
then stored with ``write_direct_chunk``. The datasets keep the declared gzip + shuffle filters.
Every file is read back with h5py (``bench_generator._read_back``) and compared with the
videos; rows interleave (order rotating every repeat); CPU is ``time.process_time`` per video,
one compute thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import h5py
import numpy as np
from bench_generator import _read_back, write_layout
from isal import isal_zlib
from machine import cpu_name

from amodalkit.datasets import chewing_gum as cg
from amodalkit.io.shard_write import write_shard
from amodalkit.io.shards import Video


def _direct(group: h5py.Group, name: str, data: np.ndarray, axis: int, per_chunk: int, level: int) -> None:
    """`data` chunked `per_chunk` along `axis` (whole along the others), written chunk by chunk."""
    chunk = list(data.shape)
    chunk[axis] = per_chunk
    ds = group.create_dataset(name, shape=data.shape, dtype=data.dtype, chunks=tuple(chunk),
                              compression="gzip", compression_opts=3, shuffle=True)
    item = data.dtype.itemsize
    for start in range(0, data.shape[axis], per_chunk):
        index = [slice(None)] * data.ndim
        index[axis] = slice(start, start + per_chunk)
        block = data[tuple(index)]
        if block.shape[axis] < per_chunk:  # an edge chunk is stored full size
            pad = [(0, 0)] * data.ndim
            pad[axis] = (0, per_chunk - block.shape[axis])
            block = np.pad(block, pad)
        raw = np.ascontiguousarray(block).view(np.uint8).reshape(-1, item).T.tobytes()
        offset = [0] * data.ndim
        offset[axis] = start
        ds.id.write_direct_chunk(tuple(offset), isal_zlib.compress(raw, level))


def direct_writer(level: int, per_chunk: int = 1) -> Callable[[h5py.Group, Video], None]:
    """A video writer with the shard's datasets, chunks stored directly, ISA-L at `level`."""

    def write(group: h5py.Group, v: Video) -> None:
        _direct(group, "frames", np.ascontiguousarray(v.frames, np.uint8), 0, per_chunk, level)
        _direct(group, "visible_ids", np.ascontiguousarray(v.visible_ids, np.uint16), 0, per_chunk, level)
        _direct(group, "amodal", np.ascontiguousarray(v.amodal, bool), 1, per_chunk, level)
        for name in ("amodal_annotated", "presence", "track_ids"):
            group.create_dataset(name, data=np.asarray(getattr(v, name)))
        group.create_dataset("source_frame_ids", data=np.asarray([str(s) for s in v.source_frame_ids],
                                                                 dtype=object), dtype=h5py.string_dtype())
        for name in ("flow", "flow_backward"):
            _direct(group, name, np.ascontiguousarray(getattr(v, name), np.float16), 0, per_chunk, level)
        group.attrs["provenance"] = json.dumps(v.provenance, sort_keys=True)
        group.attrs["flow_backend"] = v.flow_backend

    return write


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where to write (default: the system temp folder)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; one compute thread; h5py {h5py.__version__} "
          f"(HDF5 {h5py.version.hdf5_version}); {args.videos} savos2022 videos, {args.repeats} repeats")
    cfg = cg.make_config("savos2022")
    videos = [cg.generate_video(cfg, cg.video_seed(0, "train", i), f"{i:05d}") for i in range(args.videos)]
    rows: dict[str, Callable[[h5py.Group, Video], None] | None] = {
        "write_shard (gzip 3 + shuffle, shipped)": None,
        "direct, ISA-L 0, one frame per chunk": direct_writer(0),
        "direct, ISA-L 1, one frame per chunk": direct_writer(1),
        "direct, ISA-L 2, one frame per chunk": direct_writer(2),
        "direct, ISA-L 1, 8 frames per chunk": direct_writer(1, 8),
    }
    names = list(rows)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    size: dict[str, int] = {}
    reads: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for r in range(args.repeats):
            for j in range(len(names)):
                name = names[(j + r) % len(names)]
                path = Path(tmp) / f"{r}-{j}.h5"
                c0 = time.process_time()
                if rows[name] is None:
                    write_shard(path, videos)
                else:
                    write_layout(path, videos, rows[name])
                cpu[name].append((time.process_time() - c0) / len(videos))
                size[name] = path.stat().st_size
                if r == 0:
                    reads[name] = _read_back(path, videos)  # asserts the arrays read back equal
                path.unlink()
    base = min(cpu[names[0]])
    print("\nwrite CPU ms/video min / median, min ratio to write_shard, kB/video, read-back CPU ms/video"
          " (fields whole | frame by frame):")
    for name in names:
        c, (whole, by_frame) = cpu[name], reads[name]
        print(f"  {name:42s} {min(c) * 1e3:5.2f} / {statistics.median(c) * 1e3:5.2f}  x{min(c) / base:.2f}  "
              f"{size[name] / len(videos) / 1e3:6.1f} kB  read {whole * 1e3:5.2f} | {by_frame * 1e3:6.2f}")


if __name__ == "__main__":
    main()
