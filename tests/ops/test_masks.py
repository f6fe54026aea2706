from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from shapely.geometry import Polygon

from amodalkit.ops.masks import (
    bbox,
    circle_polygon,
    convex_hull_mask,
    never_visible_pixels,
    occlusion_rates,
    rasterize_polygon,
    rle_decode,
    rle_encode,
)

masks = arrays(bool, st.tuples(st.integers(1, 24), st.integers(1, 24)))


@given(masks)
def test_rle_round_trip(m: np.ndarray) -> None:
    rle = rle_encode(m)
    assert isinstance(rle["counts"], str)
    np.testing.assert_array_equal(rle_decode(rle), m)


@given(masks)
def test_convex_hull_contains_mask_within_its_box(m: np.ndarray) -> None:
    hull = convex_hull_mask(m)
    assert (hull | m).sum() == hull.sum()
    assert bbox(hull) == bbox(m)


@given(masks)
def test_bbox_is_tight(m: np.ndarray) -> None:
    box = bbox(m)
    if not m.any():
        assert box is None
        return
    y0, x0, y1, x1 = box
    assert m[y0:y1, x0:x1].sum() == m.sum()
    assert m[y0].any() and m[y1 - 1].any() and m[:, x0].any() and m[:, x1 - 1].any()


@settings(max_examples=50)
@given(st.integers(0, 2**32 - 1), st.integers(3, 12), st.integers(4, 15))
def test_polygon_rasterization_matches_shapely_area(seed: int, n: int, r: int) -> None:
    rng = np.random.default_rng(seed)
    verts = np.rint(circle_polygon(rng, n, r)).astype(int) + r + 1
    mask = rasterize_polygon(verts, (2 * r + 3, 2 * r + 3))
    for x, y in verts:
        assert mask[y, x]
    poly = Polygon(verts)
    # the raster includes its boundary pixels: area between the polygon's and its 1-px dilation
    assert poly.area <= mask.sum() + 1e-9
    assert mask.sum() <= poly.buffer(1.0).area + 1


def test_never_visible_translating_object() -> None:
    shape = np.zeros((6, 6), bool)
    shape[1:3, 1:4] = True
    amodal = np.stack([shape, np.roll(shape, 2, axis=1)])
    visible = amodal.copy()
    visible[0, 1, 1] = False  # hidden in frame 0, but the same object pixel is seen in frame 1
    assert never_visible_pixels(amodal, visible) == (0, 6)
    visible[1, 1, 3] = False  # now hidden in both frames
    assert never_visible_pixels(amodal, visible) == (1, 6)


def test_occlusion_rates() -> None:
    a = np.zeros((2, 4, 4), bool)
    a[0, :2] = True
    v = a.copy()
    v[0, 0] = False
    rates = occlusion_rates(a, v)
    assert rates[0] == 0.5
    assert np.isnan(rates[1])


def test_rle_decode_refuses_runs_sizes_and_types_that_do_not_fit() -> None:
    from amodalkit.errors import AmodalkitError

    good = rle_encode(np.eye(4, 5, dtype=bool))
    assert rle_decode(good, (4, 5)).sum() == 4
    cases = [
        ({**good, "size": [4, 6]}, "runs do not cover"),
        ({"size": [2, 2], "counts": [1, 1]}, "cover 2 pixels, a 2x2 mask has 4"),
        ({"size": [2, 2], "counts": [1, -1, 4]}, "non-negative"),
        ({"size": [60000, 60000], "counts": "0"}, "over the limit"),
        ({"size": ["4", 5], "counts": good["counts"]}, "size must be [height, width]"),
        ({"size": [4, 5], "counts": 3}, "must be a string or a list"),
        ({"size": [4, 5], "counts": "é"}, "invalid COCO compressed RLE"),
        ({"counts": "0"}, "'size' and 'counts'"),
    ]
    for rle, needle in cases:
        with pytest.raises(AmodalkitError, match=re.escape(needle)):
            rle_decode(rle)
    with pytest.raises(AmodalkitError, match="does not match the image size 4x6"):
        rle_decode(good, (4, 6))
