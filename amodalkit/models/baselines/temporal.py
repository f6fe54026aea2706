"""Temporal aggregation, the paper's rule-based video baseline (Algorithm 1, Table 4).

For frame n the aggregated mask starts as the visible mask of frame n-k, and for
t = n-k+1 .. n it is forward-warped with the aggregated flow and united with V_t. The
aggregated flow is the object's flow on its visible pixels and, on pixels the aggregate
completes but that are hidden at t, the mean visible flow of the object ("common fate").
The bi-directional variant also aggregates from frame n+k backwards (with the backward
flow) and takes the union of both directions.
"""

from __future__ import annotations

import numpy as np

from amodalkit.errors import AmodalkitError
from amodalkit.io.shards import Video
from amodalkit.models.base import AmodalMethod
from amodalkit.models.registry import ModelSpec, TableRow, register_model
from amodalkit.ops.warp import splat_mask


def aggregate_flow(visible: np.ndarray, aggregate: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Flow of the aggregate: measured on visible pixels, mean visible flow on hidden ones.

    visible, aggregate: (H, W) bool; flow: (H, W, 2). Returns (H, W, 2) float32.
    """
    out = np.zeros(flow.shape, np.float32)
    out[visible] = flow[visible]
    if visible.any():
        out[aggregate & ~visible] = flow[visible].astype(np.float32).mean(axis=0)
    return out


def aggregate_window(visible: np.ndarray, flow: np.ndarray, n: int, k: int) -> np.ndarray:
    """Algorithm 1 for frame n over the k frames before it (fewer at the video start).

    visible: (T, H, W) bool of one object; flow: (T-1, H, W, 2) with flow[t] from t to t+1.
    """
    start = max(0, n - k)
    agg = visible[start].copy()
    agg_flow = aggregate_flow(visible[start], agg, flow[start]) if n > start else None
    for t in range(start + 1, n + 1):
        agg = splat_mask(agg, agg_flow) | visible[t]
        if t < n:
            agg_flow = aggregate_flow(visible[t], agg, flow[t])
    return agg


class TemporalAggregation(AmodalMethod):
    """Rule-based aggregation of flow-warped visible masks over a window of k frames."""

    name = "temporal"
    fields = ("flow", "flow_backward")

    def __init__(self, k: int = 3, bidirectional: bool = False) -> None:
        if k < 1:
            raise AmodalkitError("temporal aggregation needs a window k >= 1")
        self.k = k
        self.bidirectional = bidirectional

    def describe(self) -> dict:
        return {"method": self.name, "k": self.k, "bidirectional": self.bidirectional}

    def predict_video(self, video: Video) -> np.ndarray:
        if video.flow is None or (self.bidirectional and video.flow_backward is None):
            need = "forward and backward flow" if self.bidirectional else "forward flow"
            raise AmodalkitError(f"video {video.name!r} has no {need}; "
                                 "run `amodalkit flow` on the shard first")
        visible = video.visible_masks()
        out = np.zeros(visible.shape, bool)
        for obj in range(video.num_objects):
            for n in range(video.num_frames):
                out[obj, n] = aggregate_window(visible[obj], video.flow, n, self.k)
                if self.bidirectional:
                    rev_vis = visible[obj, ::-1]
                    rev_flow = video.flow_backward[::-1]
                    m = video.num_frames - 1 - n
                    out[obj, n] |= aggregate_window(rev_vis, rev_flow, m, self.k)
        return out


register_model(ModelSpec(
    name=TemporalAggregation.name, method=TemporalAggregation,
    summary="union of the visible masks of k frames warped by the flow (rule-based; --k, --bidirectional)",
    table=(TableRow("temporal-k3", "Temporal aggregation k=3", {"k": 3}),
           TableRow("temporal-k5", "Temporal aggregation k=5", {"k": 5}),
           TableRow("temporal-k5-bi", "Temporal aggregation k=5, bi-directional",
                    {"k": 5, "bidirectional": True})),
))
