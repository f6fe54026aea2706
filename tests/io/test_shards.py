from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from amodalkit.errors import AmodalkitError
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import replace_flow, update_shard, write_shard
from amodalkit.io.shards import (
    ALL_FIELDS,
    FLOW_QUANTUM,
    SCHEMA_VERSION,
    Video,
    _all_finite,
    expand_shard_paths,
    flow_for_storage,
    quantized_flow,
)


def make_video(name: str = "v0", t: int = 3, k: int = 2, h: int = 8, w: int = 10) -> Video:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, k + 1, size=(t, h, w)).astype(np.uint16)
    amodal = np.stack([ids == i + 1 for i in range(k)]) | rng.random((k, t, h, w)).__gt__(0.8)
    return Video(
        name=name,
        frames=rng.integers(0, 256, size=(t, h, w, 3), dtype=np.uint8),
        visible_ids=ids,
        amodal=amodal,
        amodal_annotated=np.ones((k, t), bool),
        presence=np.ones((k, t), bool),
        track_ids=np.arange(1, k + 1, dtype=np.int64),
        source_frame_ids=np.array([f"f{i}" for i in range(t)], dtype=object),
        flow=rng.normal(size=(t - 1, h, w, 2)).astype(np.float16),
        provenance={"seed": 3},
        flow_backend="exact",
    )


def test_round_trip(tmp_path: Path) -> None:
    v = make_video()
    path = write_shard(tmp_path / "a.h5", [v, make_video("v1")], {"who": "test"})
    with ShardReader(path) as r:
        assert len(r) == 2
        assert r.schema_version == SCHEMA_VERSION
        assert r.provenance == {"who": "test"}
        got = r.read_video(0)
    for name in ("frames", "visible_ids", "amodal", "amodal_annotated", "presence", "track_ids", "flow"):
        np.testing.assert_array_equal(getattr(got, name), getattr(v, name))
    assert list(got.source_frame_ids) == ["f0", "f1", "f2"]
    assert got.provenance == {"seed": 3}
    assert got.flow_backend == "exact"
    assert got.flow_backward is None
    np.testing.assert_array_equal(got.visible_masks()[1], v.visible_ids == 2)


def test_chunked_along_time_and_compressed(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "a.h5", [make_video(t=6)])
    with h5py.File(path) as f:
        ds = f["videos/v0/frames"]
        assert ds.chunks == (4, 8, 10, 3) and ds.compression == "gzip" and ds.shuffle
        amodal = f["videos/v0/amodal"]
        assert amodal.chunks == (amodal.shape[0], 4, 8, 10)
        assert f["videos/v0/flow"].chunks == (5, 8, 10, 2)  # flow: every frame pair in one chunk
        assert f["videos/v0/presence"].chunks is None


def test_partial_read_only_loads_requested_fields(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "a.h5", [make_video()])
    with ShardReader(path) as r:
        v = r.read_video(0, fields=("visible_ids",))
        assert v.flow is None
        assert v.frames.shape == (3, 8, 10, 3)
        assert r.read_field(0, "frames", np.s_[1]).shape == (8, 10, 3)


def test_write_rejects_bad_shapes_and_leaves_nothing(tmp_path: Path) -> None:
    bad = make_video()
    bad.amodal = bad.amodal[:, :2]
    with pytest.raises(AmodalkitError, match="amodal has shape"):
        write_shard(tmp_path / "a.h5", [make_video("ok"), bad])
    assert list(tmp_path.iterdir()) == []


def test_write_rejects_ids_beyond_objects(tmp_path: Path) -> None:
    bad = make_video()
    bad.visible_ids[0, 0, 0] = 7
    with pytest.raises(AmodalkitError, match="refers to object 7"):
        write_shard(tmp_path / "a.h5", [bad])


def test_update_shard_is_atomic(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "a.h5", [make_video()])
    before = path.read_bytes()

    def explode(v: Video) -> Video:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        update_shard(path, explode)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]
    update_shard(path, lambda v: v.evolve(flow_backend="dis"))
    with ShardReader(path) as r:
        assert r.read_video(0).flow_backend == "dis"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: f.attrs.__setitem__("schema_version", SCHEMA_VERSION + 1), "newer than this amodalkit"),
        (lambda f: f.attrs.__delitem__("schema"), "not an amodalkit shard"),
        (lambda f: f.__delitem__("videos/v0/presence"), "missing dataset 'presence'"),
        (lambda f: f.attrs.__setitem__("n_videos", 5), "incomplete"),
    ],
)
def test_validation_errors_name_file_and_problem(tmp_path: Path, damage, message: str) -> None:
    path = write_shard(tmp_path / "a.h5", [make_video()])
    with h5py.File(path, "a") as f:
        damage(f)
    with pytest.raises(AmodalkitError, match=message) as err:
        ShardReader(path)
    assert str(path) in str(err.value)


def test_wrong_shape_on_disk(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "a.h5", [make_video()])
    with h5py.File(path, "a") as f:
        del f["videos/v0/track_ids"]
        f["videos/v0/track_ids"] = np.arange(5, dtype=np.int64)
    with pytest.raises(AmodalkitError, match="track_ids has shape"):
        ShardReader(path)


def test_truncated_and_garbage_files(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "a.h5", [make_video()])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AmodalkitError, match="truncated or corrupt"):
        ShardReader(path)
    junk = tmp_path / "junk.h5"
    junk.write_text("hello")
    with pytest.raises(AmodalkitError, match="truncated or corrupt"):
        ShardReader(junk)
    with pytest.raises(AmodalkitError, match="does not exist"):
        ShardReader(tmp_path / "missing.h5")


def test_expand_paths(tmp_path: Path) -> None:
    write_shard(tmp_path / "b.h5", [make_video()])
    write_shard(tmp_path / "a.h5", [make_video()])
    assert [p.name for p in expand_shard_paths(str(tmp_path / "*.h5"))] == ["a.h5", "b.h5"]
    assert [p.name for p in expand_shard_paths(tmp_path)] == ["a.h5", "b.h5"]
    with pytest.raises(AmodalkitError, match="no shard matches"):
        expand_shard_paths(str(tmp_path / "x-*.h5"))
    with pytest.raises(AmodalkitError, match="no such file"):
        expand_shard_paths(tmp_path / "nope.h5")


def test_reader_reopens_after_pickle(tmp_path: Path) -> None:
    import pickle

    path = write_shard(tmp_path / "a.h5", [make_video()])
    r = ShardReader(path)
    r2 = pickle.loads(pickle.dumps(r))
    assert r2.read_video(0).num_objects == 2
    r.close()
    r2.close()


def _damaged(tmp_path: Path, damage) -> Path:
    path = write_shard(tmp_path / "a.h5", [make_video()])
    with h5py.File(path, "a") as f:
        damage(f)
    return path


def _replace_with_group(f: h5py.File, name: str) -> None:
    del f[name]
    f.create_group(name)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: f.attrs.__setitem__("schema_version", "1"), "'schema_version' must be an integer"),
        (lambda f: f.attrs.__setitem__("schema_version", np.array([1, 2])), "'schema_version' must be an"),
        (lambda f: f.attrs.__setitem__("schema", np.array([1, 2])), "not an amodalkit shard"),
        (lambda f: f.attrs.__setitem__("n_videos", "one"), "'n_videos' must be an integer"),
        (lambda f: f.attrs.__setitem__("provenance", "{not json"), "'provenance' is not valid JSON"),
        (lambda f: f.attrs.__setitem__("provenance", "[1, 2]"), "must be a JSON object"),
        (lambda f: f["videos/v0"].attrs.__setitem__("provenance", "nope"), "'provenance' is not valid JSON"),
        (lambda f: f["videos/v0"].attrs.__setitem__("flow_backend", 3), "'flow_backend' must be a string"),
        (lambda f: _replace_with_group(f, "videos/v0/frames"), "'frames' must be a dataset"),
        (lambda f: (f.__delitem__("videos"), f.create_dataset("videos", data=[1])), "'/videos' must be a"),
        (lambda f: (f.__delitem__("videos/v0"), f.create_dataset("videos/v0", data=[1])), "must be a group"),
    ],
)
def test_attributes_and_members_of_the_wrong_type_are_refused(tmp_path: Path, damage, message: str) -> None:
    path = _damaged(tmp_path, damage)
    before = path.read_bytes()
    with pytest.raises(AmodalkitError, match=message) as err:
        ShardReader(path).read_video(0)
    assert str(path) in str(err.value)
    assert path.read_bytes() == before


def test_declared_sizes_are_checked_before_reading(tmp_path: Path) -> None:
    from bad_files import declared_shard

    huge = declared_shard(tmp_path / "huge.h5", 2, 40000, 40000)
    with pytest.raises(AmodalkitError, match="over the limit"):
        ShardReader(huge)
    hollow = declared_shard(tmp_path / "hollow.h5", 4, 4000, 4000)
    assert hollow.stat().st_size < 200_000
    with pytest.raises(AmodalkitError, match="the file holds 0 bytes"):
        ShardReader(hollow)


def test_external_storage_is_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(range(256)) * 4)

    def external(f: h5py.File) -> None:
        shape = f["videos/v0/track_ids"].shape
        del f["videos/v0/track_ids"]
        f.create_dataset("videos/v0/track_ids", shape=shape, dtype=np.int64, external=[(str(secret), 0, 16)])

    with pytest.raises(AmodalkitError, match="stored outside the shard"):
        ShardReader(_damaged(tmp_path, external))


def test_nan_flow_and_ids_beyond_objects_are_refused_on_read_and_write(tmp_path: Path) -> None:
    v = make_video()
    bad_flow = v.flow.copy()
    bad_flow[0, 0, 0, 0] = np.nan
    with pytest.raises(AmodalkitError, match="flow holds NaN or infinite"):
        write_shard(tmp_path / "w.h5", [v.__class__(**{**v.__dict__, "flow": bad_flow})])
    path = write_shard(tmp_path / "a.h5", [v])
    ids = write_shard(tmp_path / "ids.h5", [v])
    with h5py.File(path, "a") as f:
        f["videos/v0/flow"][0, 0, 0, 1] = np.inf
    with h5py.File(ids, "a") as f:
        f["videos/v0/visible_ids"][1, 0, 0] = 9
    with ShardReader(path) as r:
        with pytest.raises(AmodalkitError, match="flow holds NaN or infinite") as err:
            r.read_video(0, ("flow",))
        assert str(path) in str(err.value)
    with ShardReader(ids) as r:
        with pytest.raises(AmodalkitError, match="refers to object 9 but the video has 2"):
            r.read_video(0, ())


def test_ids_are_checked_even_without_objects(tmp_path: Path) -> None:
    v = make_video(k=1)
    t, h, w = v.visible_ids.shape
    empty = {"amodal": np.zeros((0, t, h, w), bool), "amodal_annotated": np.zeros((0, t), bool),
             "presence": np.zeros((0, t), bool), "track_ids": np.zeros(0, np.int64)}
    with pytest.raises(AmodalkitError, match="refers to object 1 but the video has 0"):
        write_shard(tmp_path / "a.h5", [v.__class__(**{**v.__dict__, **empty})])


def _new_flows(videos: list[Video]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(5)
    return {v.name: tuple((rng.normal(size=(v.num_frames - 1, *v.size, 2)) * 4).astype(np.float16)
                          for _ in range(2)) for v in videos}


def _assert_same_shards(a: Path, b: Path) -> None:
    with ShardReader(a) as ra, ShardReader(b) as rb:
        assert ra.video_names == rb.video_names
        assert ra.provenance == rb.provenance and ra.schema_version == rb.schema_version
        for i in range(len(ra)):
            assert ra.meta(i) == rb.meta(i)
            va, vb = ra.read_video(i), rb.read_video(i)
            for name in ALL_FIELDS:
                x, y = getattr(va, name), getattr(vb, name)
                assert (x is None) == (y is None), name
                if x is not None:
                    assert x.dtype == y.dtype and np.array_equal(x, y), name
            assert va.provenance == vb.provenance and va.flow_backend == vb.flow_backend


def test_replace_flow_reads_back_like_update_shard(tmp_path: Path) -> None:
    videos = [make_video("v0"), make_video("v1", t=1), make_video("v2", k=1, h=5, w=7)]
    videos[0].object_class = np.array([3, 4], np.int32)
    original = write_shard(tmp_path / "orig.h5", videos, {"who": "test"})
    flows = _new_flows(videos)
    old, new = tmp_path / "old.h5", tmp_path / "new.h5"
    old.write_bytes(original.read_bytes())
    new.write_bytes(original.read_bytes())
    update_shard(old, lambda v: v.evolve(flow=flows[v.name][0], flow_backward=flows[v.name][1],
                                         flow_backend="dis"), {"flow": {"backend": "dis"}})
    seen = {}

    def flow_of(name: str, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        seen[name] = frames
        return flows[name][0].astype(np.float32), flows[name][1]

    assert replace_flow(new, flow_of, "dis", {"flow": {"backend": "dis"}}) == new
    assert sorted(seen) == ["v0", "v1", "v2"]
    assert all(np.array_equal(seen[v.name], v.frames) for v in videos)
    _assert_same_shards(new, old)
    with ShardReader(new) as r:
        assert r.provenance == {"who": "test", "flow": {"backend": "dis"}}
    with h5py.File(new) as f, h5py.File(original) as g:
        for name in ("flow", "flow_backward"):
            ds = f[f"videos/v0/{name}"]
            assert ds.dtype == np.float16 and ds.chunks == ds.shape and ds.compression == "gzip"
            assert f[f"videos/v1/{name}"].shape == (0, 8, 10, 2)
        for name in ("frames", "visible_ids", "amodal"):
            a, b = f[f"videos/v0/{name}"], g[f"videos/v0/{name}"]
            assert (a.chunks, a.compression, a.shuffle) == (b.chunks, b.compression, b.shuffle)
            assert a.id.get_storage_size() == b.id.get_storage_size()


def test_replace_flow_twice_does_not_grow_the_file(tmp_path: Path) -> None:
    videos = [make_video("v0", t=6), make_video("v1", t=6)]
    path = write_shard(tmp_path / "a.h5", videos)
    flows = _new_flows(videos)
    replace_flow(path, lambda name, frames: flows[name], "dis")
    size = path.stat().st_size
    replace_flow(path, lambda name, frames: flows[name], "dis")
    assert path.stat().st_size == size


@pytest.mark.parametrize(("change", "message"), [
    (lambda f: f[:, :-1], r"'v0': flow has shape \(2, 7, 10, 2\), expected \(2, 8, 10, 2\)"),
    (lambda f: f.astype(np.float64), "'v0': flow has dtype float64"),
    (lambda f: np.full_like(f, np.nan), "'v0': flow holds NaN"),
    (lambda f: np.full(f.shape, 1e6, np.float32), "'v0': flow holds NaN or infinite values"),
])
def test_replace_flow_refuses_bad_flow_and_keeps_the_shard(tmp_path: Path, change, message: str) -> None:
    path = write_shard(tmp_path / "a.h5", [make_video()])
    before = path.read_bytes()
    fwd = np.zeros((2, 8, 10, 2), np.float16)
    with pytest.raises(AmodalkitError, match=message) as err:
        replace_flow(path, lambda name, frames: (change(fwd), fwd), "dis")
    assert str(path) in str(err.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]


def test_replace_flow_killed_midway_leaves_the_shard(tmp_path: Path) -> None:
    path = write_shard(tmp_path / "a.h5", [make_video("v0"), make_video("v1")])
    before = path.read_bytes()
    calls = []

    def flow_of(name: str, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        calls.append(name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return np.zeros((2, 8, 10, 2), np.float16), np.zeros((2, 8, 10, 2), np.float16)

    with pytest.raises(KeyboardInterrupt):
        replace_flow(path, flow_of, "dis")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]
    with pytest.raises(AmodalkitError, match="does not exist"):
        replace_flow(tmp_path / "missing.h5", flow_of, "dis")


def test_float16_finite_check_matches_numpy_on_every_bit_pattern() -> None:
    every = np.arange(2 ** 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = np.isfinite(every)
    assert finite.sum() == 2 ** 16 - 2 * 2 ** 10
    for value, ok in zip(every, finite, strict=True):
        assert _all_finite(np.array([value, 0], np.float16)) == ok
    assert _all_finite(every[finite]) and not _all_finite(np.array([1.0, np.inf], np.float32))


@settings(max_examples=200, deadline=None)
@given(arrays(np.float32, (3, 4, 2), elements=st.floats(-64, 64, width=32)))
def test_quantized_flow_is_the_nearest_quantum_and_stable(flow: np.ndarray) -> None:
    stored = quantized_flow(flow)
    assert stored.dtype == np.float16 and stored.shape == flow.shape
    steps = stored.astype(np.float64) / FLOW_QUANTUM
    assert np.array_equal(steps, np.round(steps))
    assert np.abs(stored.astype(np.float64) - flow).max() <= FLOW_QUANTUM / 2 + 1e-6
    assert np.array_equal(quantized_flow(stored), stored)
    assert np.array_equal(quantized_flow(np.round(flow)), np.round(flow).astype(np.float16))


def test_exact_flow_is_stored_as_given_and_estimated_flow_quantized(tmp_path: Path) -> None:
    exact, estimated = make_video("exact"), make_video("estimated")
    exact.flow_backend, estimated.flow_backend = "exact", "dis"
    rng = np.random.default_rng(3)
    for v in (exact, estimated):
        v.flow = rng.normal(0, 3, v.flow.shape).astype(np.float16)
        v.flow_backward = v.flow.copy()
    path = write_shard(tmp_path / "a.h5", [exact, estimated])
    with ShardReader(path) as r:
        stored = {name: r.read_field(i, "flow") for i, name in enumerate(r.video_names)}
        assert np.array_equal(stored["exact"], exact.flow)
        assert np.array_equal(stored["estimated"], quantized_flow(estimated.flow))
        assert not np.array_equal(stored["estimated"], estimated.flow)


def test_reader_keeps_recent_datasets_open_and_reads_the_same(tmp_path: Path) -> None:
    import pickle

    from amodalkit.io import shard_read

    videos = [make_video(f"v{i}", t=5) for i in range(12)]
    path = write_shard(tmp_path / "a.h5", videos)
    with ShardReader(path) as r:
        for _ in range(2):  # 12 videos x 3 fields = 36 datasets: more than stay open
            for i, v in enumerate(videos):
                for name, frame in (("frames", 2), ("visible_ids", 2), ("amodal", np.s_[:, 2])):
                    np.testing.assert_array_equal(r.read_field(i, name, frame), getattr(v, name)[frame])
        assert len(r._open) == shard_read.OPEN_DATASETS
        copy = pickle.loads(pickle.dumps(r))
        assert not copy._open
        np.testing.assert_array_equal(copy.read_field(3, "frames"), videos[3].frames)
        with pytest.raises(AmodalkitError, match="has no 'pred_amodal'"):
            r.read_field(0, "pred_amodal")
    assert not r._open


def _numpy_flow_for_storage(flow: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.clip(flow, -65504, 65504).astype(np.float16)


def _numpy_quantized_flow(flow: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        steps = np.multiply(flow, 1 / FLOW_QUANTUM, dtype=np.float32)
        return (np.rint(steps) * np.float32(FLOW_QUANTUM)).astype(np.float16)


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal float16 bits, NaN payloads aside (a NaN flow is refused on writing anyway)."""
    nan = np.isnan(a)
    return a.dtype == b.dtype == np.float16 and np.array_equal(nan, np.isnan(b)) and \
        np.array_equal(a.view(np.uint16)[~nan], b.view(np.uint16)[~nan])


def test_flow_casts_equal_numpy_on_every_float16_and_random_float32_bits() -> None:
    every_half = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    floats = np.random.default_rng(0).integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    singles = floats.view(np.float32)
    with np.errstate(invalid="ignore"):
        small = singles * 1e-3
    for arr in (every_half, singles, singles[::3], small):
        assert _same_values(flow_for_storage(arr), _numpy_flow_for_storage(arr))
        assert _same_values(quantized_flow(arr), _numpy_quantized_flow(arr))
        half = _numpy_flow_for_storage(arr)
        assert _same_values(quantized_flow(half), _numpy_quantized_flow(half))
    readonly = singles.copy()
    readonly.flags.writeable = False
    assert _same_values(flow_for_storage(readonly), _numpy_flow_for_storage(readonly))
    assert _same_values(quantized_flow(readonly), _numpy_quantized_flow(readonly))
    given = singles.copy()
    quantized_flow(given)
    assert np.array_equal(given.view(np.uint32), floats), "quantized_flow changed its input"


@pytest.mark.parametrize(("names", "needle"), [(["a", "a"], "duplicate video name 'a'"),
                                               (["a/b"], "cannot name an HDF5 group"),
                                               ([""], "cannot name an HDF5 group"),
                                               (["."], "cannot name an HDF5 group")])
def test_unusable_video_names_are_clear_errors_and_leave_nothing(tmp_path: Path, names: list[str],
                                                                 needle: str) -> None:
    with pytest.raises(AmodalkitError, match=needle) as info:
        write_shard(tmp_path / "a.h5", [make_video(n) for n in names])
    assert "a.h5" in str(info.value)
    assert list(tmp_path.iterdir()) == []
