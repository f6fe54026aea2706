"""FlowNet2 (Ilg et al., CVPR 2017) in plain PyTorch, compatible with NVIDIA/flownet2-pytorch.

The network is FlowNetC -> FlowNetS -> FlowNetS (the large-displacement stack) beside
FlowNetSD (small displacements), merged by FlowNetFusion, exactly as in the official
``models.FlowNet2`` (``batchNorm=False``, ``div_flow=20``, ``rgb_max=255``). Module and
parameter names are those of the official checkpoint ``FlowNet2_checkpoint.pth.tar``, whose
``state_dict`` keys start with ``flownetc.``, ``flownets_1.``, ``flownets_2.``,
``flownets_d.`` and ``flownetfusion.``.

The official custom CUDA ops are replaced by tensor ops, so the model runs on CPU and GPU:

* ``Correlation(pad_size=20, kernel_size=1, max_displacement=20, stride1=1, stride2=2)``
  -> :func:`correlation`: 21 x 21 shifted products averaged over channels, computed as
  one batched matrix product per vertical shift;
* ``Resample2d`` (bilinear, edge-clamped) -> ``grid_sample`` with border padding;
* ``ChannelNorm`` -> ``torch.norm`` over channels.

Inputs whose sides are not multiples of 64 are resized up to the next multiple of 64 and
the flow is resized back and rescaled (:func:`estimate_flow`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from amodalkit.errors import AmodalkitError
from amodalkit.io.torch_files import load_error_reason, load_plain, state_dict_mismatch
from amodalkit.ops.warp import warp_backward_torch

DIV_FLOW = 20.0
RGB_MAX = 255.0
MAX_DISPLACEMENT = 20
CORR_STRIDE2 = 2
SUBNETS = ("flownetc", "flownets_1", "flownets_2", "flownets_d", "flownetfusion")


def conv(in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (with bias) + LeakyReLU(0.1): the official ``conv(batchNorm=False, ...)``."""
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size, stride, (kernel_size - 1) // 2, bias=True),
        nn.LeakyReLU(0.1, inplace=True),
    )


def i_conv(in_planes: int, out_planes: int) -> nn.Sequential:
    """Conv 3x3 without activation: the official ``i_conv(batchNorm=False, ...)``."""
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 3, 1, 1, bias=True))


def predict_flow(in_planes: int) -> nn.Conv2d:
    """3x3 conv to a 2-channel flow."""
    return nn.Conv2d(in_planes, 2, kernel_size=3, stride=1, padding=1, bias=True)


def deconv(in_planes: int, out_planes: int) -> nn.Sequential:
    """Transposed conv (x2) + LeakyReLU(0.1)."""
    return nn.Sequential(nn.ConvTranspose2d(in_planes, out_planes, 4, 2, 1, bias=True),
                         nn.LeakyReLU(0.1, inplace=True))


def correlation(a: torch.Tensor, b: torch.Tensor, max_displacement: int = MAX_DISPLACEMENT,
                stride2: int = CORR_STRIDE2) -> torch.Tensor:
    """FlowNetC's correlation (kernel 1, stride1 1, padding = max_displacement), by shifted products.

    For each vertical shift, one batched matrix product of the rows of `a` with the shifted,
    zero-padded rows of `b` gives every horizontal pairing; the wanted shifts are a strided
    band of it (no custom kernel, differentiable, CPU and GPU).

    Args:
        a: ``(B, C, H, W)`` features of the first image.
        b: ``(B, C, H, W)`` features of the second image.
        max_displacement: largest shift in pixels.
        stride2: step between shifts.

    Returns:
        ``(B, D*D, H, W)`` with ``D = 2 * (max_displacement // stride2) + 1``; channel
        ``(j + r) * D + (i + r)`` (``r = max_displacement // stride2``) holds
        ``mean_c a[c, y, x] * b[c, y + j*stride2, x + i*stride2]``, zero outside ``b``.
    """
    n, c, h, w = a.shape
    r = max_displacement // stride2
    pad = r * stride2
    w2 = w + 2 * pad
    bp = F.pad(b, (pad, pad, pad, pad))
    a_rows = a.permute(0, 2, 3, 1)
    bands = []
    for j in range(-r, r + 1):
        y0 = pad + j * stride2
        pairs = torch.matmul(a_rows, bp[:, :, y0:y0 + h].permute(0, 2, 1, 3)).contiguous()
        bands.append(pairs.as_strided((n, h, w, 2 * r + 1), (h * w * w2, w * w2, w2 + 1, stride2)))
    return torch.stack(bands, dim=3).reshape(n, h, w, -1).permute(0, 3, 1, 2) / c


def resample2d(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """The official Resample2d: ``(B, C, H, W)`` image warped by ``(B, 2, H, W)`` flow, edges clamped."""
    return warp_backward_torch(image, flow, padding="border")


def channel_norm(x: torch.Tensor) -> torch.Tensor:
    """The official ChannelNorm: ``(B, C, H, W)`` -> ``(B, 1, H, W)`` L2 norm over channels."""
    return torch.norm(x, p=2, dim=1, keepdim=True)


def _init_official(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            if m.bias is not None:
                nn.init.uniform_(m.bias)
            nn.init.xavier_uniform_(m.weight)


class _Decoder(nn.Module):
    """The refinement half shared by FlowNetC and FlowNetS (deconv5..2, predict_flow6..2)."""

    def _init_decoder(self, upsample_bias: bool) -> None:
        self.deconv5 = deconv(1024, 512)
        self.deconv4 = deconv(1026, 256)
        self.deconv3 = deconv(770, 128)
        self.deconv2 = deconv(386, 64)
        self.predict_flow6 = predict_flow(1024)
        self.predict_flow5 = predict_flow(1026)
        self.predict_flow4 = predict_flow(770)
        self.predict_flow3 = predict_flow(386)
        self.predict_flow2 = predict_flow(194)
        self.upsampled_flow6_to_5 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=upsample_bias)
        self.upsampled_flow5_to_4 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=upsample_bias)
        self.upsampled_flow4_to_3 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=upsample_bias)
        self.upsampled_flow3_to_2 = nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=upsample_bias)

    def _decode(self, conv2: torch.Tensor, conv3: torch.Tensor, conv4: torch.Tensor, conv5: torch.Tensor,
                conv6: torch.Tensor) -> torch.Tensor:
        flow6 = self.predict_flow6(conv6)
        concat5 = torch.cat((conv5, self.deconv5(conv6), self.upsampled_flow6_to_5(flow6)), 1)
        flow5 = self.predict_flow5(concat5)
        concat4 = torch.cat((conv4, self.deconv4(concat5), self.upsampled_flow5_to_4(flow5)), 1)
        flow4 = self.predict_flow4(concat4)
        concat3 = torch.cat((conv3, self.deconv3(concat4), self.upsampled_flow4_to_3(flow4)), 1)
        flow3 = self.predict_flow3(concat3)
        concat2 = torch.cat((conv2, self.deconv2(concat3), self.upsampled_flow3_to_2(flow3)), 1)
        return self.predict_flow2(concat2)


class FlowNetC(_Decoder):
    """FlowNetC: ``(B, 6, H, W)`` (two normalized RGB images) -> flow2 ``(B, 2, H/4, W/4)`` / div_flow."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = conv(3, 64, kernel_size=7, stride=2)
        self.conv2 = conv(64, 128, kernel_size=5, stride=2)
        self.conv3 = conv(128, 256, kernel_size=5, stride=2)
        self.conv_redir = conv(256, 32, kernel_size=1, stride=1)
        self.corr_activation = nn.LeakyReLU(0.1, inplace=True)
        self.conv3_1 = conv(473, 256)
        self.conv4 = conv(256, 512, stride=2)
        self.conv4_1 = conv(512, 512)
        self.conv5 = conv(512, 512, stride=2)
        self.conv5_1 = conv(512, 512)
        self.conv6 = conv(512, 1024, stride=2)
        self.conv6_1 = conv(1024, 1024)
        self._init_decoder(upsample_bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 6, H, W)`` -> ``(B, 2, H/4, W/4)``."""
        n = x.shape[0]
        feats = self.conv1(torch.cat((x[:, :3], x[:, 3:]), dim=0))
        conv2 = self.conv2(feats)
        conv3 = self.conv3(conv2)
        conv2a, conv3a, conv3b = conv2[:n], conv3[:n], conv3[n:]
        corr = self.corr_activation(correlation(conv3a, conv3b))
        conv3_1 = self.conv3_1(torch.cat((self.conv_redir(conv3a), corr), 1))
        conv4 = self.conv4_1(self.conv4(conv3_1))
        conv5 = self.conv5_1(self.conv5(conv4))
        conv6 = self.conv6_1(self.conv6(conv5))
        return self._decode(conv2a, conv3_1, conv4, conv5, conv6)


class FlowNetS(_Decoder):
    """FlowNetS: ``(B, 12, H, W)`` -> flow2 ``(B, 2, H/4, W/4)`` / div_flow."""

    def __init__(self, input_channels: int = 12) -> None:
        super().__init__()
        self.conv1 = conv(input_channels, 64, kernel_size=7, stride=2)
        self.conv2 = conv(64, 128, kernel_size=5, stride=2)
        self.conv3 = conv(128, 256, kernel_size=5, stride=2)
        self.conv3_1 = conv(256, 256)
        self.conv4 = conv(256, 512, stride=2)
        self.conv4_1 = conv(512, 512)
        self.conv5 = conv(512, 512, stride=2)
        self.conv5_1 = conv(512, 512)
        self.conv6 = conv(512, 1024, stride=2)
        self.conv6_1 = conv(1024, 1024)
        self._init_decoder(upsample_bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W)`` -> ``(B, 2, H/4, W/4)``."""
        conv2 = self.conv2(self.conv1(x))
        conv3 = self.conv3_1(self.conv3(conv2))
        conv4 = self.conv4_1(self.conv4(conv3))
        conv5 = self.conv5_1(self.conv5(conv4))
        conv6 = self.conv6_1(self.conv6(conv5))
        return self._decode(conv2, conv3, conv4, conv5, conv6)


class FlowNetSD(nn.Module):
    """FlowNetSD (small displacements): ``(B, 6, H, W)`` -> flow2 ``(B, 2, H/4, W/4)`` * div_flow."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = conv(6, 64)
        self.conv1 = conv(64, 64, stride=2)
        self.conv1_1 = conv(64, 128)
        self.conv2 = conv(128, 128, stride=2)
        self.conv2_1 = conv(128, 128)
        self.conv3 = conv(128, 256, stride=2)
        self.conv3_1 = conv(256, 256)
        self.conv4 = conv(256, 512, stride=2)
        self.conv4_1 = conv(512, 512)
        self.conv5 = conv(512, 512, stride=2)
        self.conv5_1 = conv(512, 512)
        self.conv6 = conv(512, 1024, stride=2)
        self.conv6_1 = conv(1024, 1024)
        self.deconv5 = deconv(1024, 512)
        self.deconv4 = deconv(1026, 256)
        self.deconv3 = deconv(770, 128)
        self.deconv2 = deconv(386, 64)
        self.inter_conv5 = i_conv(1026, 512)
        self.inter_conv4 = i_conv(770, 256)
        self.inter_conv3 = i_conv(386, 128)
        self.inter_conv2 = i_conv(194, 64)
        self.predict_flow6 = predict_flow(1024)
        self.predict_flow5 = predict_flow(512)
        self.predict_flow4 = predict_flow(256)
        self.predict_flow3 = predict_flow(128)
        self.predict_flow2 = predict_flow(64)
        self.upsampled_flow6_to_5 = nn.ConvTranspose2d(2, 2, 4, 2, 1)
        self.upsampled_flow5_to_4 = nn.ConvTranspose2d(2, 2, 4, 2, 1)
        self.upsampled_flow4_to_3 = nn.ConvTranspose2d(2, 2, 4, 2, 1)
        self.upsampled_flow3_to_2 = nn.ConvTranspose2d(2, 2, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 6, H, W)`` -> ``(B, 2, H/4, W/4)``."""
        conv0 = self.conv0(x)
        conv1 = self.conv1_1(self.conv1(conv0))
        conv2 = self.conv2_1(self.conv2(conv1))
        conv3 = self.conv3_1(self.conv3(conv2))
        conv4 = self.conv4_1(self.conv4(conv3))
        conv5 = self.conv5_1(self.conv5(conv4))
        conv6 = self.conv6_1(self.conv6(conv5))
        flow6 = self.predict_flow6(conv6)
        concat5 = torch.cat((conv5, self.deconv5(conv6), self.upsampled_flow6_to_5(flow6)), 1)
        flow5 = self.predict_flow5(self.inter_conv5(concat5))
        concat4 = torch.cat((conv4, self.deconv4(concat5), self.upsampled_flow5_to_4(flow5)), 1)
        flow4 = self.predict_flow4(self.inter_conv4(concat4))
        concat3 = torch.cat((conv3, self.deconv3(concat4), self.upsampled_flow4_to_3(flow4)), 1)
        flow3 = self.predict_flow3(self.inter_conv3(concat3))
        concat2 = torch.cat((conv2, self.deconv2(concat3), self.upsampled_flow3_to_2(flow3)), 1)
        return self.predict_flow2(self.inter_conv2(concat2))


class FlowNetFusion(nn.Module):
    """FlowNetFusion: ``(B, 11, H, W)`` -> the final flow ``(B, 2, H, W)`` in pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = conv(11, 64)
        self.conv1 = conv(64, 64, stride=2)
        self.conv1_1 = conv(64, 128)
        self.conv2 = conv(128, 128, stride=2)
        self.conv2_1 = conv(128, 128)
        self.deconv1 = deconv(128, 32)
        self.deconv0 = deconv(162, 16)
        self.inter_conv1 = i_conv(162, 32)
        self.inter_conv0 = i_conv(82, 16)
        self.predict_flow2 = predict_flow(128)
        self.predict_flow1 = predict_flow(32)
        self.predict_flow0 = predict_flow(16)
        self.upsampled_flow2_to_1 = nn.ConvTranspose2d(2, 2, 4, 2, 1)
        self.upsampled_flow1_to_0 = nn.ConvTranspose2d(2, 2, 4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 11, H, W)`` -> ``(B, 2, H, W)``."""
        conv0 = self.conv0(x)
        conv1 = self.conv1_1(self.conv1(conv0))
        conv2 = self.conv2_1(self.conv2(conv1))
        flow2 = self.predict_flow2(conv2)
        concat1 = torch.cat((conv1, self.deconv1(conv2), self.upsampled_flow2_to_1(flow2)), 1)
        flow1 = self.predict_flow1(self.inter_conv1(concat1))
        concat0 = torch.cat((conv0, self.deconv0(concat1), self.upsampled_flow1_to_0(flow1)), 1)
        return self.predict_flow0(self.inter_conv0(concat0))


class FlowNet2(nn.Module):
    """FlowNet2: ``(B, 3, 2, H, W)`` RGB image pairs in [0, 255], H and W multiples of 64 -> ``(B, 2, H, W)``.

    The output is the forward flow from image 0 to image 1 in pixels
    (``I1[y + v, x + u] ~ I0[y, x]``). Inference only: the sub-networks return their finest
    flow, not the multi-scale training outputs.
    """

    def __init__(self, div_flow: float = DIV_FLOW, rgb_max: float = RGB_MAX) -> None:
        super().__init__()
        self.div_flow = div_flow
        self.rgb_max = rgb_max
        self.flownetc = FlowNetC()
        self.flownets_1 = FlowNetS()
        self.flownets_2 = FlowNetS()
        self.flownets_d = FlowNetSD()
        self.flownetfusion = FlowNetFusion()
        _init_official(self)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 2, H, W)`` -> ``(B, 2, H, W)``."""
        b, c = inputs.shape[:2]
        if inputs.ndim != 5 or c != 3 or inputs.shape[2] != 2:
            raise AmodalkitError(f"FlowNet2 takes (B, 3, 2, H, W) image pairs, got {tuple(inputs.shape)}")
        h, w = inputs.shape[3:]
        if h % 64 or w % 64:
            raise AmodalkitError(f"FlowNet2 needs sides that are multiples of 64, got {h}x{w} "
                                 f"(use estimate_flow, which resizes)")
        rgb_mean = inputs.reshape(b, c, -1).mean(dim=-1).view(b, c, 1, 1, 1)
        x = (inputs - rgb_mean) / self.rgb_max
        img0, img1 = x[:, :, 0], x[:, :, 1]
        x = torch.cat((img0, img1), dim=1)

        def up_bilinear(f: torch.Tensor) -> torch.Tensor:
            return F.interpolate(f, scale_factor=4, mode="bilinear", align_corners=False)

        def up_nearest(f: torch.Tensor) -> torch.Tensor:
            return F.interpolate(f, scale_factor=4, mode="nearest")

        def refine_input(flow: torch.Tensor) -> torch.Tensor:
            warped = resample2d(img1, flow)
            diff = channel_norm(img0 - warped)
            return torch.cat((x, warped, flow / self.div_flow, diff), dim=1)

        flownetc_flow = up_bilinear(self.flownetc(x) * self.div_flow)
        flownets1_flow = up_bilinear(self.flownets_1(refine_input(flownetc_flow)) * self.div_flow)
        flownets2_flow = up_nearest(self.flownets_2(refine_input(flownets1_flow)) * self.div_flow)
        norm_flownets2_flow = channel_norm(flownets2_flow)
        diff_flownets2_img1 = channel_norm(img0 - resample2d(img1, flownets2_flow))

        flownetsd_flow = up_nearest(self.flownets_d(x) / self.div_flow)
        norm_flownetsd_flow = channel_norm(flownetsd_flow)
        diff_flownetsd_img1 = channel_norm(img0 - resample2d(img1, flownetsd_flow))

        concat3 = torch.cat((img0, flownetsd_flow, flownets2_flow, norm_flownetsd_flow, norm_flownets2_flow,
                             diff_flownetsd_img1, diff_flownets2_img1), dim=1)
        return self.flownetfusion(concat3)


def estimate_flow(model: FlowNet2, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Forward flow of any-size pairs: ``(B, 3, H, W)`` RGB in [0, 255] twice -> ``(B, 2, H, W)`` pixels.

    Sides that are not multiples of 64 are resized up (bilinear) to the next multiple, and the
    network's flow is resized back and its u, v scaled by ``W / W64`` and ``H / H64``.
    """
    if first.shape != second.shape or first.ndim != 4 or first.shape[1] != 3:
        raise AmodalkitError(f"estimate_flow takes two (B, 3, H, W) batches, got {tuple(first.shape)} "
                             f"and {tuple(second.shape)}")
    h, w = first.shape[2:]
    h64, w64 = 64 * max(1, math.ceil(h / 64)), 64 * max(1, math.ceil(w / 64))
    pair = torch.stack((first, second), dim=2)
    if (h64, w64) != (h, w):
        flat = pair.permute(0, 2, 1, 3, 4).reshape(-1, 3, h, w)
        flat = F.interpolate(flat, size=(h64, w64), mode="bilinear", align_corners=False)
        pair = flat.reshape(-1, 2, 3, h64, w64).permute(0, 2, 1, 3, 4)
    flow = model(pair.contiguous())
    if (h64, w64) != (h, w):
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        scale = torch.tensor([w / w64, h / h64], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)
        flow = flow * scale
    return flow


def for_inference(model: FlowNet2, device: str | torch.device = "cpu") -> FlowNet2:
    """Move to `device` in eval mode with channels-last weights (about 15% faster convs on CPU)."""
    return model.to(device=device, memory_format=torch.channels_last).eval()


def official_state_dict_keys() -> list[str]:
    """The ``state_dict`` keys of the official FlowNet2 checkpoint, in order."""
    with torch.device("meta"):
        return list(FlowNet2().state_dict().keys())


def load_flownet2(path: str | Path, device: str | torch.device = "cpu") -> FlowNet2:
    """Build FlowNet2 and load an official checkpoint (``{'state_dict': ..., ...}`` or a bare state dict)."""
    path = Path(path)
    if not path.is_file():
        raise AmodalkitError("FlowNet2 checkpoint not found (download FlowNet2_checkpoint.pth.tar as the "
                             "NVIDIA/flownet2-pytorch README says)", path)
    try:
        obj = load_plain(path)
    except Exception as exc:  # a malformed pickle can fail in any way; weights_only keeps it safe
        raise AmodalkitError(f"not a PyTorch checkpoint of tensors and plain values "
                             f"({load_error_reason(exc)})", path) from exc
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise AmodalkitError("not a FlowNet2 checkpoint: expected a dict with a 'state_dict' of tensors",
                             path)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    with torch.device("meta"):
        model = FlowNet2()
    expected = model.state_dict()
    mismatch = state_dict_mismatch(expected, state)
    if mismatch:
        raise AmodalkitError("not a FlowNet2 checkpoint: " + mismatch, path)
    model.load_state_dict({k: v.float().contiguous() for k, v in state.items()}, assign=True)
    return for_inference(model, device)
