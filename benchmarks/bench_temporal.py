"""Temporal aggregation: all windows advanced together (``aggregate_windows``) against the per-frame loop.

    python benchmarks/bench_temporal.py                    # 100 savos2022 test videos, 5 repeats
    python benchmarks/bench_temporal.py --videos 50 --repeats 7

"old" is ``TemporalAggregation.predict_video`` as it was before (copied below): for every
object and frame, Algorithm 1's k-frame window recomputed from scratch with ``splat_mask``
and the per-frame aggregated flow. "new" is ``TemporalAggregation`` as shipped. Both predict
the same generated Chewing Gum videos (savos2022 preset, exact forward and backward flow, held
in memory, so no reading is timed) in one process, interleaved (the order alternates every
repeat) so that load from other jobs hits both alike; every video's predicted masks must be
identical. One thread: ``cv2.setNumThreads(1)``, and the numpy operations used here do not
thread. CPU time is the process's, from ``time.process_time``; times are per pass over all videos.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import cv2
import numpy as np
from machine import cpu_name

from amodalkit.datasets.chewing_gum import generate_video, make_config, video_seed
from amodalkit.io.shards import Video
from amodalkit.models.baselines.temporal import TemporalAggregation
from amodalkit.ops.warp import splat_mask

SETTINGS = {"k=5, bi-directional": (5, True), "k=3": (3, False)}




def old_aggregate_flow(visible: np.ndarray, aggregate: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """The aggregated flow of one frame, as before: (H, W) bool, (H, W) bool, (H, W, 2) -> (H, W, 2)."""
    out = np.zeros(flow.shape, np.float32)
    out[visible] = flow[visible]
    if visible.any():
        out[aggregate & ~visible] = flow[visible].astype(np.float32).mean(axis=0)
    return out


def old_aggregate_window(visible: np.ndarray, flow: np.ndarray, n: int, k: int) -> np.ndarray:
    """Algorithm 1 for frame n of one object, as before: (T, H, W), (T-1, H, W, 2) -> (H, W) bool."""
    start = max(0, n - k)
    agg = visible[start].copy()
    agg_flow = old_aggregate_flow(visible[start], agg, flow[start]) if n > start else None
    for t in range(start + 1, n + 1):
        agg = splat_mask(agg, agg_flow) | visible[t]
        if t < n:
            agg_flow = old_aggregate_flow(visible[t], agg, flow[t])
    return agg


def old_predict(video: Video, k: int, bidirectional: bool) -> np.ndarray:
    """``TemporalAggregation.predict_video`` before the change: (K, T, H, W) bool."""
    visible = video.visible_masks()
    out = np.zeros(visible.shape, bool)
    for obj in range(video.num_objects):
        for n in range(video.num_frames):
            out[obj, n] = old_aggregate_window(visible[obj], video.flow, n, k)
            if bidirectional:
                m = video.num_frames - 1 - n
                out[obj, n] |= old_aggregate_window(visible[obj, ::-1], video.flow_backward[::-1], m, k)
    return out


Times = dict[str, dict[str, list[float]]]


def timed_pass(predict: Callable[[Video], np.ndarray], videos: list[Video]) -> tuple[float, float, list]:
    """Wall seconds, process CPU seconds and the predictions of one pass over `videos`."""
    w0, c0 = time.perf_counter(), time.process_time()
    preds = [predict(v) for v in videos]
    return time.perf_counter() - w0, time.process_time() - c0, preds


def compare(videos: list[Video], k: int, bidirectional: bool, repeats: int) -> Times:
    """Wall and CPU seconds of old and new per repeat; asserts identical predictions in every pass."""
    method = TemporalAggregation(k, bidirectional)
    runs: dict[str, Callable[[Video], np.ndarray]] = {
        "old": lambda v: old_predict(v, k, bidirectional),
        "new": method.predict_video,
    }
    reference = [old_predict(v, k, bidirectional) for v in videos]
    times: Times = {name: {"wall": [], "cpu": []} for name in runs}
    names = list(runs)
    for r in range(repeats):
        for name in names[r % 2:] + names[:r % 2]:
            wall, cpu, preds = timed_pass(runs[name], videos)
            for v, got, want in zip(videos, preds, reference, strict=True):
                assert got.dtype == bool and np.array_equal(got, want), f"{name} differs on {v.name}"
            times[name]["wall"].append(wall)
            times[name]["cpu"].append(cpu)
    return times


def main() -> None:
    """Print a markdown table of wall and CPU seconds per setting and implementation, and old / new."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--videos", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    cv2.setNumThreads(1)
    config = make_config("savos2022")
    videos = [generate_video(config, video_seed(0, "test", i)) for i in range(a.videos)]
    frames = sum(v.num_frames for v in videos)
    objects = sum(v.num_objects * v.num_frames for v in videos)
    print(f"numpy {np.__version__}, {cpu_name()}, 1 thread, {a.videos} savos2022 test videos "
          f"({frames} frames, {objects} object-frames, {videos[0].size[0]}x{videos[0].size[1]}), "
          f"{a.repeats} interleaved repeats; predictions identical in every pass\n")
    print("| setting | impl | wall min (s) | wall median (s) | CPU min (s) | CPU median (s) "
          "| old / new, wall min | old / new, wall median | old / new, CPU min |")
    print("|---|---|---|---|---|---|---|---|---|")
    for setting, (k, bidirectional) in SETTINGS.items():
        times = compare(videos, k, bidirectional, a.repeats)
        old = times["old"]
        for impl, t in times.items():
            print(f"| {setting} | {impl} | {min(t['wall']):.3f} | {statistics.median(t['wall']):.3f} | "
                  f"{min(t['cpu']):.3f} | {statistics.median(t['cpu']):.3f} | "
                  f"{min(old['wall']) / min(t['wall']):.2f}x | "
                  f"{statistics.median(old['wall']) / statistics.median(t['wall']):.2f}x | "
                  f"{min(old['cpu']) / min(t['cpu']):.2f}x |", flush=True)


if __name__ == "__main__":
    main()
