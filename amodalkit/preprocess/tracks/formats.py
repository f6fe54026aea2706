"""Readers of visible masks and tracks: KITTI-MOTS text, PointTrack text and instance PNGs.

On-disk formats (checked against mots_tools ``mots_common/io.py`` and
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

from collections.abc import Collection, Iterable
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from amodalkit.errors import AmodalkitError
from amodalkit.io.images import check_size, header_size, imread, natural_key
from amodalkit.ops.masks import decode_compressed_rle

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
