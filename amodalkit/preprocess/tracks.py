"""Visible masks and tracks: KITTI-MOTS / PointTrack / instance-PNG readers, a built-in tracker,
and the step that turns frames plus tracks into a shard ``Video``.

On-disk formats (SPEC section 10; checked against mots_tools ``mots_common/io.py`` and
PointTrack's ``utils/mots_util.py``)::

    KITTI-MOTS text   instances_txt/0002.txt, one line per object and frame:
                      ``frame id class_id height width rle`` separated by single spaces, the RLE
                      a COCO compressed string ({"size": [height, width], "counts": rle});
                      id = class_id * 1000 + instance, 10000 an ignore region;
                      classes 1 car, 2 pedestrian, 10 ignore.
    PointTrack        tracking_results/0002.txt: the same six columns, but id is a per-video
                      counter starting at 1 (cars and pedestrians run separate counters); the
                      class is only in column 3, so a track is the pair (class_id, id).
    instance PNGs     instances/0002/000000.png, 000001.png, ...: single-channel 16-bit PNG
                      per frame, pixel = class_id * 1000 + instance, 0 background.

Every reader returns the same plain structure: a list indexed by frame number, each entry a
list of ``Instance(track_id, class_id, mask)`` with ``mask`` (H, W) bool. Frames after the
last annotated one are simply absent (``tracks_to_video`` pads them).

Overlap rule: shards need disjoint visible masks. KITTI-MOTS ground truth never overlaps (its
own tools reject overlaps); for predictions, a pixel claimed by several instances of a frame
belongs to the one listed *first* in that frame (file order for text files, list order
otherwise), i.e. put the higher-scoring or nearer instance first.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from amodalkit.errors import AmodalkitError
from amodalkit.io.images import check_size, header_size, imread, natural_key
from amodalkit.io.shards import Video, write_shard
from amodalkit.ops.masks import bbox, decode_compressed_rle

ID_DIVISOR = 1000
IGNORE_CLASS = 10
CLASS_IDS = {"car": 1, "pedestrian": 2, "ignore": IGNORE_CLASS}
FORMATS = ("auto", "mots", "pointtrack", "png")
MOTS_FIELDS = "frame id class_id height width rle"
MAX_FRAME_NUMBER = 1_000_000
MAX_ID = 2**62


class Instance(NamedTuple):
    """One object in one frame: track id, class id and visible mask (H, W) bool."""

    track_id: int
    class_id: int
    mask: np.ndarray


FrameInstances = list[list[Instance]]


def parse_classes(classes: Iterable[str | int] | None) -> frozenset[int] | None:
    """Class names (car, pedestrian, ignore) or integer ids -> a set of class ids (None = all)."""
    if classes is None:
        return None
    out = set()
    for c in classes:
        text = str(c).strip().lower()
        if text in CLASS_IDS:
            out.add(CLASS_IDS[text])
        elif text.isdigit():
            out.add(int(text))
        else:
            raise AmodalkitError(f"unknown class {c!r}; use car, pedestrian, ignore or an integer class id")
    return frozenset(out) if out else None


def _keep_class(class_id: int, classes: frozenset[int] | None) -> bool:
    """Ignore regions are kept only when asked for by name; every class is kept when classes is None."""
    if classes is None:
        return class_id != IGNORE_CLASS
    return class_id in classes


def _read_txt(path: str | Path, coding: str, classes: Iterable[str | int] | None,
              frames: Collection[int] | None, size: tuple[int, int] | None = None) -> FrameInstances:
    """Shared parser of the KITTI-MOTS and PointTrack text formats (coding 'mots' or 'pointtrack').

    Each line's declared mask size is checked against `size` (the frames', when known) and
    the image limits before its RLE is decoded.
    """
    path = Path(path)
    wanted = parse_classes(classes)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError as exc:
        raise AmodalkitError("tracks file does not exist", path) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise AmodalkitError(f"cannot read tracks file ({exc})", path) from exc
    out: FrameInstances = []
    seen: set[tuple[int, int, int]] = set()
    expected = size
    size = None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        fields = line.split()
        if len(fields) != 6:
            raise AmodalkitError(f"expected 6 fields '{MOTS_FIELDS}', got {len(fields)}", where)
        try:
            frame, obj_id, class_id, h, w = (int(f) for f in fields[:5])
        except ValueError as exc:
            raise AmodalkitError(f"the first five fields '{MOTS_FIELDS[:-4]}' must be integers",
                                 where) from exc
        if frame < 0 or obj_id < 0 or class_id < 0 or h <= 0 or w <= 0:
            raise AmodalkitError("frame, id and class must be >= 0 and height, width > 0", where)
        if frame > MAX_FRAME_NUMBER or max(obj_id, class_id) > MAX_ID:
            raise AmodalkitError(f"frame number {frame} or id {obj_id} / class {class_id} is over the limit "
                                 f"({MAX_FRAME_NUMBER} frames, ids up to {MAX_ID})", where)
        if expected is not None and (h, w) != tuple(expected):
            raise AmodalkitError(f"mask size {h}x{w} does not match the frames' {expected[0]}x{expected[1]}",
                                 where)
        check_size(h, w, "mask", where)
        if size is None:
            size = (h, w)
        elif size != (h, w):
            raise AmodalkitError(f"mask size {h}x{w} differs from the earlier lines' {size[0]}x{size[1]}",
                                 where)
        if coding == "mots" and obj_id // ID_DIVISOR != class_id:
            raise AmodalkitError(
                f"id {obj_id} does not encode class {class_id} (KITTI-MOTS ids are class*1000+instance; "
                "for PointTrack results use --format pointtrack)", where)
        key = (frame, class_id if coding == "pointtrack" else 0, obj_id)
        if key in seen:
            raise AmodalkitError(f"object id {obj_id} appears twice in frame {frame}", where)
        seen.add(key)
        if not _keep_class(class_id, wanted) or (frames is not None and frame not in frames):
            continue
        mask = decode_compressed_rle(fields[5], h, w)
        if mask is None:
            raise AmodalkitError(f"invalid COCO compressed RLE for a {h}x{w} mask", where)
        while len(out) <= frame:
            out.append([])
        out[frame].append(Instance(obj_id, class_id, mask))
    return out


def read_mots_txt(path: str | Path, classes: Iterable[str | int] | None = None,
                  frames: Collection[int] | None = None,
                  size: tuple[int, int] | None = None) -> FrameInstances:
    """Read a KITTI-MOTS text file (ids class*1000+instance); only `frames` when given, masks of `size`."""
    return _read_txt(path, "mots", classes, frames, size)


def read_pointtrack_txt(path: str | Path, classes: Iterable[str | int] | None = None,
                        frames: Collection[int] | None = None,
                        size: tuple[int, int] | None = None) -> FrameInstances:
    """Read PointTrack's exported results (plain per-video track counters, class in column 3)."""
    return _read_txt(path, "pointtrack", classes, frames, size)


def read_mots_pngs(folder: str | Path, classes: Iterable[str | int] | None = None,
                   frames: Collection[int] | None = None,
                   size: tuple[int, int] | None = None) -> FrameInstances:
    """Read a folder of KITTI-MOTS instance PNGs (``%06d.png``, uint16 class*1000+instance) of `size`."""
    folder = Path(folder)
    wanted = parse_classes(classes)
    if not folder.is_dir():
        raise AmodalkitError("instance PNG folder does not exist", folder)
    files = sorted(folder.glob("*.png"), key=natural_key)
    if not files:
        raise AmodalkitError("folder holds no instance PNGs (expected 000000.png, 000001.png, ...)", folder)
    out: FrameInstances = []
    for f in files:
        if not f.stem.isdigit():
            raise AmodalkitError("instance PNG names must be frame numbers such as 000000.png", f)
        frame = int(f.stem)
        if frame > MAX_FRAME_NUMBER:
            raise AmodalkitError(f"frame number {frame} is over the limit of {MAX_FRAME_NUMBER}", f)
        if frames is not None and frame not in frames:
            continue
        declared = header_size(f)
        if size is not None and declared is not None and declared != tuple(size):
            raise AmodalkitError(f"instance PNG is {declared[0]}x{declared[1]}, the frames are "
                                 f"{size[0]}x{size[1]}", f)
        img = imread(f, cv2.IMREAD_UNCHANGED)
        if img is None:
            raise AmodalkitError("not a readable PNG", f)
        if img.ndim != 2 or img.dtype.kind != "u":
            raise AmodalkitError(f"expected a single-channel 16-bit instance PNG, got {img.dtype} "
                                 f"with shape {img.shape}", f)
        while len(out) <= frame:
            out.append([])
        for obj_id in np.unique(img):
            obj_id = int(obj_id)
            class_id = obj_id // ID_DIVISOR
            if obj_id == 0 or not _keep_class(class_id, wanted):
                continue
            out[frame].append(Instance(obj_id, class_id, img == obj_id))
    return out


def detect_format(path: str | Path) -> str:
    """'png' for a folder; for a text file 'mots' when every id encodes its class, else 'pointtrack'."""
    path = Path(path)
    if path.is_dir():
        return "png"
    if not path.exists():
        raise AmodalkitError("tracks file or folder does not exist", path)
    try:
        with path.open() as fh:
            for line in fh:
                fields = line.split()
                if len(fields) >= 3 and fields[1].isdigit() and fields[2].isdigit():
                    if int(fields[1]) // ID_DIVISOR != int(fields[2]):
                        return "pointtrack"
    except (OSError, UnicodeDecodeError) as exc:
        raise AmodalkitError(f"cannot read tracks file ({exc})", path) from exc
    return "mots"


def read_tracks(path: str | Path, fmt: str = "auto", classes: Iterable[str | int] | None = None,
                frames: Collection[int] | None = None,
                size: tuple[int, int] | None = None) -> tuple[FrameInstances, str]:
    """Read tracks in any supported format (masks of `size` when given); return (instances, format)."""
    if fmt not in FORMATS:
        raise AmodalkitError(f"unknown tracks format {fmt!r}; choose from {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "png":
        return read_mots_pngs(path, classes, frames, size), fmt
    if Path(path).is_dir():
        raise AmodalkitError(f"format {fmt} needs a .txt file, got a folder", path)
    return _read_txt(path, fmt, classes, frames, size), fmt


def warp_mask_forward(mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Move each pixel of a (H, W) bool mask by the forward flow (H, W, 2) (u, v), nearest pixel."""
    out = np.zeros(mask.shape, bool)
    box = bbox(mask)
    if box is None:
        return out
    y0, x0, y1, x1 = box
    ys, xs = np.nonzero(mask[y0:y1, x0:x1])
    d = flow[y0:y1, x0:x1][ys, xs].astype(np.float32)
    nx = np.rint(xs + x0 + d[:, 0]).astype(np.int64)
    ny = np.rint(ys + y0 + d[:, 1]).astype(np.int64)
    keep = (nx >= 0) & (nx < mask.shape[1]) & (ny >= 0) & (ny < mask.shape[0])
    out[ny[keep], nx[keep]] = True
    return out


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
            pred = warp_mask_forward(self.last_mask, flow)
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


@dataclass(frozen=True)
class LinkingScore:
    """Identity switches and correctly linked fraction of predicted tracks against ground truth."""

    identity_switches: int
    correct_fraction: float
    object_frames: int
    num_tracks: int
    num_gt_objects: int


def score_linking(gt_ids: np.ndarray, tracks: FrameInstances, min_iou: float = 0.5) -> LinkingScore:
    """Score predicted tracks against a ground-truth id map gt_ids (T, H, W), 0 = background.

    A predicted track is a distinct (class_id, track_id). Each non-empty predicted
    object-frame is matched to the ground-truth id of highest mask IoU in its frame, if that
    IoU is at least `min_iou`. Each predicted track is mapped to the ground-truth id it
    overlaps most (pixels summed over its frames). An object-frame is correctly linked when
    it matches its track's ground-truth id; the fraction is over all predicted object-frames
    (ground-truth object-frames without any prediction are not counted). An identity switch
    (CLEAR-MOT) is counted each time a ground-truth object is matched by a different
    predicted track than at its previous matched frame.
    """
    overlap: dict[tuple[int, int], dict[int, int]] = {}
    matches: list[tuple[int, tuple[int, int], int, float]] = []  # (frame, track, gt id or 0, iou)
    for t, insts in enumerate(tracks[: len(gt_ids)]):
        gt = gt_ids[t].astype(np.int64)
        gt_area = np.bincount(gt.ravel())
        for inst in insts:
            area = int(np.count_nonzero(inst.mask))
            if not area:
                continue
            key = (inst.class_id, inst.track_id)
            inter = np.bincount(gt[inst.mask], minlength=len(gt_area))
            inter[0] = 0
            per_track = overlap.setdefault(key, {})
            for g in np.flatnonzero(inter):
                per_track[int(g)] = per_track.get(int(g), 0) + int(inter[g])
            iou = inter / (gt_area + area - inter)
            g = int(np.argmax(iou))
            matches.append((t, key, g if iou[g] >= min_iou and g > 0 else 0, float(iou[g])))
    owner = {key: max(sorted(ov), key=ov.__getitem__) for key, ov in overlap.items() if ov}
    correct = sum(1 for _, key, g, _ in matches if g and owner.get(key) == g)
    best: dict[tuple[int, int], tuple[float, tuple[int, int]]] = {}
    for t, key, g, iou in matches:
        if g and ((g, t) not in best or iou > best[(g, t)][0]):
            best[(g, t)] = (iou, key)
    switches = 0
    last: dict[int, tuple[int, int]] = {}
    for (g, _), (_, key) in sorted(best.items()):
        if g in last and last[g] != key:
            switches += 1
        last[g] = key
    n_gt = len(np.setdiff1d(np.unique(gt_ids), [0]))
    return LinkingScore(switches, correct / len(matches) if matches else 1.0, len(matches),
                        len({m[1] for m in matches}), n_gt)


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


def read_frames(paths: Sequence[Path], quiet: bool = True) -> np.ndarray:
    """Read frame images of one size: (T, H, W, 3) uint8 RGB."""
    frames: list[np.ndarray] = []
    for p in tqdm(paths, desc="frames", unit="frame", disable=quiet):
        img = imread(p, cv2.IMREAD_COLOR)
        if img is None:
            raise AmodalkitError("not a readable image", p)
        if frames and img.shape != frames[0].shape:
            raise AmodalkitError(f"frame size {img.shape[1]}x{img.shape[0]} differs from the first frame's "
                                 f"{frames[0].shape[1]}x{frames[0].shape[0]}", p)
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return np.stack(frames)


def frame_numbers_from_names(paths: Sequence[Path]) -> list[int]:
    """Frame numbers from file names like 000123.png; positions 0..T-1 when a name holds no number."""
    found = [re.fullmatch(r"\D*?(\d+)", p.stem) for p in paths]
    numbers = [int(m.group(1)) for m in found if m]
    if len(numbers) == len(paths) and len(set(numbers)) == len(numbers):
        return numbers
    return list(range(len(paths)))


def _compute_flow(frames: np.ndarray, backend_name: str,
                  quiet: bool) -> tuple[np.ndarray, np.ndarray, object]:
    """Forward and backward flow (T-1, H, W, 2) float32 of frames, and the backend that made them."""
    from amodalkit.preprocess.flow.backends import get_flow_backend

    backend = get_flow_backend(backend_name)
    with tqdm(total=2 * max(len(frames) - 1, 0), desc=f"flow {backend_name}", unit="pair",
              disable=quiet) as bar:
        fwd = backend.compute(frames, progress=bar.update)
        bwd = backend.compute_backward(frames, progress=bar.update)
    return fwd, bwd, backend


def _float16(flow: np.ndarray) -> np.ndarray:
    big = float(np.finfo(np.float16).max)
    return np.clip(flow, -big, big).astype(np.float16)


def build_tracks_shard(out: str | Path, frames_pattern: str, mots: str | Path | None = None,
                       masks: str | Path | None = None, fmt: str = "auto",
                       classes: Iterable[str | int] | None = None, tracker: str | None = None,
                       flow: str | None = None, iou_threshold: float = 0.3, max_gap: int = 3,
                       name: str | None = None, quiet: bool = False) -> Video:
    """Read frames and tracks (or masks to link), build one Video and write it as a shard at `out`.

    `mots` holds tracks (tracker 'file' keeps its ids; 'builtin' re-links them), `masks`
    per-frame instances whose ids mean nothing (tracker 'builtin'). Frame files named by
    number (000123.png) pair with the tracks' frame numbers, otherwise by position. With
    `flow` (a backend name such as ``dis``) the forward and backward flow are computed,
    stored in the shard, and the forward flow drives the built-in tracker's warping.
    """
    if (mots is None) == (masks is None):
        raise AmodalkitError("give exactly one of --mots (tracks) or --masks (per-frame masks to link)")
    tracker = tracker or ("builtin" if masks is not None else "file")
    if tracker not in ("file", "builtin"):
        raise AmodalkitError(f"unknown tracker {tracker!r}; choose file or builtin")
    if masks is not None and tracker != "builtin":
        raise AmodalkitError("--masks needs --tracker builtin (use --mots for files that hold tracks)")
    source = Path(mots if mots is not None else masks)
    paths = list_frame_files(frames_pattern)
    numbers = frame_numbers_from_names(paths)
    wanted = parse_classes(classes)
    first = header_size(paths[0])
    if first is not None:
        check_size(*first, "frame", paths[0])
    instances, used_fmt = read_tracks(source, fmt, wanted, frames=set(numbers), size=first)
    frames = read_frames(paths, quiet)
    size = frames.shape[1:3]
    for n, insts in enumerate(instances):
        for inst in insts:
            if inst.mask.shape != size:
                raise AmodalkitError(f"frame {n}: mask size {inst.mask.shape[0]}x{inst.mask.shape[1]} does "
                                     f"not match the frames' {size[0]}x{size[1]}", source)
    video_name = name or paths[0].parent.name or "video"
    if "/" in video_name or video_name in (".", ".."):
        raise AmodalkitError(f"invalid video name {video_name!r}; pass --name")
    provenance: dict = {
        "stage": "tracks",
        "source": str(source),
        "format": used_fmt,
        "frames": frames_pattern,
        "classes": sorted(wanted) if wanted is not None else "all but ignore",
        "tracker": tracker,
    }
    fwd = bwd = backend = None
    if flow is not None:
        fwd, bwd, backend = _compute_flow(frames, flow, quiet)
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
        video = video.evolve(flow=_float16(fwd), flow_backward=_float16(bwd), flow_backend=backend.name)
        root["flow"] = backend.provenance
    write_shard(out, [video], root)
    return video
