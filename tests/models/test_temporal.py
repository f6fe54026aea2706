from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import evaluate_method
from amodalkit.io.shards import ShardReader, expand_shard_paths
from amodalkit.models.baselines.temporal import aggregate_window
from amodalkit.models.registry import build_method
from amodalkit.ops.warp import splat_mask


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
    np.testing.assert_array_equal(aggregate_window(visible, flow, 2, k=2), amodal[2])
    np.testing.assert_array_equal(aggregate_window(visible, flow, 2, k=0), visible[2])


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
