from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import evaluate_method
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shards import Video, expand_shard_paths
from amodalkit.models.baselines.temporal import TemporalAggregation, _mean_visible_flow, aggregate_windows
from amodalkit.models.registry import build_method
from amodalkit.ops.warp import splat_mask


def _reference_flow(visible: np.ndarray, aggregate: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """The per-frame aggregated flow as first written: (H, W) bool, (H, W) bool, (H, W, 2) -> (H, W, 2)."""
    out = np.zeros(flow.shape, np.float32)
    out[visible] = flow[visible]
    if visible.any():
        out[aggregate & ~visible] = flow[visible].astype(np.float32).mean(axis=0)
    return out


def _reference_window(visible: np.ndarray, flow: np.ndarray, n: int, k: int) -> np.ndarray:
    """Algorithm 1 for frame n of one object, recomputed from scratch: (T, H, W), (T-1, H, W, 2) -> (H, W)."""
    start = max(0, n - k)
    agg = visible[start].copy()
    agg_flow = _reference_flow(visible[start], agg, flow[start]) if n > start else None
    for t in range(start + 1, n + 1):
        agg = splat_mask(agg, agg_flow) | visible[t]
        if t < n:
            agg_flow = _reference_flow(visible[t], agg, flow[t])
    return agg


def _reference_predict(visible: np.ndarray, flow: np.ndarray, flow_backward: np.ndarray | None, k: int,
                       bidirectional: bool) -> np.ndarray:
    """The per-object, per-frame loop TemporalAggregation.predict_video ran before it was vectorised."""
    objects, frames = visible.shape[:2]
    out = np.zeros(visible.shape, bool)
    for obj in range(objects):
        for n in range(frames):
            out[obj, n] = _reference_window(visible[obj], flow, n, k)
            if bidirectional:
                out[obj, n] |= _reference_window(visible[obj, ::-1], flow_backward[::-1], frames - 1 - n, k)
    return out


def _video(visible_ids: np.ndarray, objects: int, flow: np.ndarray, flow_backward: np.ndarray) -> Video:
    """A bare in-memory video around an id map and its flows (only what the temporal baseline reads)."""
    t, h, w = visible_ids.shape
    return Video(name="random", frames=np.zeros((t, h, w, 3), np.uint8), visible_ids=visible_ids,
                 amodal=np.zeros((objects, t, h, w), bool), amodal_annotated=np.zeros((objects, t), bool),
                 presence=np.ones((objects, t), bool), track_ids=np.arange(objects, dtype=np.int64),
                 source_frame_ids=np.array([str(i) for i in range(t)]), flow=flow,
                 flow_backward=flow_backward)


#: flows in quarter pixels (ties for the nearest pixel included) up to a frame's size, so pixels leave it
quarter_flows = st.integers(-24, 24).map(lambda q: q / 4)


@st.composite
def random_videos(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """(visible (K, T, H, W), flow, flow_backward (T-1, H, W, 2) float16, objects): masks may be empty."""
    objects, t = draw(st.integers(0, 3)), draw(st.integers(1, 7))
    h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    visible = draw(arrays(bool, (objects, t, h, w)))
    flows = [draw(arrays(np.float16, (max(t - 1, 0), h, w, 2), elements=quarter_flows)) for _ in range(2)]
    return visible, flows[0], flows[1], objects


@settings(max_examples=300, deadline=None)
@given(random_videos(), st.integers(0, 8), st.sampled_from([1, 40, 1 << 24]))
def test_windows_match_the_per_frame_reference(case: tuple, k: int, chunk_pixels: int) -> None:
    visible, flow, flow_backward, _ = case
    forward = aggregate_windows(visible, flow, k, chunk_pixels)
    np.testing.assert_array_equal(forward, _reference_predict(visible, flow, None, k, False))
    back = aggregate_windows(visible[:, ::-1], flow_backward[::-1], k, chunk_pixels)[:, ::-1]
    np.testing.assert_array_equal(back | forward,
                                  _reference_predict(visible, flow, flow_backward, k, True))


@settings(max_examples=150, deadline=None)
@given(random_videos(), st.integers(1, 8), st.booleans(),
       st.sampled_from([np.float16, np.float32, np.float64]))
def test_predictions_match_the_reference_on_random_videos(case: tuple, k: int, bidirectional: bool,
                                                          dtype: type) -> None:
    visible, flow, flow_backward, objects = case
    ids = np.zeros(visible.shape[1:], np.uint16)
    for obj in range(objects):
        ids[visible[obj] & (ids == 0)] = obj + 1
    flow, flow_backward = flow.astype(dtype) * 1.1, flow_backward.astype(dtype) * 1.1
    video = _video(ids, objects, flow, flow_backward)
    expected = _reference_predict(video.visible_masks(), flow, flow_backward, k, bidirectional)
    np.testing.assert_array_equal(TemporalAggregation(k, bidirectional).predict_video(video), expected)


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_predictions_match_the_reference_on_chewing_gum(cg_savos, k: int, bidirectional: bool) -> None:
    method = TemporalAggregation(k, bidirectional)
    for shard in ("test-00000.h5", "test-00001.h5"):
        with ShardReader(cg_savos / shard) as r:
            for i in range(3):
                v = r.read_video(i)
                expected = _reference_predict(v.visible_masks(), v.flow, v.flow_backward, k, bidirectional)
                got = method.predict_video(v)
                assert got.dtype == bool and got.shape == expected.shape
                np.testing.assert_array_equal(got, expected)
                if not bidirectional:
                    chunked = aggregate_windows(v.visible_masks(), v.flow, k, chunk_pixels=3 * got[:, 0].size)
                    np.testing.assert_array_equal(chunked, expected)


def test_edge_cases_match_the_reference() -> None:
    rng = np.random.default_rng(0)
    visible = rng.random((2, 4, 5, 6)) < 0.4
    visible[1] = False
    visible[0, 2] = False
    flow = rng.integers(-8, 9, (3, 5, 6, 2)).astype(np.float16) / 2
    flow[1] = 40
    for k in (1, 3, 4, 9):
        want = _reference_predict(visible, flow, None, k, False)
        np.testing.assert_array_equal(aggregate_windows(visible, flow, k), want)
    single = visible[:, :1]
    np.testing.assert_array_equal(aggregate_windows(single, flow[:0], 5), single)
    assert not aggregate_windows(np.zeros((1, 6, 3, 3), bool), np.ones((5, 3, 3, 2)), 3).any()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_mean_visible_flow_is_the_per_frame_mean(dtype: type) -> None:
    # frames of ~2,000 visible pixels: a pairwise or float64 sum would differ from mean's in the last bits
    rng = np.random.default_rng(1)
    visible = rng.random((3, 6, 60, 100)) < 0.3
    visible[0, 2] = False
    visible[2, 4] = False
    flow = (rng.standard_normal((5, 60, 100, 2)) * 7).astype(dtype)
    means = _mean_visible_flow(visible.reshape(3, 6, -1), flow.reshape(-1, 2)).reshape(3, 5, 2)
    assert means.dtype == np.float32
    for obj in range(3):
        for t in range(5):
            vis = visible[obj, t]
            want = flow[t][vis].astype(np.float32).mean(axis=0) if vis.any() else np.zeros(2, np.float32)
            np.testing.assert_array_equal(means[obj, t], want)


@given(arrays(bool, (7, 9)))
def test_zero_flow_splat_is_identity(m: np.ndarray) -> None:
    np.testing.assert_array_equal(splat_mask(m, np.zeros((7, 9, 2))), m)


@given(arrays(bool, (7, 9)), st.integers(-3, 3), st.integers(-3, 3))
def test_integer_flow_splat_shifts(m: np.ndarray, dx: int, dy: int) -> None:
    flow = np.zeros((7, 9, 2))
    flow[..., 0], flow[..., 1] = dx, dy
    padded = np.zeros((13, 15), bool)
    padded[3:10, 3:12] = m
    shifted = np.roll(padded, (dy, dx), axis=(0, 1))[3:10, 3:12]
    np.testing.assert_array_equal(splat_mask(m, flow), shifted)


def test_aggregation_recovers_a_part_seen_earlier() -> None:
    # a 2x4 bar moving right by 1 px/frame; its right half is hidden at frame 2
    t, h, w = 3, 4, 10
    amodal = np.zeros((t, h, w), bool)
    for f in range(t):
        amodal[f, 1:3, 1 + f:5 + f] = True
    visible = amodal.copy()
    visible[2, :, 5:] = False
    flow = np.zeros((t - 1, h, w, 2))
    flow[..., 0] = 1
    np.testing.assert_array_equal(aggregate_windows(visible[None], flow, k=2)[0, 2], amodal[2])
    np.testing.assert_array_equal(aggregate_windows(visible[None], flow, k=0)[0, 2], visible[2])


def test_temporal_beats_convex_on_chewing_gum_with_exact_flow(cg_savos) -> None:
    paths = expand_shard_paths(str(cg_savos / "test-*.h5"))
    convex = evaluate_method(build_method("convex"), paths, quiet=True)
    k5 = evaluate_method(build_method("temporal", k=5), paths, quiet=True)
    k5b = evaluate_method(build_method("temporal", k=5, bidirectional=True), paths, quiet=True)
    assert k5["frame_miou_occluded"] > convex["frame_miou_occluded"]
    assert k5b["frame_miou_occluded"] >= k5["frame_miou_occluded"]
    assert k5["k"] == 5 and k5b["bidirectional"] is True


def test_needs_flow(cg_savos) -> None:
    with ShardReader(cg_savos / "test-00000.h5") as r:
        v = r.read_video(0)
    with pytest.raises(AmodalkitError, match="amodalkit flow"):
        build_method("temporal").predict_video(v.evolve(flow=None))
    with pytest.raises(AmodalkitError, match="k >= 1"):
        build_method("temporal", k=0)
