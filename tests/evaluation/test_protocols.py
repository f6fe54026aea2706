"""Scoring protocols: strict against official, the paste rule and the dataset filters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import evaluate_method
from amodalkit.evaluation.metrics import score_video
from amodalkit.evaluation.protocols import (
    get_protocol,
    others_visible,
    paste_rule,
    track_inner_frames,
    video_dataset,
)
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shards import Video, expand_shard_paths
from amodalkit.models.base import AmodalMethod
from amodalkit.models.registry import build_method


def _video(ids: np.ndarray, amodal: np.ndarray, dataset: str = "") -> Video:
    k, t = amodal.shape[:2]
    return Video(name="v", frames=np.zeros((*ids.shape, 3), np.uint8), visible_ids=ids.astype(np.uint8),
                 amodal=amodal, amodal_annotated=np.ones((k, t), bool),
                 presence=np.ones((k, t), bool), track_ids=np.arange(1, k + 1),
                 source_frame_ids=np.array([str(i) for i in range(t)], dtype=object),
                 provenance={"dataset": dataset} if dataset else {})


class Everything(AmodalMethod):
    """Predicts every pixel: the paste rule decides what is left of it."""

    name = "everything"

    def predict_video(self, video: Video) -> np.ndarray:
        return np.ones((video.num_objects, video.num_frames, *video.size), np.float32)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_paste_rule_keeps_prediction_only_on_other_objects(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 4, (2, 6, 7))
    pred = rng.random((3, 2, 6, 7)) > 0.5
    video = _video(ids, pred.copy())
    out = paste_rule(pred, video)
    vis, others = video.visible_masks(), others_visible(video)
    assert not (vis & others).any()
    np.testing.assert_array_equal(out[others], pred[others])
    np.testing.assert_array_equal(out[~others], vis[~others])
    np.testing.assert_array_equal(paste_rule(out, video), out)  # idempotent


def test_track_inner_frames_drop_each_runs_ends() -> None:
    presence = np.array([[1, 1, 1, 1, 0, 1, 1, 1], [0, 1, 1, 0, 0, 0, 0, 1]], bool)
    expected = np.array([[0, 1, 1, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(track_inner_frames(presence), expected)


def test_official_hidden_region_is_the_other_objects_visible_pixels() -> None:
    ids = np.zeros((1, 4, 4), np.uint8)
    ids[0, :, :2] = 1
    ids[0, 0, 2] = 2
    amodal = np.zeros((2, 1, 4, 4), bool)
    amodal[0, 0, :, :3] = True  # object 1 hidden behind object 2 at (0, 2) and over background at (1..3, 2)
    amodal[1, 0, 0, 2] = True
    video = _video(ids, amodal)
    strict, official = get_protocol("strict"), get_protocol("official")
    assert official.hidden_region(video)[0, 0].sum() == 1
    assert strict.hidden_region(video)[0, 0].sum() == 16 - 8
    pred = np.ones_like(amodal)
    assert official.prepare(pred, video)[0, 0].sum() == 8 + 1
    np.testing.assert_array_equal(strict.prepare(pred, video), pred)


def test_kins_official_drops_perfect_entries_and_fishbowl_filters_frames() -> None:
    ids = np.zeros((5, 6, 6), np.uint8)
    ids[:, :3, :3] = 1
    ids[:, 2:4, 2:5] = 2
    amodal = np.zeros((2, 5, 6, 6), bool)
    amodal[0] = ids == 1
    amodal[0, :, 2:4, 2:4] = True  # 4 of its 12 pixels hidden behind object 2
    amodal[1] = ids == 2
    official = get_protocol("official")
    kins = _video(ids, amodal, "kins_video_car")
    assert video_dataset(kins) == "kins_video_car" and official.drops_perfect(kins)
    pred = official.prepare(amodal, kins)
    s = score_video(pred, amodal, kins.visible_masks(), np.ones((2, 5), bool), official.hidden_region(kins),
                    official.drops_perfect(kins))
    assert not s.scored.any() and not s.has_occluded.any()  # perfect predictions: everything dropped
    fish = _video(ids, amodal, "fishbowl")
    keep = official.object_frames(fish, np.ones((2, 5), bool))
    rate_ok = np.array([True, False])[:, None]  # object 1 is 1/3 hidden (in range), object 2 not at all
    np.testing.assert_array_equal(keep, rate_ok & np.array([0, 1, 1, 1, 0], bool)[None])
    chewing = _video(ids, amodal)
    everything = np.ones((2, 5), bool)
    np.testing.assert_array_equal(official.object_frames(chewing, everything), everything)


def test_official_protocol_lifts_convex_and_names_itself(cg_savos) -> None:
    paths = expand_shard_paths(str(cg_savos / "test-*.h5"))
    strict = evaluate_method(build_method("convex"), paths, quiet=True, protocol="strict")
    official = evaluate_method(build_method("convex"), paths, quiet=True)  # the default
    assert strict["protocol"] == "strict" and official["protocol"] == "official"
    assert strict["flow"] == official["flow"] == "exact"
    assert official["frame_miou_full"] > strict["frame_miou_full"]
    assert official["n_occluded_object_frames"] == strict["n_occluded_object_frames"]
    # on Chewing Gum the hidden ground truth lies on the other object's visible pixels, so a pasted
    # prediction scores the same in both regions: official = strict applied to the pasted prediction
    everything = evaluate_method(Everything(), paths, quiet=True, protocol="official")
    with ShardReader(paths[0]) as r:
        assert video_dataset(r.read_video(0)) == "chewing_gum"
    unpasted = evaluate_method(Everything(), paths, quiet=True, protocol="strict")
    assert everything["frame_miou_full"] > unpasted["frame_miou_full"]


def test_unknown_protocol_is_refused(cg_savos) -> None:
    with pytest.raises(AmodalkitError, match="unknown scoring protocol"):
        evaluate_method(build_method("convex"), expand_shard_paths(str(cg_savos / "test-*.h5")), quiet=True,
                        protocol="paper")
