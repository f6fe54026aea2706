"""How well tracks link: identity switches and fragments against ground-truth ids."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amodalkit.preprocess.tracks.formats import FrameInstances


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
