"""PointTrack's inference around the networks: seed clustering, point sampling and association.

The steps and constants are those of the official test scripts (``utils/utils.py``
``Cluster.cluster_mots_wo_points``, ``datasets/KittiMOTSDataset.py``
``MOTSTrackCarsValOffset`` and ``utils/mots_util.py`` ``TrackHelper``), written afresh:

* :func:`cluster` turns the segmenter's ``(5, H, W)`` output into instance masks;
* :func:`instance_points` samples each instance's point cloud and box for the tracker;
* :class:`PointTrackTracker` links the embeddings frame to frame (Hungarian assignment on
  embedding distance plus mask IoU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from amodalkit.errors import AmodalkitError
from amodalkit.preprocess.tracks.pointtrack_nets import BG_POINTS, FG_POINTS, POINT_FEATURES

GRID_SIZE = (1024, 2048)
GRID_EXTENT = (1.0, 2.0)
SIGMA_SCALE = 10.0
SEED_THRESHOLD = 0.94
MIN_PIXELS = 160
N_SIGMA = 2
BOX_EXPAND = 0.2
OFFSET_SCALE = 128.0
KITTI_SIZE = (375.0, 1242.0)
#: category code of a background point, indexed by its label: 0 free background, 1 the instance
#: itself (never a background point), 2 another instance, 3 unused (official ``config.py``)
CATEGORY_CODES = np.array([[0.9479751586914062, 0.4561353325843811, 0.16707628965377808],
                           [0.1, -0.1, 0.1],
                           [0.5455077290534973, -0.6193588972091675, -2.629554510116577],
                           [-0.1, 0.1, -0.1]], np.float32)
FORBIDDEN_COST = 1e9


class Detection(NamedTuple):
    """One clustered instance: its (H, W) bool mask and its seed score in (0, 1)."""

    mask: np.ndarray
    score: float


def embedding_grid(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The pixel coordinates offsets are added to: ``(2, H, W)``, x = 2 * col / 2047, y = row / 1023.

    Up to 1024 x 2048 this is the official ``linspace`` grid cropped; beyond, it goes on
    with the same step.
    """
    axes = []
    for n, full, extent in ((w, GRID_SIZE[1], GRID_EXTENT[1]), (h, GRID_SIZE[0], GRID_EXTENT[0])):
        if n <= full:
            axes.append(torch.linspace(0.0, extent, full, device=device)[:n])
        else:
            axes.append(torch.arange(n, device=device, dtype=torch.float32) * (extent / (full - 1)))
    xs, ys = axes
    return torch.stack((xs.expand(h, w), ys[:, None].expand(h, w)))


def cluster(output: torch.Tensor, threshold: float = SEED_THRESHOLD, min_pixels: int = MIN_PIXELS,
            n_sigma: int = N_SIGMA) -> list[Detection]:
    """Instances of one frame from the segmenter's ``(5, H, W)`` (or ``(1, 5, H, W)``) raw output.

    Pixels with ``sigmoid(seed) > 0.5`` are foreground, embedded at ``tanh(offset) + grid``.
    While more than `min_pixels` foreground pixels are unclustered, the best unclustered seed
    (stop below `threshold`) claims every foreground pixel e with
    ``exp(-sum(exp(10 * sigma_seed) * (e - e_seed) ** 2)) > 0.5``; the claim becomes an
    instance when it has more than `min_pixels` pixels and more than half of them were
    unclustered (the seed itself counts as clustered). Later instances overwrite earlier ones
    where they overlap, as in the official label map; instances left empty are dropped.

    Returns:
        detections in seed order, masks disjoint.
    """
    if output.ndim == 4 and output.shape[0] == 1:
        output = output[0]
    if output.ndim != 3 or output.shape[0] < 3 + n_sigma:
        raise AmodalkitError(f"cluster takes one (5, H, W) segmenter output, got {tuple(output.shape)}")
    out = output.detach().float()
    h, w = out.shape[1:]
    seed = torch.sigmoid(out[2 + n_sigma])
    fg = seed > 0.5
    n_fg = int(fg.sum())
    if n_fg <= min_pixels:
        return []
    emb = (torch.tanh(out[0:2]) + embedding_grid(h, w, out.device))[:, fg]
    sharp = torch.exp(out[2:2 + n_sigma][:, fg] * SIGMA_SCALE)
    seed_fg = seed[fg]
    unclustered = torch.ones(n_fg, dtype=torch.bool, device=out.device)
    labels = torch.zeros(n_fg, dtype=torch.int32, device=out.device)
    scores: list[float] = []
    left = n_fg
    while left > min_pixels:
        masked = seed_fg * unclustered
        idx = int(masked.argmax())
        score = float(masked[idx])
        if score < threshold:
            break
        unclustered[idx] = False
        dist = torch.exp(-(sharp[:, idx:idx + 1] * (emb - emb[:, idx:idx + 1]) ** 2).sum(0))
        proposal = dist > 0.5
        size = int(proposal.sum())
        if size > min_pixels and 2 * int(unclustered[proposal].sum()) > size:
            scores.append(score)
            labels[proposal] = len(scores)
        unclustered &= ~proposal
        left = int(unclustered.sum())
    label_map = torch.zeros(h, w, dtype=torch.int32, device=out.device)
    label_map[fg] = labels
    label_map = label_map.cpu().numpy()
    masks = (label_map == k for k in range(1, len(scores) + 1))
    return [Detection(m, s) for m, s in zip(masks, scores) if m.any()]


class Sampler(Protocol):
    """What point sampling needs of a random source (``np.random.RandomState`` or ``Generator``)."""

    def choice(self, a: int, size: int) -> np.ndarray:
        """`size` indices drawn from ``range(a)`` with replacement."""
        ...


def _expanded_span(lo: int, hi: int, end: int) -> tuple[int, int]:
    """The end-exclusive span [lo, hi) grown by 0.2 of its length each side, clipped to [0, end)."""
    grow = int(BOX_EXPAND * (hi - lo))
    return max(0, lo - grow), min(hi + grow, end)


def instance_points(image: np.ndarray, masks: Sequence[np.ndarray],
                    rng: Sampler) -> tuple[np.ndarray, np.ndarray]:
    """Point clouds and boxes of a frame's instances, the tracker's input.

    Args:
        image: ``(H, W, 3)`` uint8 RGB frame.
        masks: the frame's instance masks, ``(H, W)`` bool, non-empty.
        rng: random source; the official run is ``np.random.RandomState(0)``.

    Returns:
        points ``(N, 1500, 8)`` float32 and boxes ``(N, 4)`` float32. Per instance, 1000
        foreground and then 500 background points are drawn with replacement from the mask and
        from the rest of its box enlarged by 0.2 (clipped, as officially, one pixel short of the
        bottom and right edges unless that would lose the whole mask): B, G, R / 255, the row and
        column offsets from the mask's mean pixel / 128, and for background points the category
        code of free background or another instance. Boxes are (umin/1242, vmin/375,
        umax/1242, vmax/375), inclusive pixel bounds.
    """
    h, w = image.shape[:2]
    bgr = np.ascontiguousarray(image[..., ::-1])
    union = np.zeros((h, w), bool)
    for m in masks:
        union |= m
    points = np.zeros((len(masks), FG_POINTS + BG_POINTS, POINT_FEATURES), np.float32)
    boxes = np.zeros((len(masks), 4), np.float32)
    for i, mask in enumerate(masks):
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            raise AmodalkitError(f"instance {i} has an empty mask")
        r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        kh, kw = KITTI_SIZE
        boxes[i] = (c0 / kw, r0 / kh, (c1 - 1) / kw, (r1 - 1) / kh)
        v0, v1 = _expanded_span(r0, r1, h - 1)
        u0, u1 = _expanded_span(c0, c1, w - 1)
        if not mask[v0:v1, u0:u1].any():
            v0, v1 = _expanded_span(r0, r1, h)
            u0, u1 = _expanded_span(c0, c1, w)
        crop = mask[v0:v1, u0:u1]
        colours = bgr[v0:v1, u0:u1] / 255.0
        label = 2 * union[v0:v1, u0:u1].astype(np.int64)
        fr, fc = np.nonzero(crop)
        vc, uc = fr.mean(), fc.mean()
        fg = np.concatenate([colours[crop], ((fr - vc) / OFFSET_SCALE)[:, None],
                             ((fc - uc) / OFFSET_SCALE)[:, None]], axis=1)
        points[i, :FG_POINTS, :5] = fg[rng.choice(len(fg), FG_POINTS)]
        outside = ~crop
        if outside.any():
            br, bc = np.nonzero(outside)
            bg = np.concatenate([colours[outside], ((br - vc) / OFFSET_SCALE)[:, None],
                                 ((bc - uc) / OFFSET_SCALE)[:, None], CATEGORY_CODES[label[outside]]], axis=1)
            points[i, FG_POINTS:] = bg[rng.choice(len(bg), BG_POINTS)]
    return points, boxes


@dataclass(frozen=True)
class AssociationConfig:
    """The official association constants: ``scale * (offset - euclid) + iou_scale * maskIoU > threshold``."""

    euclidean_scale: float = 1.0090931467228708
    euclidean_offset: float = 8.810218833503743
    mask_iou_scale: float = 0.74
    threshold: float = 0.8165986526897969
    keep_alive: int = 30


CAR = AssociationConfig()
PEDESTRIAN = AssociationConfig(1.3437965549876354, 9.447084376750222, 0.54, 0.47985540892434836, 30)


@dataclass
class _Track:
    track_id: int
    last_frame: int
    embedding: np.ndarray
    mask: np.ndarray


def mask_iou(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """IoU of every pair of (H, W) bool masks: ``(len(a), len(b))`` float64 (0 where both are empty)."""
    fa = np.stack([m.reshape(-1) for m in a]).astype(np.float32)
    fb = np.stack([m.reshape(-1) for m in b]).astype(np.float32)
    inter = (fa @ fb.T).astype(np.float64)
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1.0), 0.0)


class PointTrackTracker:
    """Online association of instance embeddings into tracks, ids 1, 2, ... in order of birth.

    Each track keeps the embedding and mask it was last seen with, and stays a candidate
    while ``last_frame >= t - keep_alive``. Detections of frame t are matched to candidates by
    the Hungarian assignment on the similarity of :class:`AssociationConfig` (pairs at or
    below the threshold are never matched); an unmatched detection starts a new track.
    """

    def __init__(self, config: AssociationConfig = CAR) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new video)."""
        self._tracks: list[_Track] = []
        self._next_id = 1

    def similarity(self, embeddings: np.ndarray, masks: Sequence[np.ndarray],
                   tracks: Sequence[_Track]) -> np.ndarray:
        """``(N, M)`` association score of N detections against M tracks."""
        cfg = self.config
        last = np.stack([t.embedding for t in tracks]).astype(np.float64)
        dist = cdist(np.asarray(embeddings, np.float64), last)
        return (cfg.euclidean_scale * (cfg.euclidean_offset - dist)
                + cfg.mask_iou_scale * mask_iou(masks, [t.mask for t in tracks]))

    def step(self, t: int, embeddings: np.ndarray, masks: Sequence[np.ndarray]) -> list[int]:
        """Associate frame t's detections (``(N, D)`` embeddings, N masks); return their track ids."""
        embeddings = np.asarray(embeddings)
        if len(embeddings) != len(masks):
            raise AmodalkitError(f"{len(embeddings)} embeddings for {len(masks)} masks")
        cfg = self.config
        live = [tr for tr in self._tracks if tr.last_frame >= t - cfg.keep_alive]
        self._tracks = live
        ids = [0] * len(masks)
        if live and len(masks):
            sim = self.similarity(embeddings, masks, live)
            cost = np.where(sim > cfg.threshold, sim.max() - sim, FORBIDDEN_COST)
            for r, c in zip(*linear_sum_assignment(cost)):
                if sim[r, c] > cfg.threshold:
                    live[c].last_frame, live[c].embedding, live[c].mask = t, embeddings[r], masks[r]
                    ids[r] = live[c].track_id
        for r, mask in enumerate(masks):
            if not ids[r]:
                ids[r] = self._next_id
                self._tracks.append(_Track(self._next_id, t, embeddings[r], mask))
                self._next_id += 1
        return ids
