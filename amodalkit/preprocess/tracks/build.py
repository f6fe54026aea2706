"""The tracks stage: frames plus tracks (read, or linked by the built-in tracker) into a shard video."""

from __future__ import annotations

import glob
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from amodalkit.errors import AmodalkitError
from amodalkit.io.images import check_size, header_size, natural_key, read_rgb_frames
from amodalkit.io.shard_write import write_shard
from amodalkit.io.shards import Video, flow_for_storage
from amodalkit.preprocess.flow.base import FlowBackend
from amodalkit.preprocess.tracks.formats import CLASS_IDS, FrameInstances, parse_classes, read_tracks
from amodalkit.preprocess.tracks.tracker import TrackerConfig, link_tracks


def tracks_to_video(name: str, frames: np.ndarray, tracks: FrameInstances,
                    frame_numbers: Sequence[int] | None = None,
                    source_frame_ids: Sequence[str] | None = None, provenance: dict | None = None) -> Video:
    """Build a shard Video from frames (T, H, W, 3) uint8 and instances per frame number.

    frame_numbers[t] is the tracks' frame number of video frame t (default t); instances on
    other frame numbers are dropped. An object is a distinct (class_id, track_id), ordered by
    first appearance (frame, then position in that frame's list); object k has id k + 1 in
    visible_ids, overlaps resolved by the module's rule (first listed wins). presence[k]
    spans its first to last observed frame (a gap in between is taken as full occlusion).
    No amodal ground truth: amodal is all zeros and amodal_annotated all False.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise AmodalkitError(f"frames must be (T, H, W, 3) uint8, got {frames.dtype} {frames.shape}")
    t_len, h, w = frames.shape[:3]
    numbers = list(range(t_len)) if frame_numbers is None else [int(n) for n in frame_numbers]
    if len(numbers) != t_len:
        raise AmodalkitError(f"{len(numbers)} frame numbers for {t_len} frames")
    per_frame = [tracks[n] if 0 <= n < len(tracks) else [] for n in numbers]
    keys: list[tuple[int, int]] = []
    first: dict[tuple[int, int], tuple[int, int]] = {}
    for t, insts in enumerate(per_frame):
        for j, inst in enumerate(insts):
            if inst.mask.shape != (h, w):
                raise AmodalkitError(f"frame {numbers[t]}: mask size {inst.mask.shape[0]}x"
                                     f"{inst.mask.shape[1]} does not match the frames' {h}x{w}")
            key = (inst.class_id, inst.track_id)
            if key not in first:
                first[key] = (t, j)
                keys.append(key)
    keys.sort(key=lambda k: first[k])
    index = {key: k for k, key in enumerate(keys)}
    n_obj = len(keys)
    if n_obj >= np.iinfo(np.uint16).max:
        raise AmodalkitError(f"{n_obj} tracks do not fit a uint16 id map")
    visible = np.zeros((t_len, h, w), np.uint16)
    observed = np.zeros((n_obj, t_len), bool)
    for t, insts in enumerate(per_frame):
        for inst in reversed(insts):
            k = index[(inst.class_id, inst.track_id)]
            visible[t][inst.mask] = k + 1
            observed[k, t] = True
    presence = np.zeros_like(observed)
    for k in range(n_obj):
        seen = np.flatnonzero(observed[k])
        presence[k, seen[0]:seen[-1] + 1] = True
    ids = source_frame_ids if source_frame_ids is not None else [str(n) for n in numbers]
    return Video(
        name=name,
        frames=frames,
        visible_ids=visible,
        amodal=np.zeros((n_obj, t_len, h, w), bool),
        amodal_annotated=np.zeros((n_obj, t_len), bool),
        presence=presence,
        track_ids=np.array([k[1] for k in keys], np.int64),
        source_frame_ids=np.asarray(list(ids), dtype=object),
        object_class=np.array([k[0] for k in keys], np.int32),
        provenance=dict(provenance or {}),
    )


def list_frame_files(pattern: str | Path) -> list[Path]:
    """Frame image files matching a glob, or every PNG of a folder, in natural order."""
    text = str(pattern)
    if Path(text).is_dir():
        paths = sorted(Path(text).glob("*.png"), key=natural_key)
    else:
        paths = sorted((Path(p) for p in glob.glob(text)), key=natural_key)
    if not paths:
        raise AmodalkitError("no frame images match this pattern", text)
    return paths


def frame_numbers_from_names(paths: Sequence[Path]) -> list[int]:
    """Frame numbers from file names like 000123.png; positions 0..T-1 when a name holds no number."""
    found = [re.fullmatch(r"\D*?(\d+)", p.stem) for p in paths]
    numbers = [int(m.group(1)) for m in found if m]
    if len(numbers) == len(paths) and len(set(numbers)) == len(numbers):
        return numbers
    return list(range(len(paths)))


FLOW_BATCH = 2


def _compute_flow(frames: np.ndarray, backend: FlowBackend, quiet: bool) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward flow (T-1, H, W, 2) float32 of frames in one pass.

    Each network call takes ``FLOW_BATCH`` pairs: one frame pair in both directions.
    """
    with tqdm(total=2 * max(len(frames) - 1, 0), desc=f"flow {backend.name}", unit="pair",
              disable=quiet) as bar:
        return backend.compute_both(frames, FLOW_BATCH, bar.update)


def build_tracks_shard(out: str | Path, frames_pattern: str, mots: str | Path | None = None,
                       masks: str | Path | None = None, fmt: str = "auto",
                       classes: Iterable[str | int] | None = None, tracker: str | None = None,
                       flow: str | None = None, iou_threshold: float = 0.3, max_gap: int = 3,
                       name: str | None = None, quiet: bool = False,
                       flow_checkpoint: str | Path | None = None, device: str = "auto",
                       segment: str | None = None, seg_checkpoint: str | Path | None = None,
                       track_checkpoint: str | Path | None = None) -> Video:
    """Read frames and tracks (or masks to link), build one Video and write it as a shard at `out`.

    `mots` holds tracks (tracker 'file' keeps its ids; 'builtin' re-links them), `masks`
    per-frame instances whose ids mean nothing (tracker 'builtin'). Frame files named by
    number (000123.png) pair with the tracks' frame numbers, otherwise by position. With
    `flow` (a backend name: ``dis``, ``flownet2`` or ``ptlflow:NAME``, the networks with their
    weights in `flow_checkpoint`, run on `device`) the forward and backward flow are computed,
    stored in the shard, and the forward flow drives the built-in tracker's warping. With
    ``segment="pointtrack"`` the visible masks come from the frames themselves: PointTrack's
    segmenter (`seg_checkpoint`) and, by default, its tracker (`track_checkpoint`;
    ``tracker="builtin"`` links the segmenter's masks with the built-in tracker instead).
    """
    if segment is not None:
        return _build_from_segmenter(out, frames_pattern, segment, seg_checkpoint, track_checkpoint, classes,
                                     tracker, flow, iou_threshold, max_gap, name, quiet, flow_checkpoint,
                                     device, mots or masks)
    if (mots is None) == (masks is None):
        raise AmodalkitError("give exactly one of --mots (tracks) or --masks (per-frame masks to link), "
                             "or --segment pointtrack")
    tracker = tracker or ("builtin" if masks is not None else "file")
    if tracker not in ("file", "builtin"):
        raise AmodalkitError(f"unknown tracker {tracker!r} for tracks from files; choose file or builtin")
    if masks is not None and tracker != "builtin":
        raise AmodalkitError("--masks needs --tracker builtin (use --mots for files that hold tracks)")
    if flow_checkpoint is not None and flow is None:
        raise AmodalkitError("--flow-checkpoint holds the weights of --flow: give --flow flownet2 or "
                             "ptlflow:NAME")
    backend = None
    if flow is not None:
        from amodalkit.preprocess.flow.backends import get_flow_backend, require_frames_only

        backend = require_frames_only(get_flow_backend(flow, flow_checkpoint, device, "--flow-checkpoint"),
                                      "tracks --flow (the tracks are what it would need)")
    source = Path(mots if mots is not None else masks)
    paths = list_frame_files(frames_pattern)
    numbers = frame_numbers_from_names(paths)
    wanted = parse_classes(classes)
    first = header_size(paths[0])
    if first is not None:
        check_size(*first, "frame", paths[0])
    instances, used_fmt = read_tracks(source, fmt, wanted, frames=set(numbers), size=first)
    frames = read_rgb_frames(paths, quiet)
    provenance: dict = {"stage": "tracks", "source": str(source), "format": used_fmt,
                        "frames": frames_pattern, "tracker": tracker,
                        "classes": sorted(wanted) if wanted is not None else "all but ignore"}
    return _link_and_write(out, paths, frames, instances, numbers, provenance, tracker, backend, flow,
                           iou_threshold, max_gap, name, quiet, source)


def _link_and_write(out: str | Path, paths: list[Path], frames: np.ndarray, instances: FrameInstances,
                    numbers: list[int], provenance: dict, tracker: str, backend: FlowBackend | None,
                    flow: str | None, iou_threshold: float, max_gap: int, name: str | None, quiet: bool,
                    source: Path) -> Video:
    """Check the masks, link them with the built-in tracker if asked, add flow, write the shard."""
    size = frames.shape[1:3]
    for n, insts in enumerate(instances):
        for inst in insts:
            if inst.mask.shape != size:
                raise AmodalkitError(f"frame {n}: mask size {inst.mask.shape[0]}x{inst.mask.shape[1]} does "
                                     f"not match the frames' {size[0]}x{size[1]}", source)
    video_name = name or paths[0].parent.name or "video"
    if "/" in video_name or video_name in (".", ".."):
        raise AmodalkitError(f"invalid video name {video_name!r}; pass --name")
    fwd = bwd = None
    if backend is not None:
        fwd, bwd = _compute_flow(frames, backend, quiet)
    if tracker == "builtin":
        cfg = TrackerConfig(iou_threshold, max_gap, flow=flow or "none")
        per_frame = [instances[n] if n < len(instances) else [] for n in numbers]
        instances = link_tracks(per_frame, fwd, cfg.iou_threshold, cfg.max_gap, cfg.memory,
                                cfg.precision_threshold, quiet)
        numbers = list(range(len(numbers)))
        provenance["tracker_config"] = asdict(cfg)
    video = tracks_to_video(video_name, frames, instances, numbers,
                            [f"{p.parent.name}/{p.name}" for p in paths], provenance)
    root = {"writer": "amodalkit tracks", **provenance}
    if backend is not None:
        video = video.evolve(flow=flow_for_storage(fwd), flow_backward=flow_for_storage(bwd),
                             flow_backend=backend.name)
        root["flow"] = backend.provenance
    write_shard(out, [video], root)
    return video


def _build_from_segmenter(out: str | Path, frames_pattern: str, segment: str,
                          seg_checkpoint: str | Path | None, track_checkpoint: str | Path | None,
                          classes: Iterable[str | int] | None, tracker: str | None, flow: str | None,
                          iou_threshold: float, max_gap: int, name: str | None, quiet: bool,
                          flow_checkpoint: str | Path | None, device: str, given: object) -> Video:
    """:func:`build_tracks_shard` with visible masks segmented from the frames by PointTrack."""
    if given is not None:
        raise AmodalkitError("--segment replaces --mots / --masks; give one of them")
    if segment != "pointtrack":
        raise AmodalkitError(f"unknown --segment {segment!r}; choose pointtrack")
    tracker = tracker or "pointtrack"
    if tracker not in ("pointtrack", "builtin"):
        raise AmodalkitError(f"--segment pointtrack links with its own tracker or --tracker builtin, "
                             f"not {tracker!r}")
    if seg_checkpoint is None or (tracker == "pointtrack" and track_checkpoint is None):
        need = " and --track-checkpoint PointTrack.pthCar" if tracker == "pointtrack" else ""
        raise AmodalkitError(f"--segment pointtrack needs --seg-checkpoint best_seed_model.pthCar{need}")
    wanted = parse_classes(classes)
    if wanted is not None and wanted != frozenset({CLASS_IDS["car"]}):
        raise AmodalkitError("the released PointTrack weights are for cars only (--class car)")
    from amodalkit.device import resolve_device
    from amodalkit.preprocess.tracks.pointtrack import (
        load_segmenter,
        load_tracker,
        segment_video,
        track_video,
    )

    backend = None
    if flow is not None:
        from amodalkit.preprocess.flow.backends import get_flow_backend, require_frames_only

        backend = require_frames_only(get_flow_backend(flow, flow_checkpoint, device, "--flow-checkpoint"),
                                      "tracks --flow (the tracks are what it would need)")
    dev = resolve_device(device)
    segmenter = load_segmenter(seg_checkpoint, dev)
    paths = list_frame_files(frames_pattern)
    frames = read_rgb_frames(paths, quiet)
    car = CLASS_IDS["car"]
    if tracker == "pointtrack":
        trk = load_tracker(track_checkpoint, dev)
        instances = track_video(frames, segmenter, trk, class_id=car, quiet=quiet)
    else:
        instances = segment_video(frames, segmenter, class_id=car, quiet=quiet)
    provenance = {"stage": "tracks", "source": "pointtrack", "format": "pointtrack-inference",
                  "frames": frames_pattern, "classes": [car], "tracker": tracker,
                  "pointtrack": {"seg_checkpoint": str(seg_checkpoint),
                                 "track_checkpoint": track_checkpoint and str(track_checkpoint)}}
    return _link_and_write(out, paths, frames, instances, list(range(len(paths))), provenance, tracker,
                           backend, flow, iou_threshold, max_gap, name, quiet, Path(str(seg_checkpoint)))
