"""The execution layer on a Dask LocalCluster against local processes, in one run.

    python benchmarks/bench_dask.py                      # 160 savos2022 videos, 16 shards
    python benchmarks/bench_dask.py --videos 320 --shards 32

Rows (wall time, videos/s, ratio to ``--jobs 1`` of the same stage in this run):

* ``gen-chewing-gum`` with ``--jobs 1``, ``--jobs 2``, and a LocalCluster of 1 and of 2
  single-threaded worker processes (``--scheduler``); shards compared by content.
* ``flow --backend dis`` on copies of those shards, the same four ways.
* the scheduler's overhead per task: 400 no-op tasks through ``run_tasks`` on 2 workers.
* ``evaluate --model convex``: one process against map-reduce on 2 workers; the metrics
  must be equal, the time ratio is printed.

Each worker and the local processes run one compute thread (OMP/OpenCV threads 1).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_name

from amodalkit.datasets.chewing_gum import generate_dataset, make_config
from amodalkit.evaluation.evaluate import evaluate_method
from amodalkit.execution import run_tasks
from amodalkit.models.registry import build_method
from amodalkit.preprocess.flow.stage import fill_shard_task

METRICS = ("frame_miou_full", "frame_miou_occluded", "object_miou_full", "object_miou_occluded")


def _noop(x: int) -> int:
    return x


def _timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def main() -> None:
    """Run every row and print the table."""
    import cv2
    from distributed import LocalCluster

    cv2.setNumThreads(1)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=160)
    ap.add_argument("--shards", type=int, default=16)
    args = ap.parse_args()
    per_shard = max(1, args.videos // args.shards)
    cfg = make_config("savos2022")
    splits = {"train": 0, "val": 0, "test": args.videos}
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"{args.videos} savos2022 videos in {args.shards} shards, one thread per worker")
    root = Path(tempfile.mkdtemp(prefix="bench_dask-"))
    rows: list[tuple[str, str, float, float]] = []
    try:
        clusters = {n: LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                    silence_logs=50) for n in (1, 2)}
        ways = [("--jobs 1", {"jobs": 1}), ("--jobs 2", {"jobs": 2}),
                ("Dask 1 worker", {"scheduler": clusters[1].scheduler_address}),
                ("Dask 2 workers", {"scheduler": clusters[2].scheduler_address})]
        for label, how in ways:
            out = root / f"gen-{label.replace(' ', '_')}"
            t = _timed(generate_dataset, out, cfg, splits, seed=0, videos_per_shard=per_shard, quiet=True,
                       **how)
            rows.append(("gen-chewing-gum", label, t, args.videos / t))
        first = root / "gen---jobs_1"
        for label, how in ways:
            out = root / f"flow-{label.replace(' ', '_')}"
            shutil.copytree(first, out)
            tasks = [(p, "dis", None, "cpu", 1) for p in sorted(out.glob("test-*.h5"))]
            t = _timed(run_tasks, fill_shard_task, tasks, how.get("jobs", 1), how.get("scheduler"), True)
            rows.append(("flow --backend dis", label, t, args.videos / t))
        n_tasks = 400
        t = _timed(run_tasks, _noop, list(range(n_tasks)), 1, clusters[2].scheduler_address, True)
        overhead = t / n_tasks
        shards = sorted(first.glob("test-*.h5"))
        evaluate_method(build_method("convex"), shards[:1], quiet=True)  # warm-up: imports and caches
        start = time.perf_counter()
        one = evaluate_method(build_method("convex"), shards, quiet=True)
        t_one = time.perf_counter() - start
        start = time.perf_counter()
        many = evaluate_method(build_method("convex"), shards, quiet=True,
                               scheduler=clusters[2].scheduler_address)
        t_many = time.perf_counter() - start
        for c in clusters.values():
            c.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = {stage: t for stage, label, t, _ in rows if label == "--jobs 1"}
    print(f"{'stage':<20} {'run':<16} {'wall s':>8} {'videos/s':>9} {'speed-up':>9}")
    for stage, label, t, rate in rows:
        print(f"{stage:<20} {label:<16} {t:8.2f} {rate:9.1f} {base[stage] / t:8.2f}x")
    print(f"scheduler overhead: {overhead * 1e3:.1f} ms per task ({n_tasks} no-op tasks, 2 workers)")
    equal = all(one[k] == many[k] for k in METRICS)
    print(f"evaluate convex: one process {t_one:.2f} s, map-reduce on 2 workers {t_many:.2f} s "
          f"(ratio {t_one / t_many:.2f}x); metrics equal: {equal} "
          f"(frame full {one['frame_miou_full']:.4f}, occluded {one['frame_miou_occluded']:.4f})")


if __name__ == "__main__":
    main()
