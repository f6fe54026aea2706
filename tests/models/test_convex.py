from __future__ import annotations

import numpy as np

from amodalkit.io.shard_read import ShardReader
from amodalkit.models.registry import build_method
from amodalkit.ops.masks import convex_hull_mask


def test_convex_predicts_hull_of_visible(cg_savos) -> None:
    with ShardReader(cg_savos / "test-00000.h5") as r:
        v = r.read_video(0)
    pred = build_method("convex").predict_video(v)
    vis = v.visible_masks()
    assert pred.shape == vis.shape
    assert np.all(pred >= vis)
    np.testing.assert_array_equal(pred[1, 5], convex_hull_mask(vis[1, 5]))
    hidden = ~vis.any(axis=(-2, -1))
    assert not pred[hidden].any()
