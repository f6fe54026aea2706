"""One video's scores: the paper's frame-level full and occluded mIoU of a prediction, for pictures."""

from __future__ import annotations

import numpy as np

from amodalkit.evaluation.evaluate import scored_object_frames
from amodalkit.evaluation.metrics import MetricAccumulator
from amodalkit.evaluation.protocols import DEFAULT_PROTOCOL, get_protocol
from amodalkit.io.shards import Video


def video_scores(video: Video, pred: np.ndarray, protocol: str = DEFAULT_PROTOCOL) -> dict[str, float]:
    """Frame-level full and occluded mIoU of a thresholded (K, T, H, W) prediction of `video` (NaN: none)."""
    rules = get_protocol(protocol)
    acc = MetricAccumulator()
    scored = rules.object_frames(video, scored_object_frames(video))
    if scored.any():
        acc.add(rules.score(pred, video, scored))
    result = acc.result()
    return {"full": result["frame_miou_full"], "occluded": result["frame_miou_occluded"]}
