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
    """Collects per-video scores and reduces them to frame- and object-level mIoU."""

    frame_full_sum: float = 0.0
    frame_full_n: int = 0
    frame_occ_sum: float = 0.0
    frame_occ_n: int = 0
    object_full: list[np.ndarray] = field(default_factory=list)
    object_occ: list[np.ndarray] = field(default_factory=list)
    n_videos: int = 0

    def add(self, s: ObjectFrameScores) -> None:
        """Add one video's scores."""
        total, n = _frame_mean(s.full, s.scored)
        self.frame_full_sum += total
        self.frame_full_n += n
        total, n = _frame_mean(s.occluded, s.has_occluded)
        self.frame_occ_sum += total
        self.frame_occ_n += n
        self.object_full.append(s.full[s.scored])
        self.object_occ.append(s.occluded[s.has_occluded])
        self.n_videos += 1

    def result(self) -> dict:
        """The metric dictionary (NaN where nothing was scored)."""
        full = np.concatenate(self.object_full) if self.object_full else np.zeros(0)
        occ = np.concatenate(self.object_occ) if self.object_occ else np.zeros(0)

        def mean(total: float, n: int) -> float:
            return total / n if n else float("nan")

        return {
            "frame_miou_full": mean(self.frame_full_sum, self.frame_full_n),
            "frame_miou_occluded": mean(self.frame_occ_sum, self.frame_occ_n),
            "object_miou_full": float(full.mean()) if full.size else float("nan"),
            "object_miou_occluded": float(occ.mean()) if occ.size else float("nan"),
            "n_videos": self.n_videos,
            "n_frames": self.frame_full_n,
            "n_object_frames": int(full.size),
            "n_occluded_object_frames": int(occ.size),
        }
