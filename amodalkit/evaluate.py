"""Score a method on shards with the paper's metrics (SPEC section 6)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from amodalkit.errors import AmodalkitError
from amodalkit.metrics import MetricAccumulator, score_video
from amodalkit.models.base import AmodalMethod
from amodalkit.shards import ShardReader, Video, iter_videos

GT_FIELDS = ("amodal", "amodal_annotated")


def scored_object_frames(video: Video) -> np.ndarray:
    """Object-frames that count: annotated, present, with a non-empty amodal mask: (K, T) bool."""
    return video.amodal_annotated & video.presence & video.amodal.any(axis=(-2, -1))


def predict_binary(method: AmodalMethod, video: Video) -> np.ndarray:
    """Thresholded prediction at 0.5, with visible pixels always part of it: (K, T, H, W) bool."""
    pred = np.asarray(method.predict_video(video))
    expected = (video.num_objects, video.num_frames, *video.size)
    if pred.shape != expected:
        raise AmodalkitError(f"method {method.name!r} returned shape {pred.shape} for video "
                             f"{video.name!r}, expected {expected}")
    return (pred > 0.5) | video.visible_masks()


def evaluate_method(method: AmodalMethod, paths: Sequence[Path], quiet: bool = False,
                    data: str | None = None,
                    object_filter: Callable[[Video], np.ndarray] | None = None) -> dict:
    """Frame- and object-level full/occluded mIoU of `method` over every video of `paths`.

    `object_filter(video)` -> (K, T) bool, when given, further restricts the scored
    object-frames (e.g. FISHBOWL's occlusion-rate range).
    """
    total = 0
    for p in paths:
        with ShardReader(p) as r:
            total += len(r)
    acc = MetricAccumulator()
    fields = tuple(method.fields) + GT_FIELDS
    for _, video in tqdm(iter_videos(paths, fields), total=total, desc=f"evaluate {method.name}",
                         unit="video", disable=quiet):
        scored = scored_object_frames(video)
        if object_filter is not None:
            scored = scored & np.asarray(object_filter(video), bool)
        if not scored.any():
            acc.n_videos += 1
            continue
        acc.add(score_video(predict_binary(method, video), video.amodal, video.visible_masks(), scored))
    result = acc.result()
    if result["n_object_frames"] == 0:
        raise AmodalkitError("the shards hold no amodal ground truth to score against",
                             paths[0] if len(paths) == 1 else None)
    return {**method.describe(), "data": data or " ".join(str(p) for p in paths),
            "shards": [str(p) for p in paths], **result}


def format_table(result: dict) -> str:
    """A small text table of one evaluation result."""
    rows = [
        ("", "full", "occluded"),
        ("frame-level mIoU", f"{result['frame_miou_full']:.4f}", f"{result['frame_miou_occluded']:.4f}"),
        ("object-level mIoU", f"{result['object_miou_full']:.4f}", f"{result['object_miou_occluded']:.4f}"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"method: {result['method']}  videos: {result['n_videos']}  object-frames: "
             f"{result['n_object_frames']} ({result['n_occluded_object_frames']} occluded)"]
    lines += [f"{a:<{width}}  {b:>8}  {c:>8}" for a, b, c in rows]
    return "\n".join(lines)
