from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from amodalkit.evaluation.metrics import MetricAccumulator, iou, score_video

pairs = st.tuples(st.integers(1, 12), st.integers(1, 12)).flatmap(
    lambda s: st.tuples(arrays(bool, s), arrays(bool, s)))


@given(pairs)
def test_iou_bounds_and_symmetry(p: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = p
    v = iou(a, b)
    assert 0.0 <= v <= 1.0
    assert v == iou(b, a)
    assert iou(a, a) == 1.0


@given(arrays(bool, (2, 3, 6, 6)), arrays(bool, (2, 3, 6, 6)))
def test_visible_only_prediction_scores_zero_occluded(gt: np.ndarray, vis: np.ndarray) -> None:
    visible = vis & gt
    s = score_video(visible, gt, visible, np.ones((2, 3), bool))
    assert np.all(s.occluded[s.has_occluded] < 1e-5)
    np.testing.assert_array_equal(s.has_occluded, (gt & ~visible).any(axis=(-2, -1)))


def test_frame_and_object_level_differ_as_defined() -> None:
    # one video, 2 frames; frame 0 has 2 objects, frame 1 has 1 object
    gt = np.zeros((2, 2, 4, 4), bool)
    gt[0, 0, :2] = gt[1, 0, 2:] = gt[0, 1, :2] = True
    visible = np.zeros_like(gt)
    visible[0, 0, 0] = visible[1, 0, 2] = visible[0, 1, 0] = True
    pred = gt.copy()
    pred[1, 0] = visible[1, 0]  # object 1 predicted as only its visible row: full IoU 0.5
    scored = gt.any(axis=(-2, -1))
    acc = MetricAccumulator()
    acc.add(score_video(pred, gt, visible, scored))
    r = acc.result()
    assert r["n_object_frames"] == 3
    assert r["object_miou_full"] == pytest.approx((1 + 0.5 + 1) / 3)
    assert r["frame_miou_full"] == pytest.approx(((1 + 0.5) / 2 + 1) / 2)
    assert r["n_occluded_object_frames"] == 3
    assert r["frame_miou_occluded"] == pytest.approx(((1 + 0) / 2 + 1) / 2, abs=1e-6)


def test_unoccluded_object_frames_only_enter_full_mean() -> None:
    gt = np.zeros((1, 1, 4, 4), bool)
    gt[0, 0, 1:3, 1:3] = True
    acc = MetricAccumulator()
    acc.add(score_video(gt, gt, gt, np.ones((1, 1), bool)))
    r = acc.result()
    assert r["n_object_frames"] == 1
    assert r["n_occluded_object_frames"] == 0
    assert np.isnan(r["frame_miou_occluded"])
