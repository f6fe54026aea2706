"""Size limits for declared image and mask sizes, and an image reader that checks them first.

Every reader of a frame, mask or flow image asks the file's header for its size before
decoding, and every size written in a file (an RLE's ``[height, width]``, a shard's frame
shape) is checked against the same limits, so a small file can never make amodalkit
allocate gigabytes.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from amodalkit.errors import AmodalkitError

MAX_SIDE = 16384
MAX_PIXELS = 1 << 26


def natural_key(path: str | Path) -> list:
    """Sort key for frame names in natural order: ``frame2`` before ``frame10``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def check_size(height: int, width: int, what: str, path: str | Path | None = None) -> None:
    """Refuse a declared height x width that is not positive or over the limits."""
    if height < 1 or width < 1:
        raise AmodalkitError(f"{what} has size {height}x{width}; both sides must be positive", path)
    if height > MAX_SIDE or width > MAX_SIDE or height * width > MAX_PIXELS:
        raise AmodalkitError(f"{what} declares {height}x{width} pixels, over the limit of "
                             f"{MAX_SIDE} per side and {MAX_PIXELS} in all", path)


def header_size(path: str | Path) -> tuple[int, int] | None:
    """(height, width) from an image file's header without decoding it; None when PIL cannot tell."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
    except Image.DecompressionBombError as exc:
        raise AmodalkitError(f"image is over the limit of {MAX_SIDE} pixels per side and {MAX_PIXELS} in "
                             f"all ({exc})", path) from exc
    except (OSError, ValueError, SyntaxError, EOFError):
        return None
    return int(height), int(width)


def imread(path: str | Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """``cv2.imread`` after checking the header size against the limits; None when unreadable."""
    size = header_size(path)
    if size is not None:
        check_size(*size, "image", path)
    return cv2.imread(str(path), flags)


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 RGB (size checked first); unreadable is an error naming it."""
    img = imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise AmodalkitError("not a readable image", path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_rgb_frames(paths: Sequence[str | Path], quiet: bool = True) -> np.ndarray:
    """Frame images of one size as (T, H, W, 3) uint8 RGB; a frame of another size is an error."""
    frames: list[np.ndarray] = []
    for p in tqdm(paths, desc="frames", unit="frame", disable=quiet):
        img = read_rgb(p)
        if frames and img.shape != frames[0].shape:
            raise AmodalkitError(f"frame size {img.shape[1]}x{img.shape[0]} differs from the first frame's "
                                 f"{frames[0].shape[1]}x{frames[0].shape[0]}", p)
        frames.append(img)
    return np.stack(frames)
