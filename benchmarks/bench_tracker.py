"""Built-in tracker: linking accuracy on Chewing Gum and throughput.

Accuracy: the ground-truth visible masks of Chewing Gum test videos (seed 0), with fresh
random ids and a random order in every frame, are linked by ``link_tracks`` without flow
(identity warp), with the generator's exact forward flow, and with DIS flow computed from
the frames; ``score_linking`` against the ground-truth ids gives identity switches and the
correctly linked fraction (definitions in its docstring). Throughput: object-frames per
CPU second of ``link_tracks`` alone (process time, so other jobs on a shared machine do not
distort it; the tracker is single-threaded), on the Chewing Gum frames and on the same
videos upscaled to the KITTI size 375x1242 (nearest neighbour, flow scaled with the image).

    python benchmarks/bench_tracker.py [--videos 100] [--kitti-videos 10]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from amodalkit.datasets.chewing_gum import generate_video, make_config, video_seed
from amodalkit.io.shards import Video
from amodalkit.preprocess.tracks.formats import Instance
from amodalkit.preprocess.tracks.scores import score_linking
from amodalkit.preprocess.tracks.tracker import link_tracks

KITTI_SIZE = (375, 1242)


def shuffled(visible: np.ndarray, seed: int) -> list[list[Instance]]:
    """(K, T, H, W) visible masks -> per frame instances with random ids in random order."""
    rng = np.random.default_rng(seed)
    k, t = visible.shape[:2]
    return [[Instance(int(rng.integers(0, 1 << 30)), 0, visible[i, f]) for i in rng.permutation(k)]
            for f in range(t)]


def dis_flow(video: Video) -> np.ndarray | None:
    """DIS forward flow of the video's frames, or None where the flow module is absent."""
    try:
        from amodalkit.preprocess.flow.backends import get_flow_backend
    except ImportError:
        return None
    return get_flow_backend("dis").compute(video.frames)


def upscale(video: Video, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Visible ids (T, H, W), masks (K, T, H, W) and flow (T-1, H, W, 2) resized to `size`."""
    h, w = size
    sy, sx = h / video.size[0], w / video.size[1]
    ids = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_NEAREST) for f in video.visible_ids])
    flow = np.stack([cv2.resize(f.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)
                     for f in video.flow]) * np.array([sx, sy], np.float32)
    masks = ids[None] == np.arange(1, video.num_objects + 1, dtype=ids.dtype)[:, None, None, None]
    return ids, masks, flow


def accuracy(videos: list[Video], preset: str) -> list[str]:
    """Markdown rows: linking accuracy and speed per warp on these videos."""
    rows = []
    flows = {"none (identity)": [None] * len(videos), "exact": [v.flow for v in videos]}
    dis = [dis_flow(v) for v in videos]
    if dis[0] is not None:
        flows["DIS (`dis`, medium)"] = dis
    for warp, per_video in flows.items():
        switches, clean, correct, frames_total, tracks, objects, seconds = [], 0, 0.0, 0, 0, 0, 0.0
        for i, (v, flow) in enumerate(zip(videos, per_video)):
            dets = shuffled(v.visible_masks(), i)
            start = time.process_time()
            linked = link_tracks(dets, flow)
            seconds += time.process_time() - start
            s = score_linking(v.visible_ids, linked)
            switches.append(s.identity_switches)
            clean += s.identity_switches == 0
            correct += s.correct_fraction * s.object_frames
            frames_total += s.object_frames
            tracks += s.num_tracks
            objects += s.num_gt_objects
        n = len(videos)
        rows.append(f"| {preset} | {warp} | {clean / n:.2f} | {sum(switches)} | {sum(switches) / n:.2f} "
                    f"| {correct / frames_total:.4f} | {tracks / objects:.3f} "
                    f"| {frames_total / seconds:,.0f} |")
    return rows


def kitti_throughput(videos: list[Video]) -> list[str]:
    """Markdown rows: object-frames/s at the KITTI frame size, identity and exact-flow warps."""
    data = [upscale(v, KITTI_SIZE) for v in videos]
    rows = []
    for warp in ("none (identity)", "exact"):
        n_obj_frames, seconds = 0, 0.0
        for i, (_, masks, flow) in enumerate(data):
            dets = shuffled(masks, i)
            n_obj_frames += sum(len([d for d in f if d.mask.any()]) for f in dets)
            start = time.process_time()
            link_tracks(dets, flow if warp == "exact" else None)
            seconds += time.process_time() - start
        rows.append(f"| {KITTI_SIZE[0]}x{KITTI_SIZE[1]} | {warp} | {n_obj_frames} | "
                    f"{n_obj_frames / seconds:,.0f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=100)
    ap.add_argument("--kitti-videos", type=int, default=10)
    args = ap.parse_args()
    print("| preset | warp | videos with 0 ID switches | ID switches | per video | correctly linked "
          "| tracks per object | object-frames/s |")
    print("|---|---|---|---|---|---|---|---|")
    default_videos = []
    for preset in ("savos2022", "default"):
        videos = [generate_video(make_config(preset), video_seed(0, "test", i)) for i in range(args.videos)]
        if preset == "default":
            default_videos = videos
        for row in accuracy(videos, preset):
            print(row, flush=True)
    print()
    print("| frame size | warp | object-frames | object-frames/s |")
    print("|---|---|---|---|")
    for row in kitti_throughput(default_videos[: args.kitti_videos]):
        print(row, flush=True)


if __name__ == "__main__":
    main()
