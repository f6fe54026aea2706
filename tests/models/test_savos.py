from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from amodalkit.errors import AmodalkitError
from amodalkit.io.checkpoint import FORMAT, read_checkpoint
from amodalkit.io.shard_read import ShardReader
from amodalkit.models.base import count_parameters
from amodalkit.models.registry import build_method, method_from_checkpoint
from amodalkit.models.savos.config import ABLATIONS, SavosConfig, build_config
from amodalkit.models.savos.loss import horizon_mask_loss, savos_loss, soft_iou
from amodalkit.models.savos.method import SavosMethod
from amodalkit.models.savos.net import SavosNet, load_savos, mean_visible_flow, save_savos
from amodalkit.models.savos.tta import TTAConfig, adapt
from amodalkit.ops.warp import forward_warp

TINY = {"crop_size": (16, 32), "channels": (8, 8, 8, 16), "hidden": 16}


def _batch(cfg: SavosConfig, b: int = 2, t: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.crop_size
    vis = (torch.rand(b, t, h, w, generator=g) > 0.6).float()
    return {"image": torch.rand(b, 3, t, h, w, generator=g), "visible": vis,
            "flow": torch.randn(b, 2, t, h, w, generator=g),
            "flow_backward": torch.randn(b, 2, t, h, w, generator=g),
            "weight": torch.ones(b, t, h, w), "valid": torch.ones(b, t, dtype=torch.bool)}


@pytest.mark.parametrize("mode", ["splat", "sample"])
def test_warp_by_integer_flow_shifts_the_mask(mode: str) -> None:
    rng = np.random.default_rng(0)
    mask = torch.from_numpy(rng.random((2, 1, 12, 16)) > 0.5).float()
    flow = torch.zeros(2, 2, 12, 16)
    flow[0, 0], flow[0, 1] = 3, -2
    flow[1, 0], flow[1, 1] = -1, 4
    out = forward_warp(mask, flow, mode)
    expected = torch.zeros_like(mask)
    expected[0, :, 0:10, 3:16] = mask[0, :, 2:12, 0:13]
    expected[1, :, 4:12, 0:15] = mask[1, :, 0:8, 1:16]
    torch.testing.assert_close(out, expected)


def test_splat_is_differentiable_and_keeps_masks_in_range() -> None:
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, 2:5, 2:5] = 1
    flow = torch.full((1, 2, 8, 8), 0.5, requires_grad=True)
    out = forward_warp(mask, flow)
    assert out.max() <= 1 + 1e-6 and abs(out.sum().item() - 9) < 1e-4
    (out * torch.arange(64.0).view(1, 1, 8, 8)).sum().backward()
    assert flow.grad is not None and flow.grad.abs().sum() > 0
    converge = torch.zeros(1, 2, 8, 8)
    converge[0, 0, :, :4] = 1.0
    assert forward_warp(torch.ones(1, 1, 8, 8), converge).max() <= 1 + 1e-6


def test_paper_config_shapes_and_size() -> None:
    cfg = SavosConfig.paper()
    net = SavosNet(cfg)
    assert cfg.num_downsamples == 4 and cfg.scaled_channels() == (32, 64, 128, 256, 256, 512)
    assert 15e6 < count_parameters(net) < 30e6
    batch = _batch(cfg, b=1, t=3)
    with torch.no_grad():
        out = net(batch)
    assert out["prediction"].shape == (1, 3, 64, 128)
    assert out["forward_motion"].shape == (1, 3, 2, 64, 128)
    assert out["backward_warped"].shape == (1, 3, 64, 128)
    assert out["has_prediction"].all()
    assert ((out["prediction"] >= 0) & (out["prediction"] <= 1)).all()


def test_small_config_shapes_and_depth() -> None:
    cfg = SavosConfig.small()
    assert cfg.crop_size == (32, 32) and cfg.num_downsamples == 3 and cfg.crop_mode == "track"
    net = SavosNet(cfg)
    assert count_parameters(net) < count_parameters(SavosNet(SavosConfig.small(width=2.0)))
    out = net(_batch(cfg))
    assert out["prediction"].shape == (2, 4, 32, 32)
    wide = SavosConfig.small(crop_size=(32, 64))
    assert SavosNet(wide)(_batch(wide, t=3))["prediction"].shape == (2, 3, 32, 64)
    assert build_config("paper", crop="32x64").channels == (64, 128, 256, 256, 512)
    assert build_config("paper", crop="128x256").channels == (32, 32, 64, 128, 256, 256, 512)


def test_cpu_preset_adds_skips_and_feedback_without_new_parameters() -> None:
    cfg = build_config("cpu")
    assert cfg.mask_feedback and cfg.skips and cfg.clip_len == 0 and cfg.crop_size == (32, 32)
    plain = SavosNet(SavosConfig.small(clip_len=0, mask_feedback=True))
    net = SavosNet(cfg)
    assert count_parameters(net) == count_parameters(plain)
    torch.manual_seed(0)
    batch = _batch(cfg, t=5)
    out = net(batch)
    assert out["prediction"].shape == (2, 5, 32, 32)
    savos_loss(out, batch, cfg)["loss"].backward()
    assert all(p.grad is not None for p in net.parameters())
    z, maps = net.mask_encoder.features(torch.zeros(3, 2, 32, 32))
    assert [m.shape[-1] for m in maps] == [16, 8, 4, 4] and z.shape == (3, cfg.hidden)


def test_config_errors() -> None:
    with pytest.raises(AmodalkitError, match="crop size"):
        SavosConfig(crop_size=(32, 48))
    with pytest.raises(AmodalkitError, match="channel counts"):
        SavosConfig(crop_size=(32, 64))
    with pytest.raises(AmodalkitError, match="unknown SaVos config"):
        SavosConfig.from_dict({**asdict(SavosConfig()), "bogus": 1})
    with pytest.raises(AmodalkitError, match="--crop"):
        build_config("small", crop="big")


@pytest.mark.parametrize("switch", (None, *ABLATIONS))
def test_every_ablation_trains(switch: str | None) -> None:
    cfg = SavosConfig(**TINY, **({switch: True} if switch else {}))
    torch.manual_seed(0)
    net = SavosNet(cfg)
    batch = _batch(cfg)
    out = net(batch)
    losses = savos_loss(out, batch, cfg)
    losses["loss"].backward()
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads)
    assert torch.isfinite(losses["loss"])
    if switch == "no_consistency":
        torch.testing.assert_close(losses["loss"], losses["mask"])
    if switch == "no_bidirectional":
        assert "backward_completion" not in out and not out["has_prediction"][:, 0].any()
    else:
        assert out["has_prediction"].all()
    expected_in = 6 - (3 if switch == "no_image" else 0) - (2 if switch == "no_flow" else 0)
    assert net.st_encoder.net[0][0].in_channels == expected_in


@pytest.mark.parametrize("feedback", [False, True])
def test_mask_feedback_carries_earlier_frames_forward_only(feedback: bool) -> None:
    """Without the LSTM, only the fed-back warped completion links a frame to earlier ones."""
    cfg = SavosConfig(**TINY, no_temporal=True, no_bidirectional=True, mask_feedback=feedback)
    torch.manual_seed(0)
    net = SavosNet(cfg).eval()
    batch = _batch(cfg, t=4)
    early, late = dict(batch), dict(batch)
    early["visible"] = batch["visible"].clone()
    early["visible"][:, 0] = 1 - early["visible"][:, 0]
    late["visible"] = batch["visible"].clone()
    late["visible"][:, 3] = 1 - late["visible"][:, 3]
    with torch.no_grad():
        base = net(batch)["forward_completion"]
        moved_early = net(early)["forward_completion"]
        moved_late = net(late)["forward_completion"]
    assert torch.allclose(base[:, 2], moved_early[:, 2]) != feedback
    torch.testing.assert_close(base[:, :3], moved_late[:, :3])


def test_motion_starts_at_the_common_fate_flow() -> None:
    cfg = SavosConfig(**TINY)
    net = SavosNet(cfg)
    batch = _batch(cfg)
    batch["visible"][0, 2] = 0
    out = net(batch)
    flow = batch["flow"].permute(0, 2, 1, 3, 4)
    mean = mean_visible_flow(flow, batch["visible"], batch["valid"])
    torch.testing.assert_close(mean[0, 2], mean[0, 1])
    torch.testing.assert_close(out["forward_motion"].mean(dim=(-2, -1)), mean)


def test_soft_iou() -> None:
    a = torch.zeros(2, 4, 4)
    a[0, :2] = 1
    b = torch.zeros(2, 4, 4)
    b[0, 1:3] = 1
    torch.testing.assert_close(soft_iou(a, b), torch.tensor([1 / 3, 1.0]), atol=1e-5, rtol=0)


def test_loss_ignores_pixels_of_other_objects() -> None:
    cfg = SavosConfig(**TINY)
    net = SavosNet(cfg)
    batch = _batch(cfg)
    out = net(batch)
    batch2 = dict(batch)
    batch2["weight"] = torch.zeros_like(batch["weight"])
    batch2["weight"][..., :8] = 1
    changed = dict(batch2)
    changed["visible"] = batch["visible"].clone()
    changed["visible"][..., 8:] = 1 - changed["visible"][..., 8:]
    a = savos_loss(out, batch2, cfg)["mask"]
    b = savos_loss(out, changed, cfg)["mask"]
    torch.testing.assert_close(a, b)


def _static_clip(t: int, hidden_for: int) -> tuple[dict, dict]:
    """A still object whose right half is covered by another object for `hidden_for` frames."""
    h, w = 8, 8
    visible = torch.zeros(1, t, h, w)
    visible[..., 2:6, 2:4] = 1
    visible[:, hidden_for + 1:, 2:6, 4:6] = 1
    weight = torch.ones(1, t, h, w)
    weight[:, 1:hidden_for + 1, :, 4:] = 0
    batch = {"visible": visible, "weight": weight, "valid": torch.ones(1, t, dtype=torch.bool)}
    fill = torch.zeros(1, t, h, w)
    fill[..., 2:6, 2:6] = 1
    out = {"forward_completion": fill.clamp(0.01, 0.99), "forward_motion": torch.zeros(1, t, 2, h, w)}
    return out, batch


def test_horizon_loss_sees_what_the_next_frame_hides() -> None:
    """Filling a region hidden at t+1 but background at t+3 costs nothing in L_M and something here."""
    out, batch = _static_clip(t=6, hidden_for=2)
    wrong = dict(out)
    wrong["forward_completion"] = out["forward_completion"].clone()
    wrong["forward_completion"][:, 0, 2:6, 6:8] = 0.99
    for horizon, worse in ((2, False), (4, True)):
        cfg = SavosConfig(**TINY, horizon=horizon)
        right_loss = horizon_mask_loss(out, batch, "forward", cfg)
        wrong_loss = horizon_mask_loss(wrong, batch, "forward", cfg)
        assert bool(wrong_loss > right_loss + 1e-3) == worse
    assert float(horizon_mask_loss(out, batch, "forward", SavosConfig(**TINY, horizon=4))) < 0.05


def test_horizon_one_is_the_paper_loss() -> None:
    cfg = SavosConfig(**TINY)
    out = SavosNet(cfg)(_batch(cfg))
    assert float(savos_loss(out, _batch(cfg), cfg)["horizon"]) == 0.0
    longer = SavosConfig(**TINY, horizon=3)
    losses = savos_loss(out, _batch(cfg), longer)
    assert float(losses["horizon"]) > 0
    torch.testing.assert_close(losses["loss"], savos_loss(out, _batch(cfg), cfg)["loss"] + losses["horizon"])


def test_checkpoint_round_trip_and_errors(tmp_path: Path) -> None:
    cfg = SavosConfig(**TINY)
    torch.manual_seed(1)
    net = SavosNet(cfg)
    path = save_savos(tmp_path / "m.safetensors", net, {"epoch": 3})
    again = load_savos(path)
    batch = _batch(cfg)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(batch)["prediction"], again(batch)["prediction"])
    method = method_from_checkpoint(path)
    assert isinstance(method, SavosMethod) and method.window == cfg.clip_len
    ck = read_checkpoint(path)
    assert ck.extra["epoch"] == 3
    bad = tmp_path / "bad.safetensors"
    meta = {"format": FORMAT, "format_version": "1", "model": "savos",
            "config": json.dumps({**asdict(cfg), "hidden": 32}), "extra": "{}"}
    save_file(ck.state_dict, str(bad), metadata=meta)
    with pytest.raises(AmodalkitError, match="config does not match the weights"):
        load_savos(bad)
    other = tmp_path / "other.safetensors"
    save_file(ck.state_dict, str(other), metadata={**meta, "model": "unet"})
    with pytest.raises(AmodalkitError, match="unet"):
        method_from_checkpoint(other)
    with pytest.raises(AmodalkitError, match="unet"):
        load_savos(other)
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(AmodalkitError):
        method_from_checkpoint(truncated)


def test_method_predicts_every_object_at_full_resolution(cg_savos: Path) -> None:
    cfg = SavosConfig(**TINY, clip_len=10)
    net = SavosNet(cfg)
    with ShardReader(cg_savos / "test-00000.h5") as r:
        video = r.read_video(0)
    for window in (0, 10):
        m = build_method("savos", model=net, window=window)
        pred = m.predict_video(video)
        assert pred.shape == (video.num_objects, video.num_frames, *video.size)
        assert pred.min() >= 0 and pred.max() <= 1
    with pytest.raises(AmodalkitError, match="checkpoint"):
        build_method("savos")


def test_tta_adapts_a_copy_and_stops(cg_savos: Path) -> None:
    cfg = SavosConfig(**TINY, clip_len=10)
    net = SavosNet(cfg)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with ShardReader(cg_savos / "test-00000.h5") as r:
        video = r.read_video(0)
    method = SavosMethod(net).with_tta(TTAConfig(max_iters=3, lr=1e-3))
    _, batch = method.video_clips(video)
    adapted, iters, history = adapt(net, batch, TTAConfig(max_iters=3, lr=1e-3))
    assert iters == 3 and len(history) == 4 and adapted is not net
    assert any(not torch.equal(before[k], v) for k, v in adapted.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    _, iters, _ = adapt(net, batch, TTAConfig(max_iters=100, lr=0.0, window=2))
    assert iters == 2
    pred = method.predict_video(video)
    assert pred.shape == (2, 40, 50, 56)
    info = method.describe()["tta"]
    assert info["videos"] == 1 and info["mean_iterations"] <= 3


def test_sizes_and_tta_settings_are_bounded() -> None:
    from amodalkit.models.baselines.framewise import FramewiseConfig
    from amodalkit.models.savos.config import SavosConfig
    from amodalkit.models.savos.method import SavosMethod
    from amodalkit.models.savos.net import SavosNet
    from amodalkit.models.savos.tta import TTAConfig

    for bad in ({"hidden": 100000}, {"width": 100.0}, {"crop_size": (2048, 2048), "channels": (4,) * 11}):
        with pytest.raises(AmodalkitError, match="at most"):
            SavosConfig.small(**bad)
    with pytest.raises(AmodalkitError, match="at most"):
        FramewiseConfig(crop_size=(4096, 4096))
    for bad in ({"max_iters": -1}, {"max_iters": 0}, {"lr": float("nan")}, {"lr": float("inf")},
                {"lr": -1.0}):
        with pytest.raises(AmodalkitError, match="--tta-"):
            TTAConfig(**bad)
    method = SavosMethod(SavosNet(SavosConfig(crop_size=(8, 8), channels=(4, 4, 4), hidden=8)))
    method.window = 0
    with pytest.raises(AmodalkitError, match="--window must be 0"):
        method.window = -5
    assert method.with_tta(TTAConfig(max_iters=1)).window == 0
