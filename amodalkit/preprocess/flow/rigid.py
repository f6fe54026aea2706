"""Flow from a rigid motion per tracked object: each object's shift fitted to its visible masks.

``rigid[:BASE]`` estimates the flow of a video from its frames *and* the visible id map the
pipeline already holds (ground-truth visible masks or tracks): for every object and frame pair
(t, t+1) it picks the integer translation ``d`` that best explains how the object's visible
mask moved, and paints ``d`` on the object's visible pixels; the background takes the flow of
``BASE`` (any other backend name, default ``dis:fast``), or zero with ``rigid:zero`` (a still
camera). ``rigid:layers`` is ``rigid:zero`` whose background patches of another colour than
the background's (texture no track claims) are fitted as rigid layers of their own
(:mod:`amodalkit.preprocess.flow.patches`).

The fit uses only what a rigid object under occlusion must satisfy: the visible pixels of
frame t, moved by ``d``, land on pixels of frame t+1 that are the object or something in front
of it (never on the bare background), and the same backwards. Among shifts that break this on
the fewest pixels the one that lands most of the mask on the object's own visible pixels
wins; remaining ties go to the shift nearest the median ``BASE`` flow over the object
(the search is centred there, ``radius`` pixels each way). Objects of Chewing Gum move by
integer translations, which this recovers exactly; for other data (turning cars) it is an
integer, translation-only approximation, and its error should be measured, as
``benchmarks/bench_flow_accuracy.py`` does.
"""

from __future__ import annotations

import numpy as np

from amodalkit.errors import AmodalkitError
from amodalkit.preprocess.flow.base import FlowBackend, Progress
from amodalkit.preprocess.flow.patches import video_patch_flows

DEFAULT_BACKGROUND = "dis:fast"
DEFAULT_RADIUS = 4
OWN_WEIGHT = 1e-3  # per pixel landing on the object's own visible mask: breaks ties only


def _shifted(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``(T, H, W)`` masks moved by (dx, dy) pixels, zeros entering at the edges."""
    out = np.zeros_like(mask)
    h, w = mask.shape[-2:]
    if abs(dx) >= w or abs(dy) >= h:
        return out
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = mask[..., ys, xs]
    return out


def fit_translations(visible_ids: np.ndarray, prior: np.ndarray, radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """Integer shift of every object between consecutive frames: ``(K, T-1, 2)`` (dx, dy).

    `visible_ids` is the ``(T, H, W)`` id map (0 background, k+1 object k); `prior` the
    ``(K, T-1, 2)`` centre of the search (e.g. the median estimated flow over each object).
    Objects absent from either frame get the rounded prior.
    """
    ids = np.asarray(visible_ids)
    t = ids.shape[0]
    k = prior.shape[0]
    shifts = np.rint(prior).astype(np.int64)
    if t < 2 or k == 0:
        return shifts
    foreground = ids > 0
    offsets = np.arange(-radius, radius + 1)
    for obj in range(k):
        mask = ids == obj + 1
        first, second = mask[:-1], mask[1:]
        present = first.any(axis=(1, 2)) & second.any(axis=(1, 2))
        centres = shifts[obj].copy()
        # pairs that share a search centre are searched together, each offset on all of them at once
        for centre in np.unique(centres[present], axis=0):
            sel = np.flatnonzero(present & (centres == centre).all(axis=1))
            src, dst = first[sel], second[sel]
            # allowed landing pixels: the object itself or anything drawn over it (any foreground)
            land_fwd, land_bwd = foreground[1:][sel], foreground[:-1][sel]
            best = np.full(len(sel), np.inf)
            for oy in offsets:
                for ox in offsets:
                    dx, dy = int(centre[0] + ox), int(centre[1] + oy)
                    fwd = _shifted(src, dx, dy)
                    bwd = _shifted(dst, -dx, -dy)
                    bad = (np.count_nonzero(fwd & ~land_fwd, axis=(1, 2))
                           + np.count_nonzero(bwd & ~land_bwd, axis=(1, 2)))
                    own = np.count_nonzero(fwd & dst, axis=(1, 2))
                    cost = bad - OWN_WEIGHT * own + 1e-6 * (ox * ox + oy * oy)
                    better = cost < best
                    best[better] = cost[better]
                    shifts[obj, sel[better]] = (dx, dy)
    return shifts


def object_medians(flow: np.ndarray, visible_ids: np.ndarray, num_objects: int) -> np.ndarray:
    """Median ``(K, T-1, 2)`` of a forward flow over each object's visible pixels in frame t (0 if none)."""
    out = np.zeros((num_objects, flow.shape[0], 2))
    for obj in range(num_objects):
        for pair in range(flow.shape[0]):
            sel = visible_ids[pair] == obj + 1
            if sel.any():
                out[obj, pair] = np.median(flow[pair][sel], axis=0)
    return out


def paint_flow(background: np.ndarray, ids: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """`background` ``(T-1, H, W, 2)`` with each object's shift ``(K, T-1, 2)`` on its pixels of `ids`."""
    out = np.array(background, np.float32, copy=True)
    table = np.zeros((out.shape[0], shifts.shape[0] + 1, 2), np.float32)  # row 0: the background's
    table[:, 1:] = shifts.transpose(1, 0, 2)
    objects = (ids > 0) & (ids <= shifts.shape[0])
    pair_of = np.broadcast_to(np.arange(out.shape[0])[:, None, None], ids.shape)
    out[objects] = table[pair_of[objects], ids[objects]]
    return out


class RigidObjectBackend(FlowBackend):
    """Per-object integer translations fitted to the visible masks, `background` flow elsewhere."""

    uses_visible = True

    def __init__(self, background: FlowBackend | None, radius: int = DEFAULT_RADIUS,
                 patches: bool = False) -> None:
        if radius < 0:
            raise AmodalkitError("the rigid flow search radius must not be negative")
        if patches and background is not None:
            raise AmodalkitError("background patches are fitted on a still background only (rigid:layers)")
        self.background = background
        self.radius = radius
        self.patches = patches
        base = background.name if background is not None else "layers" if patches else "zero"
        self.name = "rigid" if base == DEFAULT_BACKGROUND else f"rigid:{base}"
        described: dict | str = background.provenance if background is not None else "zero"
        if patches:
            described = "zero; patches of another colour fitted as integer translations"
        self.provenance = {"backend": self.name, "objects": "integer translation fitted to visible masks",
                           "search_radius": radius, "background": described}

    def _pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        raise AmodalkitError(f"the {self.name} flow backend fits each object's motion to its visible "
                             "masks, so it runs on shards (amodalkit flow SHARD), not on frame pairs alone")

    def compute_both_visible(self, frames: np.ndarray, visible_ids: np.ndarray, num_objects: int,
                             batch_size: int = 1, progress: Progress = None) -> tuple[np.ndarray, np.ndarray]:
        """Forward and backward flow ``(T-1, H, W, 2)`` of a video from its frames and id map."""
        frames = np.asarray(frames)
        ids = np.asarray(visible_ids)
        if ids.shape != frames.shape[:3]:
            raise AmodalkitError(f"visible id map is {ids.shape}, frames are {frames.shape[:3]}")
        t, h, w = ids.shape
        if self.background is not None:
            fwd_bg, bwd_bg = self.background.compute_both(frames, batch_size, progress)
        else:
            fwd_bg = bwd_bg = np.zeros((max(t - 1, 0), h, w, 2), np.float32)
            if progress is not None:
                progress(2 * max(t - 1, 0))
        prior = object_medians(fwd_bg, ids, num_objects)
        shifts = fit_translations(ids, prior, self.radius)
        if self.patches and t > 1:
            fwd_bg, bwd_bg = video_patch_flows(frames, ids, shifts, self.radius)
        return paint_flow(fwd_bg, ids[:-1], shifts), paint_flow(bwd_bg, ids[1:], -shifts)
