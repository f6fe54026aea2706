"""Mask utilities: polygon rasterization, convex hulls, boxes, RLE, and visibility over time."""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from amodalkit.errors import AmodalkitError
from amodalkit.io.images import check_size


def rasterize_polygon(vertices: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Fill a polygon given as (N, 2) integer (x, y) vertices: (H, W) bool, edges included."""
    canvas = np.zeros(shape, np.uint8)
    pts = np.asarray(vertices, np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(canvas, [pts], 1)
    return canvas.astype(bool)


def circle_polygon(rng: np.random.Generator, n_nodes: int, radius: float) -> np.ndarray:
    """`n_nodes` points at sorted random angles on a circle around (0, 0): (N, 2) float (x, y).

    Sorting the angles makes the polygon simple and star-shaped around its centre.
    """
    angles = np.sort(rng.uniform(0.0, 2 * np.pi, n_nodes))
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def convex_hull_mask(mask: np.ndarray) -> np.ndarray:
    """Convex hull of the pixel centres of a (H, W) bool mask, filled: (H, W) bool."""
    pts = cv2.findNonZero(mask.astype(np.uint8))
    out = np.zeros(mask.shape, np.uint8)
    if pts is None:
        return out.astype(bool)
    hull = cv2.convexHull(pts)
    cv2.fillConvexPoly(out, hull, 1)
    return out.astype(bool) | mask.astype(bool)


def bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box of a (H, W) mask as (y0, x0, y1, x1), end-exclusive; None when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def rle_encode(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a (H, W) mask, with ``counts`` as str (JSON-ready)."""
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def rle_counts(counts: str | bytes) -> list[int] | None:
    """Parse a COCO compressed RLE string exactly as pycocotools' rleFrString; None if malformed."""
    if isinstance(counts, bytes):
        try:
            counts = counts.decode("ascii")
        except UnicodeDecodeError:
            return None
    out: list[int] = []
    p, n = 0, len(counts)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p >= n:
                return None
            c = ord(counts[p]) - 48
            if not 0 <= c < 64:
                return None
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(out) > 2:
            x += out[-2]
        if x < 0:
            return None
        out.append(x)
    return out


def decode_compressed_rle(counts: str, h: int, w: int) -> np.ndarray | None:
    """Decode a COCO compressed RLE string of an (h, w) mask: (h, w) bool, None when malformed.

    pycocotools decodes some malformed strings (e.g. an empty one) into garbage without an
    error, so the runs are parsed and checked to cover exactly h*w pixels first.
    """
    runs = rle_counts(counts)
    if runs is None or sum(runs) != h * w:
        return None
    return coco_mask.decode({"size": [h, w], "counts": counts.encode("ascii")}).astype(bool)


def rle_decode(rle: dict, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a COCO RLE (compressed str/bytes or uncompressed list counts): (H, W) bool.

    The declared ``size`` must equal `size` when given and stay within the image limits,
    and the runs must cover exactly H*W pixels; anything else raises AmodalkitError before
    a mask is allocated.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise AmodalkitError("a COCO RLE must be a dict with 'size' and 'counts'")
    declared = rle["size"]
    if not (isinstance(declared, (list, tuple)) and len(declared) == 2
            and all(isinstance(s, int) and not isinstance(s, bool) for s in declared)):
        raise AmodalkitError(f"RLE size must be [height, width], got {declared!r:.60}")
    h, w = int(declared[0]), int(declared[1])
    if size is not None and (h, w) != tuple(size):
        raise AmodalkitError(f"RLE size {h}x{w} does not match the image size {size[0]}x{size[1]}")
    check_size(h, w, "RLE mask")
    counts = rle["counts"]
    if isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise AmodalkitError("RLE counts must be non-negative integers")
        if sum(counts) != h * w:
            raise AmodalkitError(f"RLE runs cover {sum(counts)} pixels, a {h}x{w} mask has {h * w}")
        return coco_mask.decode(coco_mask.frPyObjects({"size": [h, w], "counts": counts}, h, w)).astype(bool)
    if isinstance(counts, (str, bytes)):
        text = counts.decode("ascii", "replace") if isinstance(counts, bytes) else counts
        mask = decode_compressed_rle(text, h, w) if text.isascii() else None
        if mask is None:
            raise AmodalkitError(f"invalid COCO compressed RLE for a {h}x{w} mask (runs do not cover "
                                 f"{h * w} pixels)")
        return mask
    raise AmodalkitError(f"RLE counts must be a string or a list, got {type(counts).__name__}")


def never_visible_pixels(amodal: np.ndarray, visible: np.ndarray) -> tuple[int, int]:
    """Amodal pixels of one object never visible in any frame: (never, total) pixel counts.

    amodal, visible: (T, H, W) bool over the annotated frames. Frames whose amodal masks are
    translated copies of each other (a rigidly moving object) share object coordinates, so
    a pixel counts as seen when it is visible in any of them; a frame whose shape matches no
    other is judged alone (then this equals its occluded area).
    """
    groups: list[tuple[np.ndarray, np.ndarray]] = []
    for a, v in zip(amodal, visible):
        box = bbox(a)
        if box is None:
            continue
        y0, x0, y1, x1 = box
        a_crop, v_crop = a[y0:y1, x0:x1], v[y0:y1, x0:x1] & a[y0:y1, x0:x1]
        for i, (ga, gv) in enumerate(groups):
            if ga.shape == a_crop.shape and np.array_equal(ga, a_crop):
                groups[i] = (ga, gv | v_crop)
                break
        else:
            groups.append((a_crop, v_crop.copy()))
    never = sum(int((ga & ~gv).sum()) for ga, gv in groups)
    total = sum(int(ga.sum()) for ga, _ in groups)
    return never, total


def occlusion_rates(amodal: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Per object-frame fraction of the amodal mask not visible: (...,) float, NaN if empty."""
    area = amodal.sum(axis=(-2, -1)).astype(np.float64)
    seen = (amodal & visible).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(area > 0, 1.0 - seen / np.maximum(area, 1), np.nan)
