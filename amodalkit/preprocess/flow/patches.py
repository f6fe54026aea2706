"""Rigid flow of the background's untracked patches: pieces of texture that move but belong to no track.

On a still camera the background's own pixels do not move, but a frame can show moving
texture that no visible mask claims (Chewing Gum's ``savos2022`` square, drawn in the bottom
object's box where the object's outline does not cover it). Each connected patch of
background pixels whose colour differs from the background's dominant colour is taken as
one more rigid layer: its integer shift to the next frame is the one under which the fewest
of its pixels land on another colour in the open, plus the fewest of the next frame's open
pixels of its colour nearby come from a pixel that could not have held it (another colour,
not behind an object): so texture sliding out from behind an object moves with the part it
reveals, not with the object it touches. A uniform
patch can fit several shifts equally; then the shift of a tracked object the patch touches
wins (texture next to an object most likely moves with it), then the one landing the most
pixels on the same colour, then the smaller shift. The rest of the background keeps zero flow.
"""

from __future__ import annotations

import cv2
import numpy as np

DEFAULT_RADIUS = 4


def _packed(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 colours as one int32 per pixel."""
    f = frame.astype(np.int32)
    return (f[..., 0] << 16) | (f[..., 1] << 8) | f[..., 2]


def dominant_colour(colours: np.ndarray, where: np.ndarray) -> int | None:
    """The most frequent packed colour of `colours` over `where`, or None when `where` is empty."""
    values = colours[where]
    if values.size == 0:
        return None
    unique, counts = np.unique(values, return_counts=True)
    return int(unique[np.argmax(counts)])


def _unexplained(sy: np.ndarray, sx: np.ndarray, colours: np.ndarray, ids: np.ndarray, colour: int) -> int:
    """How many target pixels of the patch's colour have a source (sy, sx) that could not have held it.

    A source explains the colour when it has that colour, lies behind an object (the texture
    may have been covered there) or falls outside the frame.
    """
    h, w = ids.shape
    inside = (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)
    sy, sx = sy[inside], sx[inside]
    return int(np.count_nonzero((colours[sy, sx] != colour) & (ids[sy, sx] == 0)))


def patch_flow(frame: np.ndarray, ids: np.ndarray, target: np.ndarray, target_ids: np.ndarray,
               object_shifts: np.ndarray, radius: int = DEFAULT_RADIUS) -> np.ndarray:
    """(H, W, 2) flow from `frame` to `target` on the untracked patches of `frame` (zero elsewhere).

    `ids` and `target_ids` are the two frames' visible id maps (0 background);
    `object_shifts` ``(K, 2)`` the objects' fitted shifts between them.
    """
    h, w = ids.shape
    flow = np.zeros((h, w, 2), np.float32)
    colours, target_colours = _packed(frame), _packed(target)
    background = ids == 0
    plain = dominant_colour(colours, background)
    if plain is None:
        return flow
    patches = background & (colours != plain)
    if not patches.any():
        return flow
    count, labels = cv2.connectedComponents(patches.astype(np.uint8), connectivity=4)
    covered = target_ids > 0
    offsets = [(dx, dy) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)]
    offsets.sort(key=lambda d: d[0] * d[0] + d[1] * d[1])  # ties go to the smaller shift
    ring = np.ones((3, 3), np.uint8)
    for label in range(1, count):
        patch = labels == label
        ys, xs = np.nonzero(patch)
        colour = colours[ys[0], xs[0]]
        y0, y1 = max(ys.min() - radius, 0), min(ys.max() + radius + 1, h)
        x0, x1 = max(xs.min() - radius, 0), min(xs.max() + radius + 1, w)
        qy, qx = np.nonzero((target_colours[y0:y1, x0:x1] == colour) & ~covered[y0:y1, x0:x1])
        qy, qx = qy + y0, qx + x0
        touching = np.unique(ids[cv2.dilate(patch.astype(np.uint8), ring) > 0])
        neighbours = {tuple(int(v) for v in object_shifts[k - 1]) for k in touching
                      if 0 < k <= len(object_shifts)}
        best, best_shift = None, (0, 0)
        for dx, dy in offsets:
            ty, tx = ys + dy, xs + dx
            inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
            ty, tx = ty[inside], tx[inside]
            same = np.count_nonzero(target_colours[ty, tx] == colour)
            bad = (np.count_nonzero((target_colours[ty, tx] != colour) & ~covered[ty, tx])
                   + np.count_nonzero(~inside) + _unexplained(qy - dy, qx - dx, colours, ids, colour))
            score = (bad, (dx, dy) not in neighbours, -same)
            if best is None or score < best:
                best, best_shift = score, (dx, dy)
        flow[ys, xs] = best_shift
    return flow


def video_patch_flows(frames: np.ndarray, ids: np.ndarray, shifts: np.ndarray,
                      radius: int = DEFAULT_RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward ``(T-1, H, W, 2)`` flow of every frame pair's untracked patches.

    `shifts` ``(K, T-1, 2)`` are the objects' fitted shifts from frame t to t+1.
    """
    pairs = range(ids.shape[0] - 1)
    forward = [patch_flow(frames[i], ids[i], frames[i + 1], ids[i + 1], shifts[:, i], radius) for i in pairs]
    backward = [patch_flow(frames[i + 1], ids[i + 1], frames[i], ids[i], -shifts[:, i], radius)
                for i in pairs]
    return np.stack(forward), np.stack(backward)
