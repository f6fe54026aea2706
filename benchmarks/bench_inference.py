"""Inference throughput, batched against the per-object loop it replaced: object-frames/s, one process.

    python benchmarks/bench_inference.py                        # SaVos (zoo) + U-Net, 1 and 2 threads
    python benchmarks/bench_inference.py --models savos --threads 1 --repeats 5

"old" is :mod:`amodalkit.models.reference` (clips or crops cut one object at a time on the
CPU, predicted, pasted back with numpy); "new" is the methods' ``predict_videos``, handed
``videos_per_batch`` videos at a time as ``evaluate`` does (crop, forward and paste on the
device). Both run on the same generated savos2022 test videos, interleaved (the order
alternates every repeat) so that load from other jobs hits both alike; the table shows
medians over repeats and the median of the per-repeat ratios. SaVos is the zoo model,
U-Net a freshly initialised default network (its speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name

from amodalkit import zoo
from amodalkit.datasets.chewing_gum import generate_dataset, make_config
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shards import Video, expand_shard_paths
from amodalkit.models.base import AmodalMethod
from amodalkit.models.baselines.unet import UNet, UNetConfig, UNetMethod
from amodalkit.models.reference import framewise_per_object, savos_per_object


def read_videos(n: int, tmp: Path) -> list[Video]:
    """`n` savos2022 test videos (seed 0), generated into `tmp`."""
    generate_dataset(tmp, make_config("savos2022"), {"test": n}, seed=0, quiet=True)
    videos = []
    for path in expand_shard_paths(str(tmp)):
        with ShardReader(path) as r:
            videos += [r.read_video(i) for i in range(len(r))]
    return videos[:n]


def batched(method: AmodalMethod, videos: list[Video]) -> None:
    """The new path: ``predict_videos`` on groups of ``videos_per_batch`` videos."""
    step = max(1, method.videos_per_batch)
    for i in range(0, len(videos), step):
        method.predict_videos(videos[i:i + step])


def rate(run: Callable[[], None], object_frames: int) -> float:
    """Object-frames per second of one call of `run`."""
    t0 = time.perf_counter()
    run()
    return object_frames / (time.perf_counter() - t0)


def compare(method: AmodalMethod, reference: Callable[[AmodalMethod, Video], np.ndarray], videos: list[Video],
            repeats: int) -> tuple[float, float, float]:
    """Median object-frames/s of the old and new paths and the median per-repeat ratio."""
    n = sum(v.num_objects * v.num_frames for v in videos)
    runs = {"old": lambda: [reference(method, v) for v in videos], "new": lambda: batched(method, videos)}
    for run in runs.values():
        run()
    rates: dict[str, list[float]] = {"old": [], "new": []}
    for r in range(repeats):
        for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
            rates[name].append(rate(runs[name], n))
    ratios = [b / a for a, b in zip(rates["old"], rates["new"])]
    return statistics.median(rates["old"]), statistics.median(rates["new"]), statistics.median(ratios)


def main() -> None:
    """Print a markdown table of old and new object-frames/s per model and thread count."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="savos,unet")
    p.add_argument("--threads", default="1,2", help="Comma-separated torch thread counts.")
    p.add_argument("--videos", type=int, default=16)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    methods = {"savos": lambda: zoo.load("savos-chewing-gum"),
               "unet": lambda: UNetMethod(UNet(UNetConfig()))}
    references = {"savos": savos_per_object, "unet": framewise_per_object}
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        videos = read_videos(a.videos, Path(tmp))
    print(f"torch {torch.__version__}, {cpu_name()}, {len(videos)} savos2022 test videos, "
          f"{a.repeats} interleaved repeats (medians)\n")
    print("| model | threads | batch | videos per call | old object-frames/s | new object-frames/s "
          "| new / old |")
    print("|---|---|---|---|---|---|---|")
    for threads in (int(t) for t in a.threads.split(",")):
        torch.set_num_threads(threads)
        for name in a.models.split(","):
            method = methods[name]()
            old, new, ratio = compare(method, references[name], videos, a.repeats)
            batch = method.batch_size or f"{16 * threads} (16 per thread)"
            print(f"| {name} | {threads} | {batch} | {method.videos_per_batch} | {old:.0f} | {new:.0f} | "
                  f"{ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
