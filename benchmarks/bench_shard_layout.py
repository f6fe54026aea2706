"""Shard write CPU, size and read cost per chunk layout: why ``write_shard`` chunks 4 frames (issue 17).

    python benchmarks/bench_shard_layout.py --videos 200 --repeats 5 --dir /dev/shm

The same savos2022 videos are written by ``write_shard`` with ``FRAMES_PER_CHUNK`` set to 1, 2,
4 (shipped), 8 and 40 (whole video) for frames, visible ids and amodal masks (flow is always
as many frames as fit in 1 MiB: whole video here), and by the former layout (h5py's own gzip
level 3 + shuffle, one frame per chunk), and at 4 frames per chunk with Python's zlib level 3
in place of zlib-ng (the deflater before, for per-frame fields and exact flow alike) and with
exact flow at zlib-ng level 1 like the per-frame fields (to show its level 2). Rows
interleave (order rotating every repeat); CPU is ``time.process_time`` per video, one compute
thread. Every file is read back with h5py and compared with the videos
(``bench_generator._read_back``), then timed with ``ShardReader`` (and, on the former layout,
also as the reader read before it kept datasets open):
random single-object-frame reads (frames, visible ids and one amodal mask of a random frame,
as the per-frame baselines' loader does) and whole-video reads of the five per-frame fields.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import h5py
import numpy as np
from bench_generator import _layout_writer, _read_back, write_layout
from machine import cpu_name
from zlib_ng import zlib_ng

from amodalkit.datasets import chewing_gum as cg
from amodalkit.io import chunk_codec
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import write_shard
from amodalkit.io.shards import Video

FIELDS = ("frames", "visible_ids", "amodal", "flow", "flow_backward")
FORMER_READER = "former layout, read as before (no open datasets)"


def shipped_writer(per_chunk: int) -> Callable[[Path, list[Video]], None]:
    """``write_shard`` with ``FRAMES_PER_CHUNK`` set to `per_chunk` for the call."""

    def write(path: Path, videos: list[Video]) -> None:
        saved, chunk_codec.FRAMES_PER_CHUNK = chunk_codec.FRAMES_PER_CHUNK, per_chunk
        try:
            write_shard(path, videos)
        finally:
            chunk_codec.FRAMES_PER_CHUNK = saved

    return write


@contextmanager
def swapped_deflater(library: str, deflater: Callable[[bytes, int], bytes]) -> Iterator[None]:
    """`deflater` in place of ``chunk_codec.DEFLATERS[library]`` inside the block."""
    saved = chunk_codec.DEFLATERS[library]
    chunk_codec.DEFLATERS[library] = deflater
    try:
        yield
    finally:
        chunk_codec.DEFLATERS[library] = saved


def deflater_writer(library: str,
                    deflater: Callable[[bytes, int], bytes]) -> Callable[[Path, list[Video]], None]:
    """``write_shard`` with `deflater` in place of ``chunk_codec.DEFLATERS[library]`` for the call."""

    def write(path: Path, videos: list[Video]) -> None:
        with swapped_deflater(library, deflater):
            write_shard(path, videos)

    return write


def read_costs(path: Path, videos: list[Video], samples: int,
               former_reader: bool = False) -> tuple[float, float]:
    """CPU ms per random object-frame read (3 fields of one frame) and per whole-video read.

    `former_reader`: the random reads as ``ShardReader.read_field`` did them before it kept
    datasets open (three h5py lookups and a fresh dataset per read).
    """
    rng = np.random.default_rng(0)
    picks = [(int(rng.integers(len(videos))), int(rng.integers(videos[0].num_frames)))
             for _ in range(samples)]
    with ShardReader(path) as reader:
        f = reader._handle()

        def former(vi: int, name: str, selection: object) -> np.ndarray:
            g = f["videos"][reader.video_names[vi]]
            assert name in g
            return g[name][selection]

        read = former if former_reader else reader.read_field
        c0 = time.process_time()
        for vi, t in picks:
            read(vi, "visible_ids", t)
            read(vi, "frames", t)
            read(vi, "amodal", (0, t))
        c1 = time.process_time()
        for vi in range(len(videos)):
            for name in FIELDS:
                reader.read_field(vi, name)
        c2 = time.process_time()
    return (c1 - c0) / samples * 1e3, (c2 - c1) / len(videos) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--samples", type=int, default=4000, help="random object-frame reads per layout")
    ap.add_argument("--dir", default=None, help="where to write (default: the system temp folder)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; one compute thread; h5py {h5py.__version__} "
          f"(HDF5 {h5py.version.hdf5_version}); {args.videos} savos2022 videos, {args.repeats} repeats")
    cfg = cg.make_config("savos2022")
    videos = [cg.generate_video(cfg, cg.video_seed(0, "train", i), f"{i:05d}") for i in range(args.videos)]
    former = _layout_writer("gzip", 3, "frame")
    rows: dict[str, Callable[[Path, list[Video]], None]] = {
        "former: h5py gzip 3, 1 frame/chunk": lambda path, vs: write_layout(path, vs, former),
        **{f"write_shard, {n} frames/chunk{' (shipped)' if n == chunk_codec.FRAMES_PER_CHUNK else ''}":
           shipped_writer(n) for n in (1, 2, 4, 8, 40)},
        "write_shard, 4 frames/chunk, Python's zlib 3 (before)":
            deflater_writer("zlib-ng", lambda data, level: zlib.compress(data, 3)),
        "write_shard, 4 frames/chunk, exact flow at zlib-ng 1 (not 2)":
            deflater_writer("zlib-ng", lambda data, level: zlib_ng.compress(data, 1)),
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
                rows[name](path, videos)
                cpu[name].append((time.process_time() - c0) / len(videos))
                size[name] = path.stat().st_size
                if r == 0:
                    _read_back(path, videos)  # asserts the arrays read back equal
                    reads[name] = read_costs(path, videos, args.samples)
                    if name == names[0]:
                        reads[FORMER_READER] = read_costs(path, videos, args.samples, former_reader=True)
                path.unlink()
    cpu[FORMER_READER] = cpu[names[0]]
    size[FORMER_READER] = size[names[0]]
    names.insert(1, FORMER_READER)
    base = min(cpu[names[0]])
    print("\nwrite CPU ms/video min / median, min ratio to the former layout, kB/video; read CPU: "
          "ms per random object-frame | ms per whole video (5 fields)")
    for name in names:
        c, (frame, whole) = cpu[name], reads[name]
        print(f"  {name:50s} {min(c) * 1e3:5.2f} / {statistics.median(c) * 1e3:5.2f}  x{min(c) / base:.2f}  "
              f"{size[name] / len(videos) / 1e3:6.1f} kB  read {frame:6.3f} | {whole:5.2f}")


if __name__ == "__main__":
    main()
