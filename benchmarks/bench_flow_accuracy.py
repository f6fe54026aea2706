"""Which flow estimator to train and test SaVos with: end-point error against the exact flow, per backend.

Reads shards that hold the generator's exact flow (Chewing Gum), runs every backend on the
same videos in this process and prints, per backend, the mean end-point error (px) forward
and backward over object pixels (visible pixels of any object in the flow's source frame),
over the background, the share of object pixels within 0.5 px, and on the background the
moving pixels (the texture no visible mask claims) given their exact motion and the still
ones given any motion, with the seconds per video.

    python benchmarks/bench_flow_accuracy.py 'DIR/test-*.h5' [--videos 100]
        [--backends zero,dis:ultrafast,dis:fast,dis,rigid,rigid:zero,rigid:layers]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch
from machine import cpu_name

from amodalkit.io.shard_read import iter_videos
from amodalkit.io.shards import expand_shard_paths
from amodalkit.preprocess.flow.backends import end_point_error, get_flow_backend


def estimate(name: str, video) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward flow of one video from the named backend (``zero``: no motion)."""
    if name == "zero":
        return np.zeros(video.flow.shape, np.float32), np.zeros(video.flow.shape, np.float32)
    backend = get_flow_backend(name)
    if backend.uses_visible:
        return backend.compute_both_visible(video.frames, video.visible_ids, video.num_objects)
    return backend.compute_both(video.frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+")
    parser.add_argument("--videos", type=int, default=100)
    parser.add_argument("--backends", default="zero,dis:ultrafast,dis:fast,dis,rigid,rigid:zero,rigid:layers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    names = args.backends.split(",")
    videos = []
    for _, video in iter_videos(expand_shard_paths(args.data), fields=["frames", "flow", "flow_backward"]):
        if video.flow_backend != "exact":
            raise SystemExit(f"video {video.name} holds {video.flow_backend!r} flow; this needs exact flow")
        videos.append(video)
        if len(videos) == args.videos:
            break
    print(f"machine: {cpu_name()}, one thread; {len(videos)} videos with exact flow")
    print(f"{'backend':<16} {'obj fwd':>8} {'obj bwd':>8} {'bg fwd':>8} {'<0.5px':>7} {'s/video':>8} "
          f"{'moving bg exact':>17} {'still bg moved':>14}")
    for name in names:
        errs, bwd_errs, bg_errs, close, seconds = [], [], [], [], 0.0
        moving = moving_exact = still_moved = 0
        for video in videos:
            start = time.process_time()
            fwd, bwd = estimate(name, video)
            seconds += time.process_time() - start
            obj_src, obj_dst = video.visible_ids[:-1] > 0, video.visible_ids[1:] > 0
            errs.append(end_point_error(fwd, video.flow, obj_src))
            bwd_errs.append(end_point_error(bwd, video.flow_backward, obj_dst))
            bg_errs.append(end_point_error(fwd, video.flow, ~obj_src))
            err = np.linalg.norm(fwd - video.flow.astype(np.float32), axis=-1)[obj_src]
            close.append(float((err < 0.5).mean()))
            exact = video.flow.astype(np.float32)
            bg_moving = ~obj_src & (np.abs(exact).max(axis=-1) > 0)
            moving += int(bg_moving.sum())
            moving_exact += int((bg_moving & (fwd == exact).all(axis=-1)).sum())
            still_moved += int((~obj_src & ~bg_moving & (np.abs(fwd).max(axis=-1) > 0)).sum())
        print(f"{name:<16} {np.mean(errs):8.3f} {np.mean(bwd_errs):8.3f} {np.mean(bg_errs):8.3f} "
              f"{np.mean(close):7.3f} {seconds / len(videos):8.4f} {moving_exact:>8,}/{moving:<8,} "
              f"{still_moved:>14,}")


if __name__ == "__main__":
    main()
