"""The one nearest-pixel forward warp of masks (used by the temporal baseline and the tracker)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from amodalkit.ops.warp import splat_mask

masks = arrays(bool, st.tuples(st.integers(1, 12), st.integers(1, 12)))


@settings(max_examples=60, deadline=None)
@given(masks, st.integers(-14, 14), st.integers(-14, 14))
def test_whole_pixel_flow_is_a_shift_that_drops_what_leaves(mask: np.ndarray, dx: int, dy: int) -> None:
    h, w = mask.shape
    flow = np.broadcast_to(np.array([dx, dy], np.float16), (h, w, 2))
    expected = np.zeros_like(mask)
    for y, x in zip(*np.nonzero(mask)):
        if 0 <= y + dy < h and 0 <= x + dx < w:
            expected[y + dy, x + dx] = True
    np.testing.assert_array_equal(splat_mask(mask, flow), expected)


@settings(max_examples=60, deadline=None)
@given(masks, st.data())
def test_identity_and_never_more_pixels(mask: np.ndarray, data: st.DataObject) -> None:
    h, w = mask.shape
    np.testing.assert_array_equal(splat_mask(mask, np.zeros((h, w, 2), np.float32)), mask)
    flow = data.draw(arrays(np.float32, (h, w, 2), elements=st.floats(-20, 20, width=32)))
    assert splat_mask(mask, flow).sum() <= mask.sum()
