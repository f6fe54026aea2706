from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from amodalkit.data.frame_crops import FrameCropConfig, FrameCrops
from amodalkit.errors import AmodalkitError
from amodalkit.io.checkpoint import save_checkpoint
from amodalkit.io.shard_read import ShardReader
from amodalkit.models.baselines.framewise import save_framewise
from amodalkit.models.baselines.unet import UNet, UNetConfig, UNetMethod, unet_loss
from amodalkit.models.registry import build_method, method_from_checkpoint

TINY = UNetConfig(crop_size=(16, 16), channels=(4, 8, 8))


def test_config_defaults_take_the_image() -> None:
    cfg = UNetConfig()
    assert cfg.use_image and cfg.in_channels == 5 and cfg.crop_size == (32, 32)
    assert UNetConfig(use_image=False).in_channels == 2
    assert UNetConfig.from_dict(asdict(TINY)) == TINY
    with pytest.raises(AmodalkitError, match="multiples of 4"):
        UNetConfig(crop_size=(30, 32), channels=(4, 8, 8))


def test_loss_is_supervised_by_amodal_and_falls(cg_savos: Path) -> None:
    torch.manual_seed(0)
    ds = FrameCrops(cg_savos / "train-00000.h5", FrameCropConfig(crop_size=(16, 16), with_amodal=True))
    loader = DataLoader(ds, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    batch = next(iter(loader))
    net = UNet(TINY)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = unet_loss(net, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        fitted = float(unet_loss(net, batch))
        against_visible = float(unet_loss(net, {**batch, "amodal": batch["visible"]}))
    assert against_visible > fitted + 0.01, (against_visible, fitted)


def test_predict_video_shape_and_fields(cg_savos: Path) -> None:
    torch.manual_seed(0)
    method = UNetMethod(UNet(TINY), occluders_only=True)
    assert method.fields == ("frames",)
    with ShardReader(cg_savos / "test-00001.h5") as r:
        video = r.read_video(0, method.fields)
    pred = method.predict_video(video)
    vis = video.visible_masks()
    assert pred.shape == vis.shape == (video.num_objects, video.num_frames, *video.size)
    assert pred.min() >= 0 and pred.max() <= 1
    assert np.all(pred[vis] == 1)


def test_checkpoint_round_trip(cg_savos: Path, tmp_path: Path) -> None:
    torch.manual_seed(2)
    net = UNet(TINY).eval()
    path = save_framewise(tmp_path / "u.safetensors", "unet", net)
    method = method_from_checkpoint(path)
    assert isinstance(method, UNetMethod)
    assert method.describe() == {"method": "unet", "checkpoint": str(path), "occluders_only": False,
                                 "config": asdict(TINY)}
    with ShardReader(cg_savos / "test-00000.h5") as r:
        video = r.read_video(2)
    np.testing.assert_allclose(method.predict_video(video), UNetMethod(net).predict_video(video), atol=1e-6)
    assert isinstance(build_method("unet", checkpoint=path), UNetMethod)
    small = UNet(UNetConfig(crop_size=(16, 16), channels=(4, 8)))
    bad = save_checkpoint(tmp_path / "bad.safetensors", "unet", asdict(TINY), small.state_dict())
    with pytest.raises(AmodalkitError, match="does not match the weights") as exc:
        method_from_checkpoint(bad)
    assert "bad.safetensors" in str(exc.value)
    foreign = save_checkpoint(tmp_path / "f.safetensors", "unet", {**asdict(TINY), "depth": 3},
                              net.state_dict())
    with pytest.raises(AmodalkitError, match="unknown UNetConfig config keys"):
        method_from_checkpoint(foreign)
