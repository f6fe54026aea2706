"""Per-object rigid flow fitted to visible masks: exact on Chewing Gum, shifts recovered under occlusion."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import evaluate_method
from amodalkit.io.shard_read import ShardReader
from amodalkit.models.registry import build_method
from amodalkit.preprocess.flow.backends import end_point_error, get_flow_backend, require_frames_only
from amodalkit.preprocess.flow.patches import patch_flow
from amodalkit.preprocess.flow.rigid import fit_translations
from amodalkit.preprocess.flow.stage import fill_shard_flow, shard_has_flow
from tests.cli_helpers import assert_one_line_error, run


def test_rigid_flow_is_exact_on_chewing_gum_objects(cg_savos: Path) -> None:
    backend = get_flow_backend("rigid")
    assert backend.name == "rigid" and backend.provenance["background"]["backend"] == "dis:fast"
    dis = get_flow_backend("dis:fast")
    with ShardReader(cg_savos / "test-00000.h5") as r:
        for i in range(len(r)):
            video = r.read_video(i)
            fwd, bwd = backend.compute_both_visible(video.frames, video.visible_ids, video.num_objects)
            objects = video.visible_ids[:-1] > 0
            assert end_point_error(fwd, video.flow, objects) == 0.0
            assert end_point_error(bwd, video.flow_backward, video.visible_ids[1:] > 0) == 0.0
            dis_fwd = dis.compute(video.frames)
            np.testing.assert_array_equal(fwd[~objects], dis_fwd[~objects])  # the background is the base's
            assert end_point_error(dis_fwd, video.flow, objects) > 0.05


@settings(max_examples=30, deadline=None)
@given(st.integers(-3, 3), st.integers(-3, 3), st.integers(0, 2**32 - 1))
def test_fit_recovers_a_shift_behind_a_static_occluder(dx: int, dy: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    h = w = 40
    pts = rng.integers(8, 22, (6, 2)).astype(np.int32)
    first = np.zeros((h, w), np.uint8)
    cv2.fillPoly(first, [cv2.convexHull(pts)], 1)
    second = np.roll(first, (dy, dx), axis=(0, 1))
    ids = np.stack([first, second]).astype(np.uint8)
    ids[:, 14:20, 14:20] = 2  # object 2 stands still in front of object 1
    if (ids[:, :, :] == 1).sum(axis=(1, 2)).min() < 6:
        return  # object 1 almost entirely hidden: nothing to fit
    prior = rng.normal(0, 0.8, (2, 1, 2)) + np.array([[[dx, dy]], [[0, 0]]])
    shifts = fit_translations(ids, prior, radius=4)
    assert tuple(shifts[0, 0]) == (dx, dy)
    assert tuple(shifts[1, 0]) == (0, 0)


def test_rigid_fills_a_shard_and_the_results_name_it(cg_savos: Path, tmp_path: Path, capsys) -> None:
    shard = tmp_path / "test.h5"
    shutil.copy(cg_savos / "test-00001.h5", shard)
    code, out, err = run(capsys, "flow", str(shard), "--backend", "rigid:zero", "--quiet")
    assert code == 0, err
    backend = get_flow_backend("rigid:zero")
    assert shard_has_flow(shard, backend)
    with ShardReader(shard) as r, ShardReader(cg_savos / "test-00001.h5") as exact:
        assert r.provenance["flow"] == backend.provenance
        for i in range(len(r)):
            objects = r.read_field(i, "visible_ids")[:-1] > 0
            flow = r.read_field(i, "flow")
            np.testing.assert_array_equal(flow[objects], exact.read_field(i, "flow")[objects])
            assert not r.read_field(i, "flow")[~objects].any()  # rigid:zero: a still background
    code, out, _ = run(capsys, "info", str(shard))
    assert code == 0 and "rigid:zero" in out
    result = evaluate_method(build_method("convex"), [shard], quiet=True)
    assert result["flow"] == "rigid:zero" and result["flow_settings"] == [backend.provenance]
    fill_shard_flow(shard, get_flow_backend("rigid"))
    with ShardReader(shard) as r:
        assert r.meta(0)["flow_backend"] == "rigid"


def test_rigid_needs_visible_masks_and_another_background(tmp_path: Path, capsys) -> None:
    with pytest.raises(AmodalkitError, match="another backend"):
        get_flow_backend("rigid:rigid")
    with pytest.raises(AmodalkitError, match="runs on shards"):
        get_flow_backend("rigid:zero").compute(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(AmodalkitError, match="runs on shards"):
        require_frames_only(get_flow_backend("rigid"), "tracks --flow")
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        cv2.imwrite(str(frames / f"{i}.png"), np.zeros((8, 8, 3), np.uint8))
    code, _, err = run(capsys, "flow", "--frames", str(frames / "*.png"), "--backend", "rigid",
                       "--out", str(tmp_path / "f"))
    assert_one_line_error(code, err, "runs on shards")


@settings(max_examples=30, deadline=None)
@given(st.integers(-3, 3), st.integers(-3, 3), st.integers(0, 2**32 - 1))
def test_an_untracked_patch_is_fitted_as_its_own_layer(dx: int, dy: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = 40, 48
    frames = np.zeros((2, h, w, 3), np.uint8)
    frames[:] = rng.integers(0, 100, 3)
    colour = rng.integers(150, 256, 3)
    y, x = rng.integers(8, 24, 2)
    frames[0, y:y + 6, x:x + 8] = colour
    frames[1, y + dy:y + dy + 6, x + dx:x + dx + 8] = colour
    ids = np.zeros((2, h, w), np.uint16)
    forward, backward = patch_flow(frames[0], ids[0], frames[1], ids[1], np.zeros((0, 2))), \
        patch_flow(frames[1], ids[1], frames[0], ids[0], np.zeros((0, 2)))
    square = np.zeros((h, w), bool)
    square[y:y + 6, x:x + 8] = True
    assert (forward[square] == (dx, dy)).all() and not forward[~square].any()
    assert (backward[np.roll(square, (dy, dx), axis=(0, 1))] == (-dx, -dy)).all()


def test_a_sliver_beside_a_still_object_moves_with_the_texture_it_reveals() -> None:
    # a square sliding right by 2 from behind a still object: at t only its right part shows, and
    # both shifts 0 and 2 land it on its colour; only 2 explains the colour appearing at its right
    h, w = 12, 30
    frames = np.zeros((2, h, w, 3), np.uint8)
    ids = np.zeros((2, h, w), np.uint16)
    for t, x in ((0, 10), (1, 12)):
        frames[t, 3:9, x:x + 8] = (200, 40, 40)
        frames[t, :, :14] = (40, 200, 40)
        ids[t, :, :14] = 1
    forward = patch_flow(frames[0], ids[0], frames[1], ids[1], np.zeros((1, 2)))
    sliver = np.zeros((h, w), bool)
    sliver[3:9, 14:18] = True
    assert (forward[sliver] == (2, 0)).all() and not forward[~sliver].any()


def test_rigid_layers_moves_the_texture_no_track_claims(cg_savos: Path) -> None:
    layers, zero = get_flow_backend("rigid:layers"), get_flow_backend("rigid:zero")
    assert layers.name == "rigid:layers" and "patches" in layers.provenance["background"]
    moving = right = right_zero = 0
    with ShardReader(cg_savos / "test-00000.h5") as r:
        for i in range(len(r)):
            video = r.read_video(i)
            fwd, bwd = layers.compute_both_visible(video.frames, video.visible_ids, video.num_objects)
            fwd0, _ = zero.compute_both_visible(video.frames, video.visible_ids, video.num_objects)
            objects = video.visible_ids[:-1] > 0
            assert end_point_error(fwd, video.flow, objects) == 0.0
            assert end_point_error(bwd, video.flow_backward, video.visible_ids[1:] > 0) == 0.0
            exact = video.flow.astype(np.float32)
            patch = ~objects & (np.abs(exact).max(axis=-1) > 0)  # background pixels that move: the texture
            moving += int(patch.sum())
            right += int((patch & (fwd == exact).all(axis=-1)).sum())
            right_zero += int((patch & (fwd0 == exact).all(axis=-1)).sum())
    assert moving > 0 and right_zero == 0 and right >= 0.99 * moving
