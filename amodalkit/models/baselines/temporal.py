"""Temporal aggregation, the paper's rule-based video baseline (Algorithm 1, Table 4).

For frame n the aggregated mask starts as the visible mask of frame n-k, and for
t = n-k+1 .. n it is forward-warped with the aggregated flow and united with V_t. The
aggregated flow is the object's flow on its visible pixels and, on pixels the aggregate
completes but that are hidden at t, the mean visible flow of the object ("common fate").
The bi-directional variant also aggregates from frame n+k backwards (with the backward
flow) and takes the union of both directions.

The flow that moves a pixel at frame t depends only on t (and on whether the pixel is
visible then), not on the window, so :func:`aggregate_windows` advances the windows of
every object and frame together, one warp step at a time, on (K, S, H, W) arrays.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from amodalkit.errors import AmodalkitError
from amodalkit.io.shards import Video
from amodalkit.models.base import AmodalMethod
from amodalkit.models.registry import ModelSpec, TableRow, register_model


def _mean_visible_flow(seen: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Each object's mean visible flow per frame, 0 if unseen: (K, T, HW) bool, ((T-1)*HW, 2) -> (K*(T-1), 2).

    Bit for bit ``flow[t][visible].astype(np.float32).mean(axis=0)`` per frame: one gather for all
    frames, then ``np.add.reduce`` (what ``mean`` sums with) on each frame's (N, 2) float32 rows and
    a division by N. ``np.add.reduceat`` would be one call but sums in another order.
    """
    objects, hw = seen.shape[0], seen.shape[2]
    steps = flow.shape[0] // hw
    means = np.zeros((objects * steps, 2), np.float32)
    pixels = np.flatnonzero(seen[:, :steps])
    if pixels.size == 0:
        return means
    values = np.take(flow, pixels % (steps * hw), axis=0).astype(np.float32)
    counts = np.bincount(pixels // hw, minlength=objects * steps)
    present = np.flatnonzero(counts)
    ends = np.cumsum(counts)[present]
    sums = np.empty((present.size, 2), np.float32)
    for i, (start, end) in enumerate(zip((ends - counts[present]).tolist(), ends.tolist(), strict=True)):
        sums[i] = np.add.reduce(values[start:end], axis=0)
    means[present] = sums / counts[present, None]
    return means


class _Motion(NamedTuple):
    """What moves the pixels of a video's windows, flattened for 1-D gathers."""

    seen: np.ndarray  # (K*T*H*W,) bool: the visible masks
    flow: np.ndarray  # ((T-1)*H*W, 2): the flow, any float dtype
    means: np.ndarray  # (K*(T-1),) uint64: each object's mean visible flow per frame, a float32 pair's bits
    frames: int
    width: int


def _warp_step(agg: np.ndarray, motion: _Motion, first: int) -> np.ndarray:
    """Splat every window's aggregate by its frame's aggregated flow: (K, S, H*W) -> (K, S, H*W) bool.

    Window s sits at frame ``first + s``. Visible pixels move by their flow, the others by their
    object's mean visible flow, each to the nearest pixel; pixels leaving the frame are dropped.
    Float32 (u, v) pairs are picked as uint64 bits (one 1-D ``where``), and integer indices are
    split with ``//`` by a scalar, much faster than ``divmod`` on large arrays.
    """
    k, count, hw = agg.shape
    width, frames = motion.width, motion.frames
    flat = np.flatnonzero(agg)
    window = flat // hw
    p = flat - window * hw
    obj = window // count
    t = window - obj * count + first
    seen = motion.seen[(obj * frames + t) * hw + p]
    measured = np.take(motion.flow, t * hw + p, axis=0).astype(np.float32).view(np.uint64)[:, 0]
    common = np.take(motion.means, obj * (frames - 1) + t)
    d = np.where(seen, measured, common).view(np.float32).reshape(-1, 2).astype(np.float64)
    y = p // width
    x = p - y * width
    nx = np.rint(x + d[:, 0]).astype(np.int64)
    ny = np.rint(y + d[:, 1]).astype(np.int64)
    inside = (nx >= 0) & (nx < width) & (ny >= 0) & (ny < hw // width)
    out = np.zeros(k * count * hw + 1, bool)
    out[np.where(inside, window * hw + ny * width + nx, k * count * hw)] = True
    return out[:-1].reshape(k, count, hw)


def aggregate_windows(visible: np.ndarray, flow: np.ndarray, k: int,
                      chunk_pixels: int = 1 << 24) -> np.ndarray:
    """Algorithm 1 for every object and frame n over the k frames before n (fewer at the start).

    visible: (K, T, H, W) bool; flow: (T-1, H, W, 2) with flow[t] from t to t+1. Returns (K, T, H, W)
    bool. The windows of frames n >= k start at s = n - k and advance together for k steps, about
    `chunk_pixels` object-window pixels at a time; frames n < k are the window from 0 after n steps.
    """
    objects, num_frames, h, w = visible.shape
    steps = min(k, num_frames - 1)
    if steps <= 0:
        return visible.copy()
    vis = np.ascontiguousarray(visible).reshape(objects, num_frames, h * w)
    rows = np.ascontiguousarray(flow).reshape(-1, 2)
    means = _mean_visible_flow(vis, rows).view(np.uint64)[:, 0]
    motion = _Motion(vis.reshape(-1), rows, means, num_frames, w)
    starts = max(num_frames - k, 1)
    chunk = max(1, chunk_pixels // max(1, objects * h * w))
    out = vis.copy()
    for first in range(0, starts, chunk):
        last = min(first + chunk, starts)
        agg = vis[:, first:last]
        for j in range(1, steps + 1):
            agg = _warp_step(agg, motion, first + j - 1) | vis[:, first + j:last + j]
            if first == 0:
                out[:, j] = agg[:, 0]
        if steps == k:
            out[:, first + k:last + k] = agg
    return out.reshape(visible.shape)


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
        out = aggregate_windows(visible, video.flow, self.k)
        if self.bidirectional:
            out |= aggregate_windows(visible[:, ::-1], video.flow_backward[::-1], self.k)[:, ::-1]
        return out


register_model(ModelSpec(
    name=TemporalAggregation.name, method=TemporalAggregation,
    summary="union of the visible masks of k frames warped by the flow (rule-based; --k, --bidirectional)",
    table=(TableRow("temporal-k3", "Temporal aggregation k=3", {"k": 3}),
           TableRow("temporal-k5", "Temporal aggregation k=5", {"k": 5}),
           TableRow("temporal-k5-bi", "Temporal aggregation k=5, bi-directional",
                    {"k": 5, "bidirectional": True})),
))
