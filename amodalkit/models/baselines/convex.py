"""Convex baseline: the amodal mask is the convex hull of the visible mask."""

from __future__ import annotations

import numpy as np

from amodalkit.io.shards import Video
from amodalkit.models.base import AmodalMethod
from amodalkit.models.registry import ModelSpec, TableRow, register_model
from amodalkit.ops.masks import convex_hull_mask


class ConvexHull(AmodalMethod):
    """Per object-frame convex hull of the visible pixels (empty where nothing is visible)."""

    name = "convex"
    fields = ()

    def predict_video(self, video: Video) -> np.ndarray:
        visible = video.visible_masks()
        out = np.zeros(visible.shape, bool)
        k_idx, t_idx = np.nonzero(visible.any(axis=(-2, -1)))
        for k, t in zip(k_idx, t_idx):
            out[k, t] = convex_hull_mask(visible[k, t])
        return out


register_model(ModelSpec(
    name=ConvexHull.name, summary="convex hull of each visible mask (rule-based)", method=ConvexHull,
    table=(TableRow("convex", "Convex hull", paper=(0.9264, 0.3182)),),
))
