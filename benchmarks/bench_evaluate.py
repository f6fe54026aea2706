"""Evaluation wall and CPU time: shards validated once, read by a prefetching thread, against main before.

    python benchmarks/bench_evaluate.py                          # 200 savos2022 test videos, 50 per shard
    python benchmarks/bench_evaluate.py --videos 400 --repeats 7 --methods convex

"before" is main as issue 17 found it: the loop ``evaluate_method`` had (reimplemented below:
every shard opened and validated once to count its videos for the progress bar, then again to
read them, in the calling thread), reading with ``ShardReader.read_field`` as it was (three h5py
lookups and a fresh dataset per read) and validating shards as it did (high-level h5py objects
per check; both in ``FormerReader``), on copies of the shards written in the
former layout (h5py's gzip 3, one frame per chunk: ``bench_generator._layout_writer``). "old
loop" is that loop on the shipped shards with the shipped reader. "single open" is
``evaluate_method(..., prefetch=False)``: each shard validated once, read in the calling
thread. "new" is ``evaluate_method`` as shipped: each shard validated once, the videos read by
one background thread while the method predicts. The same generated Chewing Gum test set
throughout, runs interleaved (the order rotates every repeat) so that load from other jobs
hits each alike; the metrics of every run must equal the first's to the last bit. One compute
thread (``torch.set_num_threads(1)``, ``cv2.setNumThreads(1)``); "new" adds its reader thread.
CPU time is the process's (all threads), from ``time.process_time``. The old loop scores by the
``strict`` rule (it predates ``--protocol``), so the shipped paths run with ``protocol="strict"``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch
from bench_generator import _layout_writer, write_layout
from machine import cpu_name

from amodalkit.datasets.chewing_gum import generate_dataset, make_config
from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import (
    GT_FIELDS,
    evaluate_method,
    predict_binaries,
    scored_object_frames,
    unique_paths,
)
from amodalkit.evaluation.metrics import MetricAccumulator, score_video
from amodalkit.io.images import check_size
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shards import (
    ALL_FIELDS,
    MAX_EXPANSION,
    REQUIRED_FIELDS,
    Video,
    _all_finite,
    _dtype_ok,
    _expected_shapes,
    expand_shard_paths,
)
from amodalkit.models.base import AmodalMethod
from amodalkit.models.registry import build_method

METRICS = ("frame_miou_full", "frame_miou_occluded", "object_miou_full", "object_miou_occluded",
           "n_videos", "n_frames", "n_object_frames", "n_occluded_object_frames")




class _Former:
    """Shape and dtype of an h5py dataset, as the former validation saw it."""

    def __init__(self, ds: h5py.Dataset, kind: str | None = None) -> None:
        self.shape, self.dtype, self.ndim = ds.shape, np.dtype(kind) if kind else ds.dtype, len(ds.shape)


def _former_dataset(g: h5py.Group, name: str, video: str, path: Path) -> h5py.Dataset:
    """The former per-dataset validation: high-level h5py objects and properties."""
    obj = g.get(name)
    if obj is None:
        raise AmodalkitError(f"video {video!r}: missing dataset {name!r}", path)
    assert isinstance(obj, h5py.Dataset) and not (obj.is_virtual or obj.external)
    if h5py.check_string_dtype(obj.dtype) is None and obj.dtype.kind != "O":
        declared = int(np.prod(obj.shape, dtype=np.float64)) * obj.dtype.itemsize if obj.shape else 0
        ratio = MAX_EXPANSION.get(obj.compression, max(MAX_EXPANSION.values())) if obj.chunks else 1
        assert declared <= obj.id.get_storage_size() * ratio
    return obj


class FormerReader(ShardReader):
    """``ShardReader`` validating and reading as it did before issue 17 (same checks, same arrays)."""

    def _validate_group(self, videos: h5py.h5g.GroupID, name: str) -> dict:
        g = h5py.Group(videos).get(name)
        assert isinstance(g, h5py.Group)
        ids = g.get("visible_ids")
        if isinstance(ids, h5py.Dataset) and len(ids.shape) == 3 and all(ids.shape[1:]):
            check_size(*ids.shape[1:], f"video {name!r}: frames", self.path)
        present = [n for n in ALL_FIELDS if n in REQUIRED_FIELDS or n in g]
        ds = {n: _former_dataset(g, n, name, self.path) for n in present}
        stub = Video(name=name, **{n: _Former(d, "O" if n == "source_frame_ids" else None)
                                   for n, d in ds.items()})
        json.loads(g.attrs["provenance"])
        for fname, (shape, dtypes) in _expected_shapes(stub).items():
            arr = getattr(stub, fname)
            assert arr is None or (tuple(arr.shape) == shape and _dtype_ok(np.dtype(arr.dtype), dtypes))
        return {"num_frames": stub.num_frames, "num_objects": stub.num_objects, "size": stub.size,
                "fields": tuple(n for n in ALL_FIELDS if n in g),
                "flow_backend": str(g.attrs["flow_backend"])}

    def read_field(self, index: int, name: str, selection: object = ()) -> np.ndarray:
        g = self._handle()["videos"][self.video_names[index]]
        assert name in g
        data = g[name][selection]
        assert name != "visible_ids" or not data.size or int(data.max()) <= self.meta(index)["num_objects"]
        assert name not in ("flow", "flow_backward") or _all_finite(data)
        return data


def former_layout_copies(paths: Sequence[Path], out: Path) -> list[Path]:
    """Each shard rewritten in the former layout (same arrays) under `out`."""
    out.mkdir()
    copies = []
    for p in paths:
        with ShardReader(p) as r:
            videos = [r.read_video(i) for i in range(len(r))]
        write_layout(out / p.name, videos, _layout_writer("gzip", 3, "frame"))
        copies.append(out / p.name)
    return copies


def evaluate_old(method: AmodalMethod, paths: Sequence[Path],
                 reader: type[ShardReader] = ShardReader) -> dict:
    """The evaluation loop before issue 17: validate every shard to count, then again to read."""
    paths = unique_paths(paths)
    total = 0
    for p in paths:
        with reader(p) as r:
            total += len(r)
    acc = MetricAccumulator()
    fields = tuple(method.fields) + GT_FIELDS
    pending: list[tuple[Video, np.ndarray]] = []

    def score_pending() -> None:
        preds = predict_binaries(method, [v for v, _ in pending])
        for (video, scored), pred in zip(pending, preds):
            acc.add(score_video(pred, video.amodal, video.visible_masks(), scored))
        pending.clear()

    for p in paths:
        with reader(p) as r:
            for i in range(len(r)):
                video = r.read_video(i, fields)
                scored = scored_object_frames(video)
                if not scored.any():
                    acc.n_videos += 1
                    continue
                pending.append((video, scored))
                if len(pending) >= max(1, method.videos_per_batch):
                    score_pending()
    if pending:
        score_pending()
    return acc.result()


def timed(run: Callable[[], dict]) -> tuple[float, float, dict]:
    """Wall seconds, process CPU seconds and the result of one call of `run`."""
    w0, c0 = time.perf_counter(), time.process_time()
    result = run()
    return time.perf_counter() - w0, time.process_time() - c0, result


def compare(method: AmodalMethod, paths: list[Path], former: list[Path],
            repeats: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds of each path per repeat; asserts every run's metrics equal the old loop's."""
    runs = {
        "before": lambda: evaluate_old(method, former, FormerReader),
        "old loop": lambda: evaluate_old(method, paths),
        "single open": lambda: evaluate_method(method, paths, quiet=True, prefetch=False, protocol="strict"),
        "new": lambda: evaluate_method(method, paths, quiet=True, protocol="strict"),
    }
    reference = {k: evaluate_old(method, paths)[k] for k in METRICS}
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            wall, cpu, result = timed(runs[name])
            got = {k: result[k] for k in METRICS}
            assert got == reference, f"{name} scored {got}, the old loop {reference}"
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
    return times


def validation_ms(paths: list[Path], former: list[Path], repeats: int) -> tuple[float, float]:
    """CPU ms per video to open and validate the shards: former reader on former files, shipped on shipped."""
    cpu: dict[str, list[float]] = {"former": [], "shipped": []}
    n = sum(len(ShardReader(p)) for p in paths)
    for _ in range(repeats):
        for name, reader, files in (("former", FormerReader, former), ("shipped", ShardReader, paths)):
            c0 = time.process_time()
            for f in files:
                reader(f).close()
            cpu[name].append((time.process_time() - c0) / n * 1e3)
    return statistics.median(cpu["former"]), statistics.median(cpu["shipped"])


def row(old: dict[str, list[float]], new: dict[str, list[float]]) -> str:
    """Table cells: min and median wall and CPU seconds of `new`, and old / new ratios of them."""
    med = statistics.median
    paired = med(o / n for o, n in zip(old["wall"], new["wall"], strict=True))
    cells = [f"{min(new['wall']):.3f}", f"{med(new['wall']):.3f}", f"{min(new['cpu']):.3f}",
             f"{med(new['cpu']):.3f}", f"{min(old['wall']) / min(new['wall']):.2f}x",
             f"{med(old['wall']) / med(new['wall']):.2f}x", f"{paired:.2f}x",
             f"{med(old['cpu']) / med(new['cpu']):.2f}x"]
    return " | ".join(cells)


def main() -> None:
    """Print a markdown table of wall and CPU seconds per method and path, and the old / new ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="convex,temporal-k5-bi")
    p.add_argument("--videos", type=int, default=200)
    p.add_argument("--videos-per-shard", type=int, default=50)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    methods = {"convex": lambda: build_method("convex"),
               "temporal-k5-bi": lambda: build_method("temporal", k=5, bidirectional=True)}
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(tmp, make_config("savos2022"), {"train": 0, "val": 0, "test": a.videos}, seed=0,
                         videos_per_shard=a.videos_per_shard, quiet=True)
        paths = expand_shard_paths(str(Path(tmp) / "test-*.h5"))
        former = former_layout_copies(paths, Path(tmp) / "former")
        print(f"torch {torch.__version__}, {cpu_name()} ({os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}), 1 compute thread, {a.videos} savos2022 test videos in "
              f"{len(paths)} shards, {a.repeats} interleaved repeats; metrics identical in every run\n")
        print("| method | path | wall min (s) | wall median (s) | CPU min (s) | CPU median (s) "
              "| before / path: wall min | wall median | per-repeat median | CPU median |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name in a.methods.split(","):
            times = compare(methods[name](), paths, former, a.repeats)
            for path, t in times.items():
                print(f"| {name} | {path} | {row(times['before'], t)} |", flush=True)
            med = statistics.median
            loop, new = times["old loop"]["wall"], times["new"]["wall"]
            same_files = med(o / n for o, n in zip(loop, new, strict=True))
            print(f"| {name} | new against the old loop on the same files: {same_files:.2f}x "
                  "(per-repeat wall median) | | | | | | | | |")
        before, now = validation_ms(paths, former, a.repeats)
        print(f"\nopening and validating a shard, CPU ms per video (median): before {before:.2f}, "
              f"shipped {now:.2f}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
