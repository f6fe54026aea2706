from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from amodalkit.cli.app import main
from amodalkit.datasets.chewing_gum import generate_video, make_config, video_seed
from amodalkit.errors import AmodalkitError
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import write_shard
from amodalkit.preprocess.flow.backends import get_flow_backend
from amodalkit.preprocess.flow.flownet2 import (
    SUBNETS,
    FlowNet2,
    channel_norm,
    correlation,
    estimate_flow,
    load_flownet2,
    official_state_dict_keys,
    resample2d,
)

# Facts read off NVIDIA/flownet2-pytorch (models.py, networks/*.py), independent of our code.
OFFICIAL_PARAMETER_COUNT = 162_518_834
OFFICIAL_SHAPES = {
    "flownetc.conv1.0.weight": (64, 3, 7, 7),
    "flownetc.conv_redir.0.weight": (32, 256, 1, 1),
    "flownetc.conv3_1.0.weight": (256, 473, 3, 3),
    "flownetc.upsampled_flow6_to_5.bias": (2,),
    "flownetc.predict_flow2.weight": (2, 194, 3, 3),
    "flownets_1.conv1.0.weight": (64, 12, 7, 7),
    "flownets_2.deconv2.0.weight": (386, 64, 4, 4),
    "flownets_d.conv0.0.weight": (64, 6, 3, 3),
    "flownets_d.inter_conv5.0.weight": (512, 1026, 3, 3),
    "flownets_d.predict_flow5.weight": (2, 512, 3, 3),
    "flownetfusion.conv0.0.weight": (64, 11, 3, 3),
    "flownetfusion.inter_conv0.0.weight": (16, 82, 3, 3),
    "flownetfusion.predict_flow0.weight": (2, 16, 3, 3),
}


def correlation_loop(a: torch.Tensor, b: torch.Tensor, max_displacement: int, stride2: int) -> torch.Tensor:
    """The CUDA kernel's arithmetic, one output value at a time."""
    n, c, h, w = a.shape
    r = max_displacement // stride2
    d = 2 * r + 1
    out = torch.zeros(n, d * d, h, w, dtype=torch.float64)
    for bi in range(n):
        for y in range(h):
            for x in range(w):
                for tj in range(-r, r + 1):
                    for ti in range(-r, r + 1):
                        y2, x2 = y + tj * stride2, x + ti * stride2
                        if 0 <= y2 < h and 0 <= x2 < w:
                            acc = sum(float(a[bi, ch, y, x]) * float(b[bi, ch, y2, x2]) for ch in range(c))
                            out[bi, (tj + r) * d + (ti + r), y, x] = acc / c
    return out


def resample_loop(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Resample2d's CUDA kernel (bilinear, indices clamped to the image), one value at a time."""
    n, c, h, w = image.shape
    out = torch.zeros_like(image, dtype=torch.float64)
    for bi in range(n):
        for y in range(h):
            for x in range(w):
                xf = x + float(flow[bi, 0, y, x])
                yf = y + float(flow[bi, 1, y, x])
                alpha, beta = xf - np.floor(xf), yf - np.floor(yf)
                xl, xr = (min(max(int(np.floor(xf)) + k, 0), w - 1) for k in (0, 1))
                yt, yb = (min(max(int(np.floor(yf)) + k, 0), h - 1) for k in (0, 1))
                for ch in range(c):
                    out[bi, ch, y, x] = ((1 - alpha) * (1 - beta) * image[bi, ch, yt, xl]
                                         + alpha * (1 - beta) * image[bi, ch, yt, xr]
                                         + (1 - alpha) * beta * image[bi, ch, yb, xl]
                                         + alpha * beta * image[bi, ch, yb, xr])
    return out


@pytest.fixture(scope="module")
def model() -> FlowNet2:
    torch.manual_seed(0)
    return FlowNet2().eval()


def official_layout_checkpoint(path: Path, model: FlowNet2, drop: int = 0, extra: bool = False,
                               scale: float = 1e-3) -> Path:
    """Write {'state_dict', 'epoch', 'best_EPE', 'arch'} as flownet2-pytorch's main.py saves it.

    ``best_EPE`` is a numpy float, which plain ``weights_only`` loading refuses.

    Each tensor is one distinct constant broadcast to its shape (zero strides), so the file is
    tiny but every key has the official name and shape and a value the test can recognize.
    """
    state = {k: torch.full((), i * scale).expand(v.shape)
             for i, (k, v) in enumerate(model.state_dict().items())}
    for key in list(state)[:drop]:
        del state[key]
    if extra:
        state["flownetc.corr.weight"] = torch.zeros(3)
    torch.save({"arch": "FlowNet2", "epoch": 123, "best_EPE": np.float64(1.234), "state_dict": state}, path)
    return path


def test_correlation_matches_a_direct_loop() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 5, 6, generator=g), torch.randn(2, 3, 5, 6, generator=g)
    for max_disp, stride2 in ((4, 2), (2, 1), (20, 2)):
        fast = correlation(a, b, max_disp, stride2)
        slow = correlation_loop(a, b, max_disp, stride2)
        assert fast.shape == slow.shape
        torch.testing.assert_close(fast.double(), slow, atol=1e-5, rtol=1e-5)
    assert correlation(a, b).shape == (2, 441, 5, 6)


def test_resample2d_and_channel_norm_match_the_cuda_kernels() -> None:
    g = torch.Generator().manual_seed(1)
    image = torch.randn(1, 2, 5, 7, generator=g)
    flow = torch.randn(1, 2, 5, 7, generator=g) * 3
    torch.testing.assert_close(resample2d(image, flow).double(), resample_loop(image, flow),
                               atol=1e-5, rtol=1e-5)
    x = torch.randn(2, 3, 4, 4, generator=g)
    torch.testing.assert_close(channel_norm(x), x.pow(2).sum(1, keepdim=True).sqrt())


def test_official_key_layout(model: FlowNet2) -> None:
    keys = official_state_dict_keys()
    state = model.state_dict()
    assert keys == list(state)
    assert len(keys) == 220
    assert {k.split(".")[0] for k in keys} == set(SUBNETS)
    assert sum(v.numel() for v in state.values()) == OFFICIAL_PARAMETER_COUNT
    for key, shape in OFFICIAL_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    assert "flownets_1.upsampled_flow6_to_5.bias" not in state


def test_official_checkpoint_loads(model: FlowNet2, tmp_path: Path) -> None:
    path = official_layout_checkpoint(tmp_path / "FlowNet2_checkpoint.pth.tar", model)
    loaded = load_flownet2(path)
    assert not loaded.training
    for i, (key, value) in enumerate(loaded.state_dict().items()):
        assert value.shape == model.state_dict()[key].shape
        assert float(value.flatten()[0]) == pytest.approx(i / 1000.0)
    checkpoint = torch.load(path, weights_only=False)
    legacy = tmp_path / "legacy.pth.tar"
    torch.save(checkpoint, legacy, _use_new_zipfile_serialization=False)
    key = "flownetfusion.predict_flow0.bias"
    expect = list(model.state_dict()).index(key) / 1000.0
    assert float(load_flownet2(legacy).state_dict()[key][0]) == pytest.approx(expect)
    bare = tmp_path / "bare.pth"
    torch.save({f"module.{k}": v for k, v in checkpoint["state_dict"].items()}, bare)
    load_flownet2(bare)


def test_bad_checkpoints_give_one_clear_error(model: FlowNet2, tmp_path: Path) -> None:
    cases = {
        "missing": (official_layout_checkpoint(tmp_path / "missing.pth.tar", model, drop=2),
                    "2 missing keys (first: flownetc.conv1.0.weight, flownetc.conv1.0.bias)"),
        "extra": (official_layout_checkpoint(tmp_path / "extra.pth.tar", model, extra=True),
                  "1 unexpected keys (first: flownetc.corr.weight)"),
        "junk": (tmp_path / "junk.pth.tar", "not a PyTorch checkpoint"),
        "other": (tmp_path / "other.pth.tar", "220 missing keys"),
        "nothere": (tmp_path / "nothere.pth.tar", "not found"),
    }
    (tmp_path / "junk.pth.tar").write_bytes(b"this is not a checkpoint" * 10)
    torch.save({"state_dict": {"conv.weight": torch.zeros(2)}}, tmp_path / "other.pth.tar")
    for path, needle in cases.values():
        with pytest.raises(AmodalkitError) as info:
            load_flownet2(path)
        assert str(path) in str(info.value) and needle in str(info.value)
    shape = {k: v for k, v in torch.load(cases["extra"][0], weights_only=False)["state_dict"].items()
             if k != "flownetc.corr.weight"}
    shape["flownetc.conv1.0.bias"] = torch.zeros(3)
    torch.save({"state_dict": shape}, tmp_path / "shape.pth.tar")
    with pytest.raises(AmodalkitError, match="shape mismatches"):
        load_flownet2(tmp_path / "shape.pth.tar")


def test_cli_checkpoint_with_missing_keys(model: FlowNet2, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    video = generate_video(make_config("savos2022", frames=2), video_seed(0, "test", 0))
    shard = write_shard(tmp_path / "s.h5", [video])
    bad = official_layout_checkpoint(tmp_path / "FlowNet2_checkpoint.pth.tar", model, drop=1)
    code = main(["flow", str(shard), "--backend", "flownet2", "--checkpoint", str(bad), "--device", "cpu"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1
    assert str(bad) in lines[0] and "flownetc.conv1.0.weight" in lines[0]
    with ShardReader(shard) as r:
        assert r.meta(0)["flow_backend"] == "exact"


def test_forward_pass_on_a_tiny_input(model: FlowNet2) -> None:
    g = torch.Generator().manual_seed(2)
    pair = torch.rand(1, 3, 2, 64, 64, generator=g) * 255
    with torch.inference_mode():
        flow = model(pair)
    assert flow.shape == (1, 2, 64, 64)
    assert torch.isfinite(flow).all()
    with pytest.raises(AmodalkitError, match="multiples of 64"):
        model(torch.zeros(1, 3, 2, 60, 64))


class ConstantFlow(nn.Module):
    """Stands in for FlowNet2: flow (1, 2) px everywhere, recording the input size."""

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        self.seen = tuple(pair.shape)
        b, _, _, h, w = pair.shape
        return torch.stack((torch.ones(b, h, w), 2 * torch.ones(b, h, w)), dim=1)


def test_sizes_not_multiple_of_64_are_resized_and_flow_rescaled() -> None:
    fake = ConstantFlow()
    flow = estimate_flow(fake, torch.zeros(2, 3, 50, 100), torch.zeros(2, 3, 50, 100))
    assert fake.seen == (2, 3, 2, 64, 128)
    assert flow.shape == (2, 2, 50, 100)
    torch.testing.assert_close(flow[:, 0], torch.full((2, 50, 100), 100 / 128))
    torch.testing.assert_close(flow[:, 1], torch.full((2, 50, 100), 2 * 50 / 64))
    flow = estimate_flow(fake, torch.zeros(1, 3, 64, 128), torch.zeros(1, 3, 64, 128))
    assert fake.seen == (1, 3, 2, 64, 128) and torch.equal(flow[0, 0], torch.ones(64, 128))


def test_flownet2_backend_end_to_end(model: FlowNet2, tmp_path: Path) -> None:
    path = official_layout_checkpoint(tmp_path / "FlowNet2_checkpoint.pth.tar", model, scale=1e-6)
    backend = get_flow_backend("flownet2", checkpoint=path, device="cpu")
    assert backend.name == "flownet2"
    frames = np.random.default_rng(0).integers(0, 255, (3, 30, 40, 3), dtype=np.uint8)
    flow = backend.compute(frames, batch_size=2)
    assert flow.shape == (2, 30, 40, 2) and flow.dtype == np.float32 and np.isfinite(flow).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_gpu_matches_cpu(model: FlowNet2) -> None:
    pair = torch.rand(1, 3, 2, 128, 128, generator=torch.Generator().manual_seed(3)) * 255
    with torch.inference_mode():
        cpu = model(pair)
        gpu = model.to("cuda")(pair.cuda()).cpu()
    model.to("cpu")
    torch.testing.assert_close(gpu, cpu, atol=1e-2, rtol=1e-3)
