"""Optical flow speed and accuracy: DIS frames/s, FlowNet2 s/pair on CPU, DIS end-point error.

Prints:

* DIS (each preset) frame pairs/s (best of 3 runs) on 375x1242 (KITTI-size) random-textured frames moving by
  a known shift, with the median flow found, and on 50x56 Chewing Gum frames;
* FlowNet2 (random weights, official initialization) seconds per 375x1242 pair on CPU
  (run at 384x1280, the next multiples of 64; channels-last weights as ``load_flownet2``
  gives them), after one small warm-up pass;
* end-point error of DIS against the exact flow the Chewing Gum generator stores, over all
  pixels, over visible object pixels, and over moving pixels, with zero flow for scale;
* filling a shard with DIS flow (``fill_shard_flow``, what ``amodalkit flow SHARD`` runs per
  shard) against the raw work it cannot avoid: reading every video's frames and DIS both
  ways, in the same process, with ``torch.set_num_threads(1)`` and ``cv2.setNumThreads(1)``
  (``--fill-threads``). Rows: the raw work; ``fill_shard_flow``; the same with the new flow
  deflated by zlib-ng level 1 or by Python's zlib level 1 (the deflater before) in place of
  libdeflate level 1, to show the choice; the same rewrite given the
  flow ready-made (``replace_flow`` alone: copying the other datasets and encoding the flow);
  and the former whole-shard rewrite (``update_shard``: decode, validate and re-encode every
  dataset). Repeats are interleaved (raw, fill, rewrite, former, raw, ...), each on a fresh
  copy of the shard, and give the min and median of wall time and of CPU time (process time,
  all threads). On a savos2022 Chewing Gum shard (``--fill-videos``, 40-frame videos) and on
  one KITTI-size video (``--fill-kitti-frames`` random-texture frames of 375x1242).

    python benchmarks/bench_flow.py [--videos 20] [--kitti-pairs 10] [--flownet2-pairs 1]
        [--fill-videos 100] [--fill-kitti-frames 11] [--fill-repeats 5] [--fill-threads 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from bench_shard_layout import swapped_deflater
from zlib_ng import zlib_ng

from amodalkit.datasets.chewing_gum import generate_video, make_config, video_seed
from amodalkit.io import chunk_codec
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import replace_flow, update_shard, write_shard
from amodalkit.io.shards import Video, flow_for_storage
from amodalkit.preprocess.flow.backends import DIS_PRESETS, DISBackend, end_point_error
from amodalkit.preprocess.flow.flownet2 import FlowNet2, estimate_flow, for_inference
from amodalkit.preprocess.flow.stage import fill_shard_flow

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


def textured_video(frames: int) -> Video:
    """One KITTI-size video of the moving texture, with one object, for the shard-filling timing."""
    rgb = textured_sequence(frames, KITTI_SIZE, SHIFT, seed=2)
    ids = np.zeros(rgb.shape[:3], np.uint16)
    ids[:, 100:200, 300:500] = 1
    return Video(name="kitti", frames=rgb, visible_ids=ids, amodal=(ids == 1)[None],
                 amodal_annotated=np.ones((1, frames), bool), presence=np.ones((1, frames), bool),
                 track_ids=np.ones(1, np.int64), source_frame_ids=np.array([str(t) for t in range(frames)]))


def fill_paths(shard: Path, work: Path, dis: DISBackend) -> dict[str, Callable[[], object]]:
    """The timed ways of getting DIS flow into `work` (a fresh copy of `shard` before each run)."""
    with ShardReader(shard) as r:
        ready = {name: dis.compute_both(r.read_field(i, "frames")) for i, name in enumerate(r.video_names)}
    ready = {k: (flow_for_storage(f), flow_for_storage(b)) for k, (f, b) in ready.items()}

    def raw() -> None:
        with ShardReader(work) as r:
            for i in range(len(r)):
                dis.compute_both(r.read_field(i, "frames"))

    def former(video: Video) -> Video:
        fwd, bwd = dis.compute(video.frames), dis.compute_backward(video.frames)
        return video.evolve(flow=flow_for_storage(fwd), flow_backward=flow_for_storage(bwd),
                            flow_backend=dis.name)

    def fill_deflated_by(deflater: Callable[[bytes, int], bytes]) -> Callable[[], object]:
        def fill() -> None:
            with swapped_deflater(chunk_codec.ESTIMATED_FLOW.library, deflater):
                fill_shard_flow(work, dis)
        return fill

    return {
        "read frames + DIS both ways (raw)": raw,
        "fill_shard_flow": lambda: fill_shard_flow(work, dis),
        "the same, flow by zlib-ng 1": fill_deflated_by(lambda data, level: zlib_ng.compress(data, 1)),
        "the same, flow by Python's zlib 1 (before)":
            fill_deflated_by(lambda data, level: zlib.compress(data, 1)),
        "replace_flow, flow ready-made": lambda: replace_flow(work, lambda n, f: ready[n], dis.name),
        "former update_shard rewrite": lambda: update_shard(work, former, {"flow": dis.provenance}),
    }


def time_fill(shard: Path, repeats: int) -> None:
    """Print min / median wall and CPU seconds of each way, interleaved, and each median over raw's."""
    dis = DISBackend()
    work = shard.with_name("work.h5")
    shutil.copyfile(shard, work)
    paths = fill_paths(shard, work, dis)
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in paths}
    sizes: dict[str, int] = {}
    for _ in range(repeats):
        for name, run in paths.items():
            shutil.copyfile(shard, work)
            w0, c0 = time.perf_counter(), time.process_time()
            run()
            times[name].append((time.perf_counter() - w0, time.process_time() - c0))
            sizes[name] = work.stat().st_size
    base = [statistics.median(t[i] for t in times[next(iter(paths))]) for i in (0, 1)]
    print(f"  {'':36s} {'wall min':>9s} {'median':>8s} {'CPU min':>8s} {'median':>8s} "
          f"{'wall / raw':>10s} {'CPU / raw':>10s} {'MB after':>9s}")
    for name, ts in times.items():
        wall, cpu = [t[0] for t in ts], [t[1] for t in ts]
        print(f"  {name:36s} {min(wall):9.3f} {statistics.median(wall):8.3f} {min(cpu):8.3f} "
              f"{statistics.median(cpu):8.3f} {statistics.median(wall) / base[0]:10.2f} "
              f"{statistics.median(cpu) / base[1]:10.2f} {sizes[name] / 1e6:9.1f}")


def fill_section(args: argparse.Namespace) -> None:
    """Shard filling against raw DIS, at `args.fill_threads` threads for torch and OpenCV."""
    threads = torch.get_num_threads(), cv2.getNumThreads()
    torch.set_num_threads(args.fill_threads)
    cv2.setNumThreads(args.fill_threads)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = make_config("savos2022")
            shard = write_shard(Path(tmp) / "test-00000.h5",
                                [generate_video(cfg, video_seed(0, "test", i), name=f"{i:05d}")
                                 for i in range(args.fill_videos)], {"generator": "bench"})
            pairs = 2 * args.fill_videos * (cfg.frames - 1)
            print(f"\nFilling a shard with dis flow: {args.fill_videos} savos2022 videos ({pairs} pairs, "
                  f"{shard.stat().st_size / 1e6:.1f} MB with exact flow), torch.set_num_threads("
                  f"{torch.get_num_threads()}), cv2.setNumThreads({cv2.getNumThreads()}), "
                  f"{args.fill_repeats} interleaved repeats, seconds")
            time_fill(shard, args.fill_repeats)
            if args.fill_kitti_frames > 1:
                kitti = write_shard(Path(tmp) / "kitti.h5", [textured_video(args.fill_kitti_frames)])
                print(f"\nThe same on one {KITTI_SIZE[0]}x{KITTI_SIZE[1]} video of {args.fill_kitti_frames} "
                      f"frames ({2 * (args.fill_kitti_frames - 1)} pairs), seconds")
                time_fill(kitti, args.fill_repeats)
    finally:
        torch.set_num_threads(threads[0])
        cv2.setNumThreads(threads[1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=20, help="Chewing Gum test videos for speed and EPE.")
    ap.add_argument("--kitti-pairs", type=int, default=30)
    ap.add_argument("--flownet2-pairs", type=int, default=1)
    ap.add_argument("--fill-videos", type=int, default=100, help="Chewing Gum videos in the filled shard.")
    ap.add_argument("--fill-kitti-frames", type=int, default=11,
                    help="Frames of the KITTI-size video (0: none).")
    ap.add_argument("--fill-repeats", type=int, default=5)
    ap.add_argument("--fill-threads", type=int, default=1, help="torch and OpenCV threads while filling.")
    ap.add_argument("--only-fill", action="store_true", help="Run the shard-filling section only.")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__} with {torch.get_num_threads()} "
          f"threads, OpenCV {cv2.__version__} with {cv2.getNumThreads()} threads, "
          f"CUDA {'yes' if torch.cuda.is_available() else 'no'}")
    if args.only_fill:
        fill_section(args)
        return

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
    fill_section(args)


if __name__ == "__main__":
    main()
