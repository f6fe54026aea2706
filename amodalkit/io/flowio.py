"""Optical flow files and warping: Middlebury ``.flo``, KITTI 16-bit flow PNG, backward warp.

Flow convention (the shard schema's): ``flow[y, x] = (u, v)`` in pixels, ``u`` along x
(columns) and ``v`` along y (rows); forward flow from frame t to t+1 means
``I[t+1][y + v, x + u] ~ I[t][y, x]``.

Formats, byte for byte:

* Middlebury ``.flo``: little-endian float32 magic 202021.25 (the bytes ``PIEH``), int32
  width, int32 height, then ``height * width * 2`` float32 values, row-major, ``u`` and
  ``v`` interleaved. Nothing follows the data.
* KITTI flow PNG: 16-bit 3-channel PNG, R = u, G = v, B = valid (1 or 0); a stored value
  ``s`` means ``(s - 2**15) / 64`` pixels. Writing computes ``s = flow * 64 + 2**15`` in
  float32, clipped to [0, 65535] and truncated to an integer, as the KITTI devkit does;
  invalid pixels are written as (0, 0, 0) and read back as zero flow.

Invalid pixels read the same in both formats: :func:`read_flow` returns zero flow there and
``valid`` False (a ``.flo`` pixel is invalid when a component is NaN, infinite or at least
1e9 in magnitude, Middlebury's "unknown flow" mark), so no reader hands out NaN or 1e9
values. :func:`write_flo` refuses non-finite flow; mark unknown pixels with a KITTI PNG's
valid mask instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import atomic_path
from amodalkit.io.images import check_size, imread

if TYPE_CHECKING:
    pass


FLO_MAGIC = 202021.25


FLO_MAGIC_BYTES = np.array([FLO_MAGIC], "<f4").tobytes()


FLO_HEADER = 12


FLO_MAX_SIDE = 100_000


FLO_UNKNOWN = 1e9


KITTI_SCALE = 64.0


KITTI_OFFSET = 2.0**15


def _check_flow(flow: np.ndarray, path: str | Path) -> np.ndarray:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.shape[0] < 1 or flow.shape[1] < 1:
        raise AmodalkitError(f"flow must be an (H, W, 2) array, got shape {flow.shape}", path)
    return flow


def read_flo(path: str | Path) -> np.ndarray:
    """Read a Middlebury ``.flo`` file as stored: (H, W, 2) float32 (u, v), unknown marks included."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise AmodalkitError("flow file does not exist", path) from exc
    except OSError as exc:
        raise AmodalkitError(f"cannot read the flow file ({exc.strerror or exc})", path) from exc
    if len(data) < FLO_HEADER:
        raise AmodalkitError(f"truncated .flo file ({len(data)} bytes, the header alone is 12)", path)
    if data[:4] != FLO_MAGIC_BYTES:
        magic = float(np.frombuffer(data[:4], "<f4")[0])
        raise AmodalkitError(f"not a .flo file: magic number {magic!r}, expected {FLO_MAGIC}", path)
    width, height = (int(x) for x in np.frombuffer(data[4:12], "<i4"))
    if not (0 < width < FLO_MAX_SIDE and 0 < height < FLO_MAX_SIDE):
        raise AmodalkitError(f"corrupt .flo header: width {width}, height {height}", path)
    check_size(height, width, ".flo flow", path)
    expected = FLO_HEADER + width * height * 8
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "corrupt"
        raise AmodalkitError(f"{what} .flo file: {len(data)} bytes, a {width}x{height} flow needs "
                             f"{expected}", path)
    return np.frombuffer(data, "<f4", offset=FLO_HEADER).reshape(height, width, 2).astype(np.float32)


def write_flo(path: str | Path, flow: np.ndarray) -> Path:
    """Write (H, W, 2) flow as a Middlebury ``.flo`` file (atomically); return the path."""
    path = Path(path)
    flow = _check_flow(flow, path)
    if not np.isfinite(flow).all():
        raise AmodalkitError("flow holds NaN or infinite values; a .flo file cannot mark them "
                             "(write a KITTI .png with a valid mask)", path)
    h, w = flow.shape[:2]
    header = FLO_MAGIC_BYTES + np.array([w, h], "<i4").tobytes()
    payload = header + np.ascontiguousarray(flow, "<f4").tobytes()
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)
    return path


def read_kitti_png(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a KITTI flow PNG: flow (H, W, 2) float32 and valid (H, W) bool; invalid flow is 0."""
    path = Path(path)
    if not path.exists():
        raise AmodalkitError("flow file does not exist", path)
    raw = imread(path, cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise AmodalkitError("not a readable PNG image (truncated or corrupt)", path)
    if raw.dtype != np.uint16 or raw.ndim != 3 or raw.shape[2] != 3:
        chans = 1 if raw.ndim == 2 else raw.shape[2]
        raise AmodalkitError(f"not a KITTI flow PNG: {raw.dtype} with {chans} channel(s), expected "
                             f"16-bit with 3 channels", path)
    rgb = raw[..., ::-1]
    valid = rgb[..., 2] > 0
    flow = (rgb[..., :2].astype(np.float32) - np.float32(KITTI_OFFSET)) / np.float32(KITTI_SCALE)
    flow[~valid] = 0.0
    return flow, valid


def encode_kitti(flow: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Flow (H, W, 2) (+ valid (H, W)) to the KITTI PNG's (H, W, 3) uint16 R, G, B values."""
    flow = _check_flow(flow, "<array>").astype(np.float32)
    with np.errstate(invalid="ignore"):
        known = (np.abs(flow) < FLO_UNKNOWN).all(axis=2)
    valid = known if valid is None else np.asarray(valid, bool) & known
    if valid.shape != flow.shape[:2]:
        raise AmodalkitError(f"valid mask has shape {valid.shape}, flow is {flow.shape[:2]}")
    scaled = np.where(known[..., None], flow, 0) * np.float32(KITTI_SCALE) + np.float32(KITTI_OFFSET)
    scaled = np.clip(scaled, np.float32(0.0), np.float32(65535.0))
    out = np.zeros((*flow.shape[:2], 3), np.uint16)
    out[..., :2] = np.floor(scaled).astype(np.uint16)
    out[..., 2] = 1
    out[~valid] = 0
    return out


def write_kitti_png(path: str | Path, flow: np.ndarray, valid: np.ndarray | None = None) -> Path:
    """Write (H, W, 2) flow as a KITTI PNG, valid where finite, below 1e9 and `valid`; return the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise AmodalkitError("a KITTI flow file must end in .png", path)
    try:
        rgb = encode_kitti(flow, valid)
    except AmodalkitError as exc:
        raise AmodalkitError(str(exc), path) from exc
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(rgb[..., ::-1])):
            raise AmodalkitError("OpenCV could not write the PNG", path)
    return path


def read_flow(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``.flo`` or KITTI ``.png`` flow by extension: flow (H, W, 2) float32, valid (H, W) bool.

    Invalid pixels (KITTI valid bit 0; ``.flo`` NaN, infinite or |value| >= 1e9) are 0 in
    both formats, so the flow is always finite.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".flo":
        flow = read_flo(path)
        with np.errstate(invalid="ignore"):
            valid = (np.abs(flow) < FLO_UNKNOWN).all(axis=2)
        flow[~valid] = 0.0
        return flow, valid
    if suffix == ".png":
        return read_kitti_png(path)
    raise AmodalkitError("unknown flow file type (expected .flo or KITTI .png)", path)


def write_flow(path: str | Path, flow: np.ndarray) -> Path:
    """Write (H, W, 2) flow as ``.flo`` or KITTI ``.png``, chosen by the extension."""
    suffix = Path(path).suffix.lower()
    if suffix == ".flo":
        return write_flo(path, flow)
    if suffix == ".png":
        return write_kitti_png(path, flow)
    raise AmodalkitError("unknown flow file type (expected .flo or .png)", path)
