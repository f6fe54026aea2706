"""The paper's metrics: full and occluded IoU at frame and object level (docs/decisions.md, Metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SMOOTH = 1e-6


def iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU with the official smoothing over the last two axes: (..., H, W) bool -> (...) float."""
    pred = pred.astype(bool)
    gt = gt.astype(bool)
    inter = (pred & gt).sum(axis=(-2, -1), dtype=np.float64)
    union = (pred | gt).sum(axis=(-2, -1), dtype=np.float64)
    return (inter + SMOOTH) / (union + SMOOTH)


@dataclass
class ObjectFrameScores:
    """Scores of one video's object-frames, each (K, T)."""

    full: np.ndarray
    occluded: np.ndarray
    has_occluded: np.ndarray
    scored: np.ndarray


def score_video(pred: np.ndarray, gt: np.ndarray, visible: np.ndarray, scored: np.ndarray,
                hidden: np.ndarray | None = None, drop_perfect: bool = False) -> ObjectFrameScores:
    """Score thresholded predictions of one video.

    pred, gt, visible: (K, T, H, W) bool; scored: (K, T) bool, the object-frames that count.
    Occluded IoU restricts both masks to `hidden` (default: the pixels outside the visible
    mask); only object-frames whose ground truth has such pixels (``has_occluded``) enter the
    occluded mean. With `drop_perfect` (the official KINS rule) entries whose IoU is exactly 1
    leave each mean, and every scored object-frame enters the occluded one.
    """
    pred = pred.astype(bool)
    gt = gt.astype(bool)
    outside = ~visible.astype(bool) if hidden is None else hidden.astype(bool)
    gt_occ = gt & outside
    full = iou(pred, gt)
    occluded = iou(pred & outside, gt_occ)
    scored = scored.astype(bool)
    if drop_perfect:
        return ObjectFrameScores(full=full, occluded=occluded, has_occluded=scored & (occluded != 1.0),
                                 scored=scored & (full != 1.0))
    return ObjectFrameScores(full=full, occluded=occluded, has_occluded=scored & gt_occ.any(axis=(-2, -1)),
                             scored=scored)


def _frame_mean(values: np.ndarray, mask: np.ndarray) -> tuple[float, int]:
    """Sum over frames of the per-frame object mean, and how many frames had any object."""
    counts = mask.sum(axis=0)
    sums = np.where(mask, values, 0.0).sum(axis=0)
    keep = counts > 0
    return float((sums[keep] / counts[keep]).sum()), int(keep.sum())


@dataclass
class MetricAccumulator:
    """Collects per-video scores and reduces them to frame- and object-level mIoU.

    Each video's frame sums are kept apart and summed only in :meth:`result`, so accumulators
    of consecutive video ranges (one per shard, computed anywhere) joined with :meth:`merge`
    in order give exactly the numbers of one accumulator over all the videos.
    """

    frame_full: list[tuple[float, int]] = field(default_factory=list)
    frame_occ: list[tuple[float, int]] = field(default_factory=list)
    object_full: list[np.ndarray] = field(default_factory=list)
    object_occ: list[np.ndarray] = field(default_factory=list)
    n_videos: int = 0

    def add(self, s: ObjectFrameScores) -> None:
        """Add one video's scores."""
        self.frame_full.append(_frame_mean(s.full, s.scored))
        self.frame_occ.append(_frame_mean(s.occluded, s.has_occluded))
        self.object_full.append(s.full[s.scored])
        self.object_occ.append(s.occluded[s.has_occluded])
        self.n_videos += 1

    def merge(self, later: MetricAccumulator) -> MetricAccumulator:
        """Append the videos of `later` (the ones after these) to this accumulator; returns it."""
        self.frame_full += later.frame_full
        self.frame_occ += later.frame_occ
        self.object_full += later.object_full
        self.object_occ += later.object_occ
        self.n_videos += later.n_videos
        return self

    def result(self) -> dict:
        """The metric dictionary (NaN where nothing was scored)."""
        full = np.concatenate(self.object_full) if self.object_full else np.zeros(0)
        occ = np.concatenate(self.object_occ) if self.object_occ else np.zeros(0)

        def mean(parts: list[tuple[float, int]]) -> tuple[float, int]:
            total = 0.0
            n = 0
            for value, count in parts:  # in video order, as a running sum over the videos would add
                total += value
                n += count
            return (total / n if n else float("nan")), n

        frame_full, n_frames = mean(self.frame_full)
        return {
            "frame_miou_full": frame_full,
            "frame_miou_occluded": mean(self.frame_occ)[0],
            "object_miou_full": float(full.mean()) if full.size else float("nan"),
            "object_miou_occluded": float(occ.mean()) if occ.size else float("nan"),
            "n_videos": self.n_videos,
            "n_frames": n_frames,
            "n_object_frames": int(full.size),
            "n_occluded_object_frames": int(occ.size),
        }
