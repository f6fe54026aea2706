"""The chunk encoder: what it stores decodes through HDF5's own filters to the same array."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from amodalkit.io.chunk_codec import (
    CHUNK_BYTES,
    ESTIMATED_FLOW,
    EXACT_FLOW,
    FRAMES_PER_CHUNK,
    PER_FRAME,
    Deflate,
    chunk_blocks,
    encode_chunk,
    frames_per_chunk,
    shuffled,
)

DTYPES = st.sampled_from([np.uint8, np.bool_, np.uint16, np.float16, np.int32, np.int64])
KINDS = (PER_FRAME, EXACT_FLOW, ESTIMATED_FLOW)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dtype=DTYPES)
def test_shuffled_is_byte_planes(data: st.DataObject, dtype: type) -> None:
    arr = data.draw(arrays(dtype, st.tuples(st.integers(0, 7), st.integers(1, 5))))
    planes = arr.reshape(-1).view(np.uint8).reshape(-1, arr.dtype.itemsize).T.reshape(-1)
    np.testing.assert_array_equal(shuffled(arr), planes)


@settings(max_examples=40, deadline=None)
@given(data=st.data(), dtype=DTYPES, per=st.integers(1, 5), how=st.sampled_from(KINDS))
def test_direct_chunks_decode_through_hdf5_filters(tmp_path_factory: object, data: st.DataObject,
                                                   dtype: type, per: int, how: Deflate) -> None:
    arr = data.draw(arrays(dtype, st.tuples(st.integers(1, 9), st.integers(1, 4), st.integers(1, 3))))
    path = Path(tmp_path_factory.mktemp("codec")) / "a.h5"  # type: ignore[attr-defined]
    per = min(per, arr.shape[0])
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("x", shape=arr.shape, dtype=arr.dtype, chunks=(per, *arr.shape[1:]),
                              compression="gzip", shuffle=True)
        for offset, block in chunk_blocks(arr, 0, per):
            assert block.shape == (per, *arr.shape[1:])
            ds.id.write_direct_chunk(offset, encode_chunk(block, how))
    with h5py.File(path) as f:
        got = f["x"][()]
    np.testing.assert_array_equal(got.view(np.uint8), arr.view(np.uint8))  # bit for bit (NaN payloads too)


def _encoded_digest(seed: int) -> str:
    """sha256 of every kind's chunks of fixed pseudo-random flow-like and mask-like blocks."""
    import hashlib

    rng = np.random.default_rng(seed)
    blocks = [np.round(rng.normal(0, 3, (8, 50, 56, 2)) * 32).astype(np.float16) / 32,
              rng.integers(0, 3, (4, 50, 56), dtype=np.uint16), rng.random((4, 50, 56)) < 0.2]
    digest = hashlib.sha256()
    for how in KINDS:
        for block in blocks:
            digest.update(encode_chunk(block, how))
    return digest.hexdigest()


def test_every_deflater_gives_the_same_bytes_in_other_processes() -> None:
    """Byte-identical shards need the same chunk bytes in every worker (ISA-L failed this)."""
    import multiprocessing

    here = _encoded_digest(0)
    for method in ("spawn", "fork"):
        with multiprocessing.get_context(method).Pool(2) as pool:
            assert set(pool.map(_encoded_digest, [0] * 4)) == {here}, method


def test_frames_per_chunk_rule() -> None:
    assert frames_per_chunk(50 * 56 * 3, 40, windowed=False) == FRAMES_PER_CHUNK
    assert frames_per_chunk(50 * 56 * 4, 39, windowed=True) == 39  # Chewing Gum flow: one chunk
    assert frames_per_chunk(50 * 56 * 3, 2, windowed=False) == 2
    kitti_frame = 375 * 1242 * 3
    assert frames_per_chunk(kitti_frame, 11, windowed=False) == 1
    assert frames_per_chunk(kitti_frame, 11, windowed=True) == 1
    assert frames_per_chunk(CHUNK_BYTES // 3, 100, windowed=True) == 3


def test_generated_shards_decode_to_the_generator_arrays_with_plain_h5py(tmp_path: Path) -> None:
    """300 savos2022 videos through write_shard, read back by h5py's own filters: the same arrays."""
    from amodalkit.datasets import chewing_gum as cg
    from amodalkit.io.shard_write import write_shard

    cfg = cg.make_config("savos2022")
    videos = [cg.generate_video(cfg, cg.video_seed(5, "train", i), f"{i:05d}") for i in range(300)]
    path = write_shard(tmp_path / "a.h5", videos)
    with h5py.File(path) as f:
        for v in videos:
            g = f["videos"][v.name]
            for name in ("frames", "visible_ids", "amodal", "amodal_annotated", "presence", "track_ids",
                         "flow", "flow_backward"):
                np.testing.assert_array_equal(g[name][()], getattr(v, name), err_msg=f"{v.name} {name}")
                assert g[name].dtype == getattr(v, name).dtype
            assert [s.decode() for s in g["source_frame_ids"][()]] == [str(s) for s in v.source_frame_ids]
