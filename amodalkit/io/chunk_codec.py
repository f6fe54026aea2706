"""How shards chunk and compress their per-frame arrays: the chunk shape rule and the chunk encoder.

Chunks are encoded here, not by HDF5's filter pipeline: each chunk is byte-shuffled exactly as
HDF5's shuffle filter does (byte planes one after another, two vectorised numpy passes) and
deflated into a zlib stream, then stored whole with ``write_direct_chunk``. The datasets
declare the standard deflate + shuffle filters, so any HDF5 reader (a plain ``h5py``
included) decodes them. The deflater of each kind of dataset was chosen by measurement
(``docs/decisions.md``, Shards): zlib-ng for the small, regular chunks of the per-frame
fields and of exact flow (shards write 1.7x faster than with Python's zlib 3, 22% larger),
libdeflate for estimated flow (filling a Chewing Gum shard costs 1.28x the raw DIS work against
zlib level 1's 1.43x, for a 12% smaller shard).
Both give the same bytes for the same input in every process; ISA-L, which did not, was dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

import deflate
import numpy as np
from zlib_ng import zlib_ng


class Deflate(NamedTuple):
    """A deflater (a key of ``DEFLATERS``) and its level, the way a kind of dataset is compressed."""

    library: str
    level: int


#: library name -> function(bytes, level) -> zlib stream (the deflate filter's format)
DEFLATERS: dict[str, Callable[[bytes, int], bytes]] = {
    "zlib-ng": zlib_ng.compress,
    "libdeflate": deflate.zlib_compress,
}


#: frames, visible ids, amodal masks, predictions: level 1, the speed that keeps the generator
#: under 1/3 of the official layout's CPU
PER_FRAME = Deflate("zlib-ng", 1)


#: the generator's exact flow (piecewise constant): at level 1 a savos2022 shard takes 61.9 kB/video, not 51.5
EXACT_FLOW = Deflate("zlib-ng", 2)


#: estimated flow, whose low bits are noise even after rounding: libdeflate's level 1 (zlib-ng's level 1
#: fills faster but its shards are 48% larger; benchmarks/bench_flow.py has both)
ESTIMATED_FLOW = Deflate("libdeflate", 1)


#: per-frame fields (frames, visible ids, amodal masks, predictions) hold this many frames per
#: chunk: a random single-frame read (the per-frame baselines' loaders) decodes 4 frames
FRAMES_PER_CHUNK = 4


#: no chunk decodes to more than this (HDF5's default chunk cache), except a single frame that
#: is larger; flow, which is read in windows or whole, takes as many frames as fit
CHUNK_BYTES = 1 << 20


def frames_per_chunk(frame_bytes: int, frames: int, windowed: bool) -> int:
    """Frames in one chunk of a field with `frame_bytes` per frame: ``FRAMES_PER_CHUNK`` or, if
    `windowed` (read in windows, never frame by frame), as many as fit in ``CHUNK_BYTES``."""
    fit = max(1, CHUNK_BYTES // max(frame_bytes, 1))
    return max(1, min(frames, fit if windowed else min(fit, FRAMES_PER_CHUNK)))


def shuffled(block: np.ndarray) -> np.ndarray:
    """The bytes of `block` as HDF5's shuffle filter arranges them: byte 0 of every item, then byte 1, ..."""
    block = np.ascontiguousarray(block)
    size = block.dtype.itemsize
    if size == 1:
        return block.reshape(-1).view(np.uint8)
    if size == 2:
        words = block.reshape(-1).view(np.uint16)
        out = np.empty(2 * words.size, np.uint8)
        np.bitwise_and(words, 0xFF, out=out[:words.size], casting="unsafe")
        np.right_shift(words, 8, out=out[words.size:], casting="unsafe")
        return out
    return np.ascontiguousarray(block.reshape(-1).view(np.uint8).reshape(-1, size).T).reshape(-1)


def encode_chunk(block: np.ndarray, how: Deflate = PER_FRAME) -> bytes:
    """One chunk as the shard stores it: shuffled, then a zlib stream (the deflate filter's format)."""
    return DEFLATERS[how.library](shuffled(block), how.level)


def chunk_blocks(data: np.ndarray, axis: int, per_chunk: int) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """(offset, block) of each chunk of `per_chunk` along `axis`; the last one zero-padded to full size."""
    for start in range(0, data.shape[axis], per_chunk):
        index = [slice(None)] * data.ndim
        index[axis] = slice(start, start + per_chunk)
        block = data[tuple(index)]
        if block.shape[axis] < per_chunk:  # HDF5 stores edge chunks at the full chunk shape
            pad = [(0, 0)] * data.ndim
            pad[axis] = (0, per_chunk - block.shape[axis])
            block = np.pad(block, pad)
        offset = [0] * data.ndim
        offset[axis] = start
        yield tuple(offset), block
