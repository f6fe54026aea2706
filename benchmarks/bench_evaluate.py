"""Evaluation wall and CPU time: shards validated once and read by a prefetching thread, against the old loop.

    python benchmarks/bench_evaluate.py                          # 200 savos2022 test videos, 50 per shard
    python benchmarks/bench_evaluate.py --videos 400 --repeats 7 --methods convex

"old" is the loop ``evaluate_method`` had before (reimplemented below): every shard opened
and validated once to count its videos for the progress bar, then again to read them, in
the calling thread. "single open" is ``evaluate_method(..., prefetch=False)``: each shard
validated once, read in the calling thread. "new" is ``evaluate_method`` as shipped: each
shard validated once, the videos read by one background thread while the method predicts.
All run on the same generated Chewing Gum test set, interleaved (the order rotates every
repeat) so that load from other jobs hits each alike; the metrics of every run must be
identical to the old loop's to the last bit. One compute thread (``torch.set_num_threads(1)``,
``cv2.setNumThreads(1)``); "new" adds its reader thread. CPU time is the process's (all
threads), from ``time.process_time``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from machine import cpu_name

from amodalkit.datasets.chewing_gum import generate_dataset, make_config
from amodalkit.evaluation.evaluate import (
    GT_FIELDS,
    evaluate_method,
    predict_binaries,
    scored_object_frames,
    unique_paths,
)
from amodalkit.evaluation.metrics import MetricAccumulator, score_video
from amodalkit.io.shard_read import ShardReader, iter_videos
from amodalkit.io.shards import Video, expand_shard_paths
from amodalkit.models.base import AmodalMethod
from amodalkit.models.registry import build_method

METRICS = ("frame_miou_full", "frame_miou_occluded", "object_miou_full", "object_miou_occluded",
           "n_videos", "n_frames", "n_object_frames", "n_occluded_object_frames")




def evaluate_old(method: AmodalMethod, paths: Sequence[Path]) -> dict:
    """The evaluation loop before this change: validate every shard to count, then again to read."""
    paths = unique_paths(paths)
    total = 0
    for p in paths:
        with ShardReader(p) as r:
            total += len(r)
    acc = MetricAccumulator()
    fields = tuple(method.fields) + GT_FIELDS
    pending: list[tuple[Video, np.ndarray]] = []

    def score_pending() -> None:
        preds = predict_binaries(method, [v for v, _ in pending])
        for (video, scored), pred in zip(pending, preds):
            acc.add(score_video(pred, video.amodal, video.visible_masks(), scored))
        pending.clear()

    for _, video in iter_videos(paths, fields):
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


def compare(method: AmodalMethod, paths: list[Path], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Wall and CPU seconds of each path per repeat; asserts every run's metrics equal the old loop's."""
    runs = {
        "old": lambda: evaluate_old(method, paths),
        "single open": lambda: evaluate_method(method, paths, quiet=True, prefetch=False),
        "new": lambda: evaluate_method(method, paths, quiet=True),
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
        print(f"torch {torch.__version__}, {cpu_name()} ({os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f}), 1 compute thread, {a.videos} savos2022 test videos in "
              f"{len(paths)} shards, {a.repeats} interleaved repeats; metrics identical in every run\n")
        print("| method | path | wall min (s) | wall median (s) | CPU min (s) | CPU median (s) "
              "| old / path: wall min | wall median | per-repeat median | CPU median |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for name in a.methods.split(","):
            times = compare(methods[name](), paths, a.repeats)
            old = times["old"]
            for path, t in times.items():
                print(f"| {name} | {path} | {row(old, t)} |", flush=True)
        print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
