"""One drive of KINS-Video-Car: frames, flow and tracks of its clips, KINS cars paired in, one shard."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from amodalkit.datasets.kins import CAR, CATEGORIES
from amodalkit.datasets.kins_video_plan import (
    FLOW_BATCH,
    FLOW_CHUNK,
    MOTS_CAR,
    PAIR_IOU,
    AnnotatedFrame,
    BuildConfig,
    DriveStats,
    DriveTask,
    TracksSpec,
    clip_window,
    group_windows,
    parse_tracks_spec,
)
from amodalkit.datasets.kitti import KittiRaw
from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import write_json
from amodalkit.io.images import header_size
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import write_shard
from amodalkit.io.shards import Video, flow_for_storage

if TYPE_CHECKING:
    from amodalkit.preprocess.flow.base import FlowBackend


def mask_ious(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """Pairwise IoU of two lists of (H, W) bool masks: (len(a), len(b)), 0 where both are empty."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    fa = np.stack([m.ravel() for m in a]).astype(np.float32)
    fb = np.stack([m.ravel() for m in b]).astype(np.float32)
    inter = (fa @ fb.T).astype(np.float64)
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def pair_objects(tracked: Sequence[np.ndarray], annotated: Sequence[np.ndarray],
                 threshold: float = PAIR_IOU) -> list[tuple[int, int, float]]:
    """Hungarian pairing on mask IoU: (tracked index, annotation index, IoU) with IoU >= threshold."""
    iou = mask_ious(tracked, annotated)
    if not iou.size:
        return []
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols) if iou[r, c] >= threshold]


def _flow16(backend: FlowBackend, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward flow of a segment's (T, H, W, 3) frames as float16, both (T-1, H, W, 2).

    One pass in chunks of ``FLOW_CHUNK`` frame pairs (so the float32 flow in memory stays
    small), ``FLOW_BATCH`` pairs per network call: one frame pair in both directions.
    """
    n, h, w = max(len(frames) - 1, 0), *frames.shape[1:3]
    fwd, bwd = np.zeros((n, h, w, 2), np.float16), np.zeros((n, h, w, 2), np.float16)
    for a in range(0, n, FLOW_CHUNK):
        b = min(a + FLOW_CHUNK, n)
        f, bk = backend.compute_both(frames[a:b + 1], FLOW_BATCH)
        fwd[a:b], bwd[a:b] = flow_for_storage(f), flow_for_storage(bk)
    return fwd, bwd


def _read_drive_tracks(spec: TracksSpec, drive: str, frames: set[int],
                       size: tuple[int, int] | None = None) -> list:
    from amodalkit.preprocess.tracks.formats import read_tracks

    path = spec.file_for(drive)
    if not path.is_file():
        raise AmodalkitError(f"no tracks file for drive {drive} (the tracks folder needs one DRIVE.txt per "
                             "drive with KINS annotations)", path)
    instances, _ = read_tracks(path, "pointtrack", [MOTS_CAR], frames=frames, size=size)
    return instances


def _segment_instances(spec: TracksSpec, instances: list, seg: list[int], flow: np.ndarray) -> list:
    """Instances per segment position: read tracks, or per-frame masks linked by the built-in tracker."""
    from amodalkit.preprocess.tracks.tracker import TrackerConfig, link_tracks

    per_frame = [instances[n] if n < len(instances) else [] for n in seg]
    if spec.kind == "pointtrack":
        return per_frame
    cfg = TrackerConfig()
    return link_tracks(per_frame, flows=flow, iou_threshold=cfg.iou_threshold, max_gap=cfg.max_gap,
                       memory=cfg.memory, precision_threshold=cfg.precision_threshold)


def _label_clip(video: Video, t0: int, af: AnnotatedFrame, cfg: BuildConfig,
                stats: DriveStats) -> Video:
    """Pair the clip's tracked cars with the KINS cars of frame t0 and store their amodal masks."""
    h, w = video.size
    visible = [video.visible_ids[t0] == k + 1 for k in range(video.num_objects)]
    kins_vis = [a.inmodal_mask(h, w) for a in af.annotations]
    kins_amodal = [a.amodal_mask(h, w) for a in af.annotations]
    amodal = np.array(video.amodal, copy=True)
    annotated = np.array(video.amodal_annotated, copy=True)
    objects: list[dict] = [{"track_id": int(t), "kins_annotation_id": None, "pair_iou": None,
                            "unoccluded": None} for t in video.track_ids]
    for k, j, iou in pair_objects(visible, kins_vis):
        a_mask, i_mask = kins_amodal[j], kins_vis[j]
        unoccluded = bool(a_mask.any() and np.array_equal(a_mask, i_mask))
        objects[k].update(kins_annotation_id=af.annotations[j].id, pair_iou=round(iou, 6),
                          unoccluded=unoccluded)
        stats.paired += 1
        stats.unoccluded += unoccluded
        area = int(a_mask.sum())
        if area:
            stats.occlusion_rates.append(1.0 - float((a_mask & i_mask).sum()) / area)
        if cfg.keep_unoccluded or not unoccluded:
            amodal[k, t0] = a_mask
            annotated[k, t0] = True
            stats.scored += 1
    stats.kins_cars += len(af.annotations)
    prov = dict(video.provenance)
    prov.update(annotated_frame={"t": t0, "raw_frame": af.frame, "kins_image": af.image,
                                 "kins_image_id": af.kins_image_id, "kins_json": af.kins_json,
                                 "match": af.match_method,
                                 "kins_car_annotation_ids": [a.id for a in af.annotations]},
                objects=objects)
    return video.evolve(amodal=amodal, amodal_annotated=annotated, provenance=prov,
                        object_class=np.full(video.num_objects, CAR, np.int32))


def _drive_videos(task: DriveTask, stats: DriveStats) -> Iterator[Video]:
    """Read, track, flow and label every clip of one drive, one video at a time."""
    from amodalkit.preprocess.flow.backends import get_flow_backend, require_frames_only
    from amodalkit.preprocess.tracks.build import tracks_to_video

    cfg = task.config
    spec = parse_tracks_spec(cfg.tracks)
    raw = KittiRaw(task.raw_root)
    available = set(raw.frame_numbers(task.drive))
    windows = [clip_window(af.frame, available, cfg.context) for af in task.frames]
    backend = require_frames_only(get_flow_backend(cfg.flow, cfg.checkpoint, cfg.device),
                                  "build-kins-video (fill its shards with amodalkit flow afterwards)")
    wanted = {f for w in windows for f in w}
    size = header_size(raw.frame_path(task.drive, min(wanted))) if wanted else None
    instances = _read_drive_tracks(spec, task.drive, wanted, size)
    groups = group_windows(windows)
    bar = tqdm(total=len(windows), desc=task.drive, unit="clip", leave=False, disable=task.quiet)
    for group in groups:
        seg = list(range(min(windows[i][0] for i in group), max(windows[i][-1] for i in group) + 1))
        frames = raw.read_frames(task.drive, seg)
        fwd, bwd = _flow16(backend, frames)
        seg_instances = _segment_instances(spec, instances, seg, fwd)
        for i in sorted(group, key=lambda i: task.frames[i].frame):
            af, win = task.frames[i], windows[i]
            a, b = win[0] - seg[0], win[-1] - seg[0] + 1
            prov = {"dataset": "kins_video_car", "drive": task.drive, "split": task.split,
                    "raw_frames": [win[0], win[-1]], "tracks": spec.kind, "flow": backend.provenance,
                    "context": cfg.context}
            video = tracks_to_video(f"{task.drive}_{af.frame:010d}", frames[a:b], seg_instances,
                                    list(range(a, b)), [f"{task.drive}/{n:010d}" for n in win], prov)
            video = video.evolve(flow=fwd[a:b - 1], flow_backward=bwd[a:b - 1], flow_backend=backend.name)
            video = _label_clip(video, af.frame - win[0], af, cfg, stats)
            stats.clips += 1
            stats.frames += video.num_frames
            stats.tracked_objects += video.num_objects
            bar.update()
            yield video
    bar.close()


def build_drive(task: DriveTask) -> dict:
    """Write one drive's shard and its statistics; return the statistics (a joblib/Dask task)."""
    stats = DriveStats(task.drive, task.split, task.key)
    provenance = {"writer": "amodalkit build-kins-video", "dataset": "kins_video_car", "drive": task.drive,
                  "split": task.split, "build_key": task.key, "config": task.config.content(),
                  "categories": {str(CAR): CATEGORIES[CAR]}}
    write_shard(task.out_path, _drive_videos(task, stats), provenance)
    write_json(task.stats_path, asdict(stats))
    return asdict(stats)


def build_drive_on(task: DriveTask, device: str) -> dict:
    """:func:`build_drive` with the flow network on `device` (the device decides no content)."""
    return build_drive(replace(task, config=replace(task.config, device=device)))


def _done_stats(task: DriveTask) -> dict | None:
    """The statistics of a drive already written with the same key, else None."""
    stats_path, shard = Path(task.stats_path), Path(task.out_path)
    if not stats_path.is_file() or not shard.is_file():
        return None
    try:
        stats = json.loads(stats_path.read_text())
        with ShardReader(shard) as r:
            ok = r.provenance.get("build_key") == task.key and len(r) == stats.get("clips")
    except (AmodalkitError, OSError, ValueError):
        return None
    return stats if ok and stats.get("key") == task.key else None
