"""Optical flow speed and accuracy: DIS frames/s, FlowNet2 s/pair on CPU, DIS end-point error.

Prints:

* DIS (each preset) frame pairs/s (best of 3 runs) on 375x1242 (KITTI-size) random-textured frames moving by
  a known shift, with the median flow found, and on 50x56 Chewing Gum frames;
* FlowNet2 (random weights, official initialization) seconds per 375x1242 pair on CPU
  (run at 384x1280, the next multiples of 64; channels-last weights as ``load_flownet2``
  gives them), after one small warm-up pass;
* end-point error of DIS against the exact flow the Chewing Gum generator stores, over all
  pixels, over visible object pixels, and over moving pixels, with zero flow for scale.

    python benchmarks/bench_flow.py [--videos 20] [--kitti-pairs 10] [--flownet2-pairs 1]
"""

from __future__ import annotations

import argparse
import os
import time

import cv2
import numpy as np
import torch

from amodalkit.datasets.chewing_gum import generate_video, make_config, video_seed
from amodalkit.preprocess.flow.backends import DIS_PRESETS, DISBackend, end_point_error
from amodalkit.preprocess.flow.flownet2 import FlowNet2, estimate_flow, for_inference

KITTI_SIZE = (375, 1242)
SHIFT = (-5, 3)


def textured_sequence(n: int, size: tuple[int, int], shift: tuple[int, int], seed: int = 0) -> np.ndarray:
    """n RGB frames of a smooth random texture moving by `shift` (dx, dy) pixels per frame."""
    h, w = size
    dx, dy = shift
    pad = (n + 1) * max(abs(dx), abs(dy)) + 1
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h + 2 * pad, w + 2 * pad, 3), dtype=np.uint8)
    base = cv2.GaussianBlur(base, (0, 0), 2.0)
    base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX)
    return np.stack([base[pad - t * dy:pad - t * dy + h, pad - t * dx:pad - t * dx + w] for t in range(n)])


def time_backend(backend: DISBackend, videos: list[np.ndarray], repeats: int = 3) -> float:
    """Frame pairs per second over all consecutive pairs of `videos`, best of `repeats` runs."""
    backend.compute(videos[0][:2])
    pairs = sum(len(v) - 1 for v in videos)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for v in videos:
            backend.compute(v)
        best = min(best, time.perf_counter() - t0)
    return pairs / best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=20, help="Chewing Gum test videos for speed and EPE.")
    ap.add_argument("--kitti-pairs", type=int, default=30)
    ap.add_argument("--flownet2-pairs", type=int, default=1)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads, OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads, "
          f"CUDA {'yes' if torch.cuda.is_available() else 'no'}")

    kitti = textured_sequence(args.kitti_pairs + 1, KITTI_SIZE, SHIFT)
    cfg = make_config("savos2022")
    cg = [generate_video(cfg, video_seed(0, "test", i)) for i in range(args.videos)]
    print(f"\nDIS frame pairs/s ({args.kitti_pairs} pairs of {KITTI_SIZE[0]}x{KITTI_SIZE[1]}, "
          f"{sum(v.num_frames - 1 for v in cg)} pairs of 50x56 Chewing Gum)")
    for preset in DIS_PRESETS:
        dis = DISBackend(preset)
        fps_kitti = time_backend(dis, [kitti])
        found = np.median(dis.compute(kitti[:2])[0, 20:-20, 20:-20].reshape(-1, 2), axis=0)
        fps_cg = time_backend(dis, [v.frames for v in cg])
        print(f"  {dis.name:14s} KITTI size {fps_kitti:8.1f}   Chewing Gum {fps_cg:8.1f}   "
              f"median flow on the texture ({found[0]:+.2f}, {found[1]:+.2f}), true {SHIFT}")

    print(f"\nDIS end-point error against the exact flow, {args.videos} savos2022 test videos (px)")
    zero = [np.zeros_like(v.flow, np.float32) for v in cg]
    rows = {"zero flow": zero}
    rows.update({DISBackend(p).name: [DISBackend(p).compute(v.frames) for v in cg] for p in DIS_PRESETS})
    exact = [v.flow.astype(np.float32) for v in cg]
    objects = [v.visible_ids[:-1] > 0 for v in cg]
    moving = [np.linalg.norm(f, axis=-1) > 0 for f in exact]
    print(f"  {'':14s} {'all pixels':>10s} {'objects':>10s} {'moving':>10s}")
    for name, flows in rows.items():
        cat = np.concatenate(flows)
        gt = np.concatenate(exact)
        print(f"  {name:14s} {end_point_error(cat, gt):10.3f} "
              f"{end_point_error(cat, gt, np.concatenate(objects)):10.3f} "
              f"{end_point_error(cat, gt, np.concatenate(moving)):10.3f}")

    torch.manual_seed(0)
    model = for_inference(FlowNet2())
    pairs = torch.from_numpy(textured_sequence(args.flownet2_pairs + 1, KITTI_SIZE, SHIFT, seed=1))
    pairs = pairs.permute(0, 3, 1, 2).float()
    with torch.inference_mode():
        estimate_flow(model, pairs[:1, :, :64, :64], pairs[1:2, :, :64, :64])
        t0 = time.perf_counter()
        for i in range(args.flownet2_pairs):
            flow = estimate_flow(model, pairs[i:i + 1], pairs[i + 1:i + 2])
        sec = (time.perf_counter() - t0) / args.flownet2_pairs
    print(f"\nFlowNet2 on CPU, random weights: {sec:.2f} s per {KITTI_SIZE[0]}x{KITTI_SIZE[1]} pair "
          f"(network at 384x1280; output {tuple(flow.shape)})")


if __name__ == "__main__":
    main()
