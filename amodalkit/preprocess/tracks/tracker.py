"""The built-in tracker: link per-frame instance masks into tracks by flow-warped mask IoU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from amodalkit.errors import AmodalkitError
from amodalkit.ops.masks import bbox
from amodalkit.ops.warp import splat_mask
from amodalkit.preprocess.tracks.formats import FrameInstances, Instance


def _shift_mask(mask: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Translate a (H, W) bool mask by whole pixels, filling with False."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        mask[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def association_scores(preds: Sequence[np.ndarray],
                       dets: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Occlusion-aware IoU and precision of predicted vs detected (H, W) masks: two (N, M) arrays.

    Predicted pixels that land on *another* detection are taken as hidden behind it and do
    not count against the pair. With U the union of all detections and I = |P_i & D_j|:
    iou[i, j] = I / (|P_i| - |P_i & U| + |D_j|) and precision[i, j] = I / (|P_i| - |P_i & U| + I),
    the share of the prediction's expected-visible pixels that fall in D_j.
    """
    n, m = len(preds), len(dets)
    inter = np.zeros((n, m))
    if not n or not m:
        return inter, inter.copy()
    boxes_p, boxes_d = [bbox(p) for p in preds], [bbox(d) for d in dets]
    union_all = np.logical_or.reduce(list(dets))
    hidden = np.zeros((n, 1))  # |P_i| - |P_i & U|: predicted pixels on no detection
    for i, (p, bp) in enumerate(zip(preds, boxes_p)):
        if bp is None:
            continue
        crop = np.s_[bp[0]:bp[2], bp[1]:bp[3]]
        hidden[i] = np.count_nonzero(p[crop] & ~union_all[crop])
        for j, (d, bd) in enumerate(zip(dets, boxes_d)):
            if bd is None:
                continue
            y0, x0, y1, x1 = max(bp[0], bd[0]), max(bp[1], bd[1]), min(bp[2], bd[2]), min(bp[3], bd[3])
            if y0 < y1 and x0 < x1:
                inter[i, j] = np.count_nonzero(p[y0:y1, x0:x1] & d[y0:y1, x0:x1])
    area_d = np.array([np.count_nonzero(d) for d in dets], np.float64)[None, :]
    iou = np.where(hidden + area_d > 0, inter / np.maximum(hidden + area_d, 1), 0.0)
    precision = np.where(hidden + inter > 0, inter / np.maximum(hidden + inter, 1), 0.0)
    return iou, precision


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of the built-in tracker (recorded in the shard provenance)."""

    iou_threshold: float = 0.3
    max_gap: int = 3
    memory: int = 5
    precision_threshold: float | None = 0.3
    flow: str = "none"


@dataclass
class _Track:
    track_id: int
    class_id: int
    last_mask: np.ndarray
    last_frame: int
    pieces: list[tuple[np.ndarray, np.ndarray]]
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    pred: np.ndarray | None = None

    def remember(self, mask: np.ndarray, t: int, memory: int) -> None:
        """Record the visible mask matched at frame t; keep the last `memory` of them."""
        self.last_mask, self.last_frame = mask, t
        self.pieces = [*self.pieces, (mask, np.zeros(2))][-memory:]

    def advance(self, t: int, flows: np.ndarray | None) -> None:
        """Move the track's state from frame t-1 to t and set `pred`, its expected extent at t."""
        if flows is None:
            self.pred = self.last_mask
            return
        pred = np.zeros_like(self.last_mask)
        if self.last_frame == t - 1:
            flow = flows[t - 1]
            pred = splat_mask(self.last_mask, flow)
            y0, x0, y1, x1 = bbox(self.last_mask)
            self.velocity = flow[y0:y1, x0:x1][self.last_mask[y0:y1, x0:x1]].mean(axis=0, dtype=np.float64)
        for mask, offset in self.pieces:
            offset += self.velocity
            dx, dy = np.rint(offset).astype(int)
            pred |= _shift_mask(mask, int(dx), int(dy))
        self.pred = pred


def link_tracks(frames_masks: Sequence[Sequence[Instance | np.ndarray]], flows: np.ndarray | None = None,
                iou_threshold: float = 0.3, max_gap: int = 3, memory: int = 5,
                precision_threshold: float | None = 0.3, quiet: bool = True) -> FrameInstances:
    """Link per-frame instance masks (ids arbitrary per frame) into tracks; new ids 1, 2, ... .

    frames_masks[t] lists the instances of frame t (``Instance`` or bare (H, W) bool masks,
    class 0); flows (T-1, H, W, 2) is the forward flow, flows[t] mapping frame t to t+1.

    Each live track predicts its extent in the next frame: its last visible mask moved pixel
    by pixel along the flow, united with its last `memory` visible masks carried along at the
    track's mean flow (so parts hidden a moment ago still count; during a gap the track keeps
    its last mean flow, since the flow of hidden pixels belongs to the occluder). A track is
    also scored with its unmoved last mask and the better score counts, a hedge against flow
    errors (DIS on textureless regions). Without flow only the unmoved last mask is used.

    Predictions and detections of the same class are paired by Hungarian assignment in two
    rounds: first on occlusion-aware IoU (``association_scores``) of at least
    `iou_threshold`, then the leftovers on occlusion-aware precision of at least
    `precision_threshold` (None skips that round; it accepts a detection grown by
    disocclusion); ties favour the track seen most recently. A track unmatched for more than
    `max_gap` frames ends; an unmatched detection starts a new track. Empty masks are
    skipped. Output instances keep each frame's input order, so the overlap rule holds.
    """
    if max_gap < 0 or memory < 1 or not 0.0 < iou_threshold <= 1.0:
        raise AmodalkitError("max_gap must be >= 0, memory >= 1 and iou_threshold in (0, 1]")
    n_frames = len(frames_masks)
    if flows is not None and len(flows) < n_frames - 1:
        raise AmodalkitError(f"need {n_frames - 1} forward flow fields for {n_frames} frames, "
                             f"got {len(flows)}")
    live: list[_Track] = []
    next_id = 1
    out: FrameInstances = []
    for t in tqdm(range(n_frames), desc="linking", unit="frame", disable=quiet):
        dets = [d if isinstance(d, Instance) else Instance(0, 0, np.asarray(d, bool))
                for d in frames_masks[t]]
        live = [tr for tr in live if t - tr.last_frame - 1 <= max_gap]
        for tr in live:
            tr.advance(t, flows)
        order = [i for i, d in enumerate(dets) if d.mask.any()]
        assigned = _assign(live, [dets[i] for i in order], t, iou_threshold, precision_threshold)
        frame_out: list[Instance] = []
        for j, i in enumerate(order):
            d = dets[i]
            tr = assigned.get(j)
            if tr is None:
                tr = _Track(next_id, d.class_id, d.mask, t, [(d.mask, np.zeros(2))])
                live.append(tr)
                next_id += 1
            else:
                tr.remember(d.mask, t, memory if flows is not None else 1)
            frame_out.append(Instance(tr.track_id, d.class_id, d.mask))
        out.append(frame_out)
    return out


def _assign(live: list[_Track], dets: list[Instance], t: int, iou_threshold: float,
            precision_threshold: float | None) -> dict[int, _Track]:
    """Detection index -> matched track, by the two Hungarian rounds of ``link_tracks``."""
    assigned: dict[int, _Track] = {}
    if not live or not dets:
        return assigned
    iou, precision = association_scores([tr.pred for tr in live], [d.mask for d in dets])
    if any(tr.pred is not tr.last_mask for tr in live):
        iou0, precision0 = association_scores([tr.last_mask for tr in live], [d.mask for d in dets])
        iou, precision = np.maximum(iou, iou0), np.maximum(precision, precision0)
    same = np.array([[tr.class_id == d.class_id for d in dets] for tr in live])
    gaps = np.array([t - tr.last_frame - 1 for tr in live], np.float64)
    rounds = [(iou, iou >= iou_threshold)]
    if precision_threshold is not None:
        rounds.append((precision, (precision >= precision_threshold) & (iou > 0)))
    free_r, free_c = np.ones(len(live), bool), np.ones(len(dets), bool)
    for score, ok in rounds:
        allowed = ok & same & free_r[:, None] & free_c[None, :]
        if not allowed.any():
            continue
        rows, cols = linear_sum_assignment(np.where(allowed, -score + 1e-6 * gaps[:, None], 1e6))
        for r, c in zip(rows, cols):
            if allowed[r, c]:
                assigned[int(c)] = live[r]
                free_r[r] = free_c[c] = False
    return assigned
