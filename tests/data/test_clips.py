from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from amodalkit.data.clips import ClipConfig, ObjectClips
from amodalkit.errors import AmodalkitError
from amodalkit.io.shard_write import write_shard
from amodalkit.io.shards import Video
from amodalkit.ops.boxes import ClipCrop, CropBox, visible_pixel_counts
from amodalkit.ops.clip_cut import build_clip, collate_clips
from amodalkit.ops.warp import forward_warp


def _square_video(t: int = 6, h: int = 24, w: int = 40, hidden_from: int = 3) -> Video:
    """Object 0 a 6x6 square moving right 1 px/frame (flow around it too); object 1 static, visible
    only before `hidden_from`."""
    ids = np.zeros((t, h, w), np.uint16)
    amodal = np.zeros((2, t, h, w), bool)
    for i in range(t):
        amodal[0, i, 8:14, 4 + i:10 + i] = True
        amodal[1, i, 2:6, 30:34] = True
        if i < hidden_from:
            ids[i][amodal[1, i]] = 2
        ids[i][amodal[0, i]] = 1
    flow = np.zeros((t - 1, h, w, 2), np.float16)
    flow[:, 5:17, :26, 0] = 1
    back = -flow
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[ids == 1] = (200, 10, 10)
    frames[ids == 2] = (10, 200, 10)
    return Video(name="sq", frames=frames, visible_ids=ids, amodal=amodal,
                 amodal_annotated=np.ones((2, t), bool), presence=np.ones((2, t), bool),
                 track_ids=np.arange(2, dtype=np.int64),
                 source_frame_ids=np.array([str(i) for i in range(t)]),
                 flow=flow, flow_backward=back, flow_backend="exact")


def test_crop_paste_round_trip_integer_scale_is_exact() -> None:
    rng = np.random.default_rng(0)
    box = CropBox(y0=-3, x0=5, height=16, width=32, image_size=(20, 50), crop_size=(32, 64))
    assert box.scale == (2.0, 2.0)
    mask = rng.random((3, 20, 50)) > 0.5
    inside = np.zeros((20, 50), bool)
    inside[0:13, 5:37] = True
    mask &= inside
    crop = box.crop(torch.from_numpy(mask.astype(np.float32))[:, None])[:, 0]
    back = box.paste_back(crop.numpy())
    assert isinstance(back, np.ndarray) and back.shape == (3, 20, 50)
    np.testing.assert_array_equal(back > 0.5, mask)


def test_crop_paste_round_trip_any_scale_keeps_shape() -> None:
    mask = np.zeros((50, 56), bool)
    mask[10:27, 20:35] = True
    mask[15:20, 30:45] = True
    for crop_size in [(32, 64), (64, 128), (16, 32)]:
        box = CropBox.around(mask, crop_size, 1.5)
        crop = box.crop(torch.from_numpy(mask.astype(np.float32))[None, None])
        back = box.paste_back(crop[0, 0]) > 0.5
        iou = (back.numpy() & mask).sum() / (back.numpy() | mask).sum()
        assert iou > 0.9, (crop_size, iou)


def test_box_around_covers_union_with_crop_aspect() -> None:
    masks = np.zeros((2, 30, 60), bool)
    masks[0, 5:10, 5:12] = True
    masks[1, 20:24, 40:50] = True
    box = CropBox.around(masks, (32, 64), 1.5)
    assert box.width == 2 * box.height
    assert box.y0 <= 5 and box.y0 + box.height >= 24
    assert box.x0 <= 5 and box.x0 + box.width >= 50
    assert box.width >= 1.5 * 45 - 1
    with pytest.raises(AmodalkitError, match="empty"):
        CropBox.around(np.zeros((4, 4), bool), (32, 64))


def test_flow_is_rescaled_into_crop_pixels_and_moves_the_crop() -> None:
    box = CropBox(y0=0, x0=0, height=10, width=20, image_size=(10, 20), crop_size=(32, 64))
    flow = torch.zeros(1, 2, 10, 20)
    flow[:, 0], flow[:, 1] = 2.0, -1.0
    cf = box.crop_flow(flow)
    torch.testing.assert_close(cf[:, 0], torch.full((1, 32, 64), 6.4))
    torch.testing.assert_close(cf[:, 1], torch.full((1, 32, 64), -3.2))
    v = _square_video()
    clip = build_clip(v.frames, v.visible_ids, v.presence[0], v.flow, v.flow_backward, 0, (32, 64), 1.5)
    moved = forward_warp(clip["visible"][:-1, None], clip["flow"][:, :-1].permute(1, 0, 2, 3))[:, 0]
    inter = torch.minimum(moved, clip["visible"][1:]).sum()
    union = torch.maximum(moved, clip["visible"][1:]).sum()
    assert inter / union > 0.97
    back = forward_warp(clip["visible"][1:, None], clip["flow_backward"][:, 1:].permute(1, 0, 2, 3))[:, 0]
    inter = torch.minimum(back, clip["visible"][:-1]).sum()
    assert inter / torch.maximum(back, clip["visible"][:-1]).sum() > 0.97


def test_build_clip_layout_and_loss_weight() -> None:
    v = _square_video()
    clip = build_clip(v.frames, v.visible_ids, v.presence[1], v.flow, v.flow_backward, 1, (16, 32), 1.5,
                      v.amodal[1], v.amodal_annotated[1])
    t = v.num_frames
    assert clip["image"].shape == (3, t, 16, 32)
    assert clip["flow"].shape == clip["flow_backward"].shape == (2, t, 16, 32)
    for name in ("visible", "weight", "amodal"):
        assert clip[name].shape == (t, 16, 32)
    assert clip["flow"][:, -1].abs().max() == 0 and clip["flow_backward"][:, 0].abs().max() == 0
    assert clip["box"].shape == (t, 4) and (clip["box"] == clip["box"][0]).all()
    box = CropBox.from_tensor(clip["box"][0], v.size, (16, 32))
    others = torch.from_numpy(((v.visible_ids != 0) & (v.visible_ids != 2)).astype(np.float32))
    frame = torch.zeros(v.size)
    frame[box._overlap()[:2]] = 1
    expected = box.crop((frame - others)[:, None])[:, 0]
    torch.testing.assert_close(clip["weight"], expected)
    assert (clip["visible"][3:] == 0).all() and clip["amodal"][3:].amax() > 0.5


def test_visible_pixel_counts() -> None:
    v = _square_video()
    counts = visible_pixel_counts(v.visible_ids, 2)
    assert counts.shape == (2, v.num_frames)
    assert (counts[0] == 36).all() and (counts[1, :3] == 16).all() and (counts[1, 3:] == 0).all()


def test_dataset_skips_invisible_objects_and_pads(tmp_path: Path) -> None:
    write_shard(tmp_path / "s.h5", [_square_video()])
    ds = ObjectClips(tmp_path / "s.h5", ClipConfig(clip_len=3, crop_size=(16, 32)))
    keys = sorted((k, s) for _, _, k, s, _ in ds.index)
    assert keys == [(0, 0), (0, 3), (1, 0)]
    whole = ObjectClips(tmp_path / "s.h5", ClipConfig(clip_len=8, crop_size=(16, 32), with_amodal=True))
    item = whole[0]
    assert item["valid"].tolist() == [True] * 6 + [False] * 2
    assert item["amodal"].shape == (8, 16, 32) and item["annotated"][:6].all()
    crop = whole.crop_box(item)
    assert len(crop.boxes) == 8 and crop.boxes[0].image_size == (24, 40)
    assert (item["box"][6:] == item["box"][5]).all()


def test_dataset_on_shards_with_workers(cg_savos: Path) -> None:
    ds = ObjectClips(str(cg_savos / "train-*.h5"), ClipConfig(clip_len=10, crop_size=(32, 64)))
    assert len(ds) == 4 * 2 * 4
    loader = DataLoader(ds, batch_size=8, num_workers=2, collate_fn=collate_clips)
    n = 0
    for batch in loader:
        assert batch["image"].shape[1:] == (3, 10, 32, 64)
        assert 0 <= batch["weight"].min() and batch["weight"].max() <= 1 + 1e-5
        n += batch["image"].shape[0]
    assert n == len(ds)
    whole = ObjectClips(str(cg_savos / "val-*.h5"), ClipConfig(clip_len=0, crop_size=(32, 64)))
    assert len(whole) == 2 * 2 and whole[0]["valid"].shape == (40,)


def test_clip_config_errors() -> None:
    with pytest.raises(AmodalkitError):
        ClipConfig(clip_len=1)
    with pytest.raises(AmodalkitError):
        ClipConfig(enlarge=0)
    assert ClipConfig(clip_len=10).clip_starts(25) == [0, 10, 15]
    assert ClipConfig(clip_len=10, stride=5).clip_starts(20) == [0, 5, 10]
    assert ClipConfig(clip_len=0).clip_starts(25) == [0]


def test_track_mode_keeps_the_object_still_and_pastes_back() -> None:
    v = _square_video(t=8, w=48)
    clip = build_clip(v.frames, v.visible_ids, v.presence[0], v.flow, v.flow_backward, 0, (16, 16), 1.5,
                      mode="track")
    x0 = clip["box"][:, 1]
    assert (x0[1:] - x0[:-1] == 1).all() and (clip["box"][:, 0] == clip["box"][0, 0]).all()
    torch.testing.assert_close(clip["visible"][1:], clip["visible"][:-1].expand(7, 16, 16))
    inside = clip["visible"] > 0.99
    assert clip["flow"][:, :-1][:, inside[:-1]].abs().max() < 1e-5
    assert clip["flow_backward"][:, 1:][:, inside[1:]].abs().max() < 1e-5
    crop = ClipCrop.from_tensor(clip["box"], v.size, (16, 16))
    back = crop.paste_back(clip["visible"].numpy()) > 0.5
    np.testing.assert_array_equal(back, v.visible_ids == 1)
    still = ClipCrop.around(v.visible_ids == 2, v.flow, (16, 16), 1.5, mode="track")
    assert len({(b.y0, b.x0) for b in still.boxes}) == 1
    with pytest.raises(AmodalkitError, match="crop mode"):
        ClipCrop.around(v.visible_ids == 1, v.flow, (16, 16), mode="zoom")
