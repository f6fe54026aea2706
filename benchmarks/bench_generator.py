"""Chewing Gum generator throughput and disk use, against the official on-disk layout.

Prints videos/s at --jobs 1 and --jobs 2 (savos2022 preset), bytes per video, and the same
for a reference writer in this process that stores the same videos the way the official
generator does (one PNG and one pickle of the object dict per frame).

    python benchmarks/bench_generator.py [--videos 400]
"""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from amodalkit.datasets.chewing_gum import generate_dataset, generate_video, make_config, video_seed


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def official_layout(out: Path, n: int) -> None:
    """Reference: the official release's files (PNG + pickle per frame) for the same videos."""
    cfg = make_config("savos2022")
    for i in range(n):
        v = generate_video(cfg, video_seed(0, "train", i))
        d = out / f"{i:05d}"
        d.mkdir(parents=True)
        for t in range(v.num_frames):
            cv2.imwrite(str(d / f"{t:05d}.png"), v.frames[t][..., ::-1])
            record = {"order": np.array(v.provenance["depth_order"]),
                      "full_mask": v.amodal[:, t].astype(np.int64),
                      "img_obj": [v.frames[t, :16, :16] for _ in range(v.num_objects)]}
            with open(d / f"{t:05d}.pkl", "wb") as f:
                pickle.dump(record, f)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=400)
    args = ap.parse_args()
    n = args.videos
    cfg = make_config("savos2022")
    print(f"machine: {os.cpu_count()} CPU cores; {n} savos2022 videos")
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for jobs in (1, 2):
            out = Path(tmp) / f"jobs{jobs}"
            t0 = time.perf_counter()
            generate_dataset(out, cfg, {"train": n}, seed=0, videos_per_shard=50, jobs=jobs, quiet=True)
            rates[jobs] = n / (time.perf_counter() - t0)
            size = folder_bytes(out) / n
            print(f"amodalkit --jobs {jobs}: {rates[jobs]:7.1f} videos/s, {size / 1e3:7.1f} kB/video")
        ref_dir = Path(tmp) / "official"
        m = min(n, 100)
        t0 = time.perf_counter()
        official_layout(ref_dir, m)
        ref_rate = m / (time.perf_counter() - t0)
        ref_size = folder_bytes(ref_dir) / m
        print(f"official layout (PNG + pickle per frame), 1 core: {ref_rate:7.1f} videos/s, "
              f"{ref_size / 1e3:7.1f} kB/video, {len(list(ref_dir.rglob('*'))) // m - 1} files/video")
    print(f"ratio jobs2/jobs1: {rates[2] / rates[1]:.2f}x")
    print(f"ratio jobs2/official layout: {rates[2] / ref_rate:.2f}x throughput, "
          f"{ref_size / size:.1f}x less disk per video")


if __name__ == "__main__":
    main()
