"""Batched inference (crop, predict, paste on the device, several videos per forward) against the
per-object loops it replaced (:mod:`amodalkit.models.reference`), device placement and TTA chunks."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

from amodalkit import device as device_ops
from amodalkit.evaluation.evaluate import evaluate_method
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shards import Video, expand_shard_paths
from amodalkit.models.baselines.deocclusion import DeocclusionConfig, DeocclusionMethod, DeocclusionNet
from amodalkit.models.baselines.unet import UNet, UNetConfig, UNetMethod
from amodalkit.models.reference import framewise_per_object, savos_per_object
from amodalkit.models.savos.config import SavosConfig
from amodalkit.models.savos.method import SavosMethod
from amodalkit.models.savos.net import SavosNet
from amodalkit.models.savos.tta import TTAConfig, adapt
from amodalkit.ops.boxes import CropBox
from amodalkit.ops.clip_cut import build_clip, collate_clips, video_clip_batch
from amodalkit.ops.crops import crop_maps, crop_matrices, paste_clips, paste_maps, paste_matrices
from amodalkit.ops.frame_cut import crop_object_frame, video_frame_crop_batch

TINY = {"crop_size": (16, 32), "channels": (8, 8, 8, 16), "hidden": 16}
TRACK = SavosConfig.cpu(channels=(8, 8, 8, 8, 8), hidden=16)


def _videos(root: Path, fields: tuple[str, ...] = ("frames", "flow", "flow_backward")) -> list[Video]:
    out = []
    for path in expand_shard_paths(str(root / "test-*.h5")):
        with ShardReader(path) as r:
            out += [r.read_video(i, fields) for i in range(len(r))]
    return out


def _random_boxes(n: int, frame: tuple[int, int], crop: tuple[int, int], seed: int = 0) -> list[CropBox]:
    """Boxes of every size class: inside, across and beyond the frame edges, up- and downscaled."""
    rng = np.random.default_rng(seed)
    boxes = []
    for _ in range(n):
        h = int(rng.integers(2, 3 * max(frame)))
        w = max(2, round(h * crop[1] / crop[0]))
        y0, x0 = int(rng.integers(-h, frame[0])), int(rng.integers(-w, frame[1]))
        boxes.append(CropBox(y0, x0, h, w, frame, crop))
    return boxes


@pytest.mark.parametrize("crop", [(16, 16), (16, 32)])
def test_crop_and_paste_matrices_equal_cropbox(crop: tuple[int, int]) -> None:
    frame = (23, 31)
    boxes = _random_boxes(40, frame, crop)
    g = torch.Generator().manual_seed(0)
    x, p = torch.rand(40, 3, *frame, generator=g), torch.rand(40, 1, *crop, generator=g)
    tensor = torch.stack([b.as_tensor() for b in boxes])
    cropped = crop_maps(x, *crop_matrices(tensor, frame, crop))
    pasted = paste_maps(p, *paste_matrices(tensor, frame, crop))
    for i, b in enumerate(boxes):
        torch.testing.assert_close(cropped[i], b.crop(x[i:i + 1])[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(pasted[i, 0], b.paste_back(p[i, 0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["clip", "track"])
@pytest.mark.parametrize("length", [0, 10])
def test_clip_batch_equals_build_clip(cg_savos: Path, mode: str, length: int) -> None:
    video = _videos(cg_savos)[0]
    length = length or video.num_frames
    starts = list(range(0, video.num_frames - length + 1, 5))
    items = []
    for k in range(video.num_objects):
        for s in starts:
            sel, fsel = slice(s, s + length), slice(s, s + length - 1)
            if (video.visible_ids[sel] == k + 1).any():
                items.append(build_clip(video.frames[sel], video.visible_ids[sel], video.presence[k, sel],
                                        video.flow[fsel], video.flow_backward[fsel], k, (16, 32), 1.5,
                                        mode=mode))
    ref = collate_clips(items)
    where, batch = video_clip_batch(video, length, starts, (16, 32), 1.5, mode)
    assert len(where) == len(items) and set(batch) == set(ref)
    for name, value in ref.items():
        assert batch[name].dtype == value.dtype and batch[name].shape == value.shape
        torch.testing.assert_close(batch[name], value, atol=1e-5, rtol=0)


def test_frame_crop_batch_equals_crop_object_frame(cg_savos: Path) -> None:
    video = _videos(cg_savos)[1]
    pairs, batch = video_frame_crop_batch(video, (16, 16), 1.5, with_image=True)
    assert len(pairs) == int((video.visible_masks().any(axis=(-2, -1))).sum())
    for i, (k, t) in enumerate(pairs):
        ref = crop_object_frame(video.visible_ids[t], int(k), (16, 16), 1.5, frame=video.frames[t])
        for name, value in ref.items():
            torch.testing.assert_close(batch[name][i], value, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("config", "window"), [(SavosConfig(**TINY, clip_len=10), 10),
                                                (SavosConfig(**TINY, clip_len=10, no_bidirectional=True), 6),
                                                (TRACK, 0)])
def test_savos_batched_equals_per_object_loop(cg_savos: Path, config: SavosConfig, window: int) -> None:
    torch.manual_seed(0)
    videos = _videos(cg_savos)
    method = SavosMethod(SavosNet(config), window=window, batch_size=3)
    ref = [savos_per_object(method, v) for v in videos]
    for got, want in zip(method.predict_videos(videos), ref, strict=True):
        assert got.shape == want.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    np.testing.assert_allclose(method.predict_video(videos[0]), ref[0], atol=1e-5, rtol=0)
    method.occluders_only = False
    np.testing.assert_allclose(method.predict_video(videos[1]), savos_per_object(method, videos[1]),
                               atol=1e-5, rtol=0)


@pytest.mark.parametrize("make", [
    lambda: UNetMethod(UNet(UNetConfig(crop_size=(16, 16), channels=(4, 8, 8))), batch_size=7,
                       videos_per_batch=3),
    lambda: DeocclusionMethod(DeocclusionNet(DeocclusionConfig(crop_size=(16, 16), channels=(4, 8, 8)))),
])
def test_framewise_batched_equals_per_object_loop(cg_savos: Path, make: object) -> None:
    torch.manual_seed(0)
    method = make()
    videos = _videos(cg_savos, method.fields)
    empty = videos[0].evolve(visible_ids=np.zeros_like(videos[0].visible_ids))
    videos = [*videos, empty]
    for got, v in zip(method.predict_videos(videos), videos, strict=True):
        np.testing.assert_allclose(got, framewise_per_object(method, v), atol=1e-5, rtol=0)
    assert not method.predict_video(empty).any()


def test_evaluate_scores_the_same_in_groups_of_videos(cg_savos: Path) -> None:
    torch.manual_seed(0)
    method = SavosMethod(SavosNet(SavosConfig(**TINY, clip_len=10)))
    paths = expand_shard_paths(str(cg_savos / "test-*.h5"))
    calls: list[int] = []
    batched = method.predict_videos
    method.predict_videos = lambda videos: calls.append(len(videos)) or batched(videos)
    method.videos_per_batch = 4
    grouped = evaluate_method(method, paths, quiet=True)
    assert calls == [4, 2]
    method.videos_per_batch = 1
    single = evaluate_method(method, paths, quiet=True)
    assert calls[2:] == [1] * 6
    for key in ("frame_miou_full", "frame_miou_occluded", "object_miou_full", "n_object_frames"):
        assert grouped[key] == pytest.approx(single[key], abs=1e-9)


def test_tta_in_chunks_equals_one_batch(cg_savos: Path) -> None:
    torch.manual_seed(0)
    video = _videos(cg_savos)[0]
    for config in (SavosConfig(**TINY, clip_len=10), SavosConfig(**TINY, clip_len=10, horizon=3)):
        net = SavosNet(config)
        _, batch = SavosMethod(net, window=10).video_clips(video)
        assert batch["valid"].shape[0] > 3
        whole, iters, history = adapt(net, batch, TTAConfig(max_iters=3, lr=1e-3))
        chunked, iters_c, history_c = adapt(net, batch, TTAConfig(max_iters=3, lr=1e-3, chunk_size=3))
        assert iters == iters_c == 3
        np.testing.assert_allclose(history_c, history, atol=1e-6)
        for (name, a), b in zip(whole.state_dict().items(), chunked.state_dict().values()):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)
    with pytest.raises(Exception, match="tta-chunk"):
        TTAConfig(chunk_size=0)


def test_inference_tensors_land_on_the_requested_device(cg_savos: Path) -> None:
    """The whole device path runs on ``meta``, which also refuses any read-back of a device value."""
    video = _videos(cg_savos)[0]
    method = SavosMethod(SavosNet(TRACK), device="meta")
    where, batch = method.video_clips(video)
    for name, value in batch.items():
        assert value.device.type == "meta", name
        assert value.dtype == {"valid": torch.bool, "box": torch.int64}.get(name, torch.float32), name
    preds = method.predict_clips(method.runner, batch)
    assert preds.device.type == "meta" and preds.dtype == torch.float32
    assert preds.shape == (len(where), video.num_frames, *TRACK.crop_size)
    boxes = torch.stack([crop.as_tensor() for _, _, crop in where])
    ks, ss = torch.tensor([k for k, _, _ in where]), torch.tensor([s for _, s, _ in where])
    pasted = paste_clips(preds, boxes, ks, ss, (video.num_objects, video.num_frames, *video.size))
    assert pasted.device.type == "meta" and pasted.shape == (video.num_objects, video.num_frames, *video.size)
    unet = UNetMethod(UNet(UNetConfig(crop_size=(16, 16), channels=(4, 8, 8))), device="meta")
    _, crops = unet.crops(video)
    assert all(v.device.type == "meta" and v.dtype == torch.float32 for k, v in crops.items() if k != "box")
    probs = unet.predict_crops({k: v for k, v in crops.items() if k != "box"})
    assert probs.device.type == "meta" and probs.dtype == torch.float32


def test_no_host_read_back_in_the_batch_loop(cg_savos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    video = _videos(cg_savos)[0]
    savos = SavosMethod(SavosNet(SavosConfig(**TINY, clip_len=10)), batch_size=2)
    _, batch = savos.video_clips(video)
    unet = UNetMethod(UNet(UNetConfig(crop_size=(16, 16), channels=(4, 8, 8))), batch_size=16)
    _, crops = unet.crops(video)
    crops = {k: v for k, v in crops.items() if k != "box"}

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("host read-back inside the batch loop")

    for name in ("item", "cpu", "tolist", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    savos.predict_clips(savos.runner, batch)
    unet.predict_crops(crops)


def test_cuda_path_pins_copies_without_blocking_and_autocasts(monkeypatch: pytest.MonkeyPatch) -> None:
    assert device_ops.autocast_dtype("cpu") is None
    assert isinstance(device_ops.inference_autocast("cpu"), contextlib.nullcontext)
    for bf16, dtype in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        assert device_ops.autocast_dtype("cuda:1") == dtype
    pinned, copies = [], []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(self.shape) or self)
    to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **kw: copies.append(kw) or to(self, *a, **kw))
    out = device_ops.to_device(np.arange(6, dtype=np.uint16).reshape(2, 3), "cpu")
    assert out.dtype == torch.uint16 and not pinned and copies == [{"non_blocking": True}]
    monkeypatch.setattr(device_ops, "is_cuda", lambda device: True)
    out = device_ops.to_device(np.zeros((4, 5), np.float32), "cpu")
    assert pinned == [(4, 5)] and copies[-1] == {"non_blocking": True} and out.dtype == torch.float32
