from __future__ import annotations

import numpy as np
import pytest

from amodalkit.evaluation.evaluate import evaluate_method
from amodalkit.io.shards import Video, expand_shard_paths
from amodalkit.models.base import AmodalMethod
from amodalkit.models.registry import build_method


class Oracle(AmodalMethod):
    name = "oracle"
    fields = ("amodal",)

    def predict_video(self, video: Video) -> np.ndarray:
        return video.amodal.astype(np.float32)


class VisibleOnly(AmodalMethod):
    name = "visible"

    def predict_video(self, video: Video) -> np.ndarray:
        return video.visible_masks()


def test_oracle_scores_one_and_visible_scores_zero_occluded(cg_savos) -> None:
    paths = expand_shard_paths(str(cg_savos / "test-*.h5"))
    oracle = evaluate_method(Oracle(), paths, quiet=True)
    assert oracle["frame_miou_full"] == pytest.approx(1.0)
    assert oracle["frame_miou_occluded"] == pytest.approx(1.0)
    visible = evaluate_method(VisibleOnly(), paths, quiet=True)
    assert visible["frame_miou_occluded"] < 1e-5
    assert visible["n_videos"] == 6
    assert visible["n_object_frames"] == 6 * 2 * 40


def test_convex_between_visible_and_oracle(cg_savos) -> None:
    paths = expand_shard_paths(str(cg_savos / "test-*.h5"))
    r = evaluate_method(build_method("convex"), paths, quiet=True, data="x")
    assert set(r) >= {"method", "data", "frame_miou_full", "frame_miou_occluded", "object_miou_full",
                      "object_miou_occluded", "n_videos", "n_object_frames", "n_occluded_object_frames"}
    assert 0.75 < r["frame_miou_full"] < 0.98
    assert 0.1 < r["frame_miou_occluded"] < 0.6
    assert r["data"] == "x"
