"""PointTrack's two networks in plain PyTorch: the seed segmenter and the point-cloud tracker.

Attribute names follow the official ``detectRecog/PointTrack`` modules (``models/erfnet.py``,
``models/BranchedERFNet.py``), so the released state dicts load without renaming:

* :class:`SegmenterNet` is the official ``BranchedERFNet(num_classes=[4, 1])``: an ERFNet
  encoder (``encoder.*``) and two ERFNet decoders (``decoders.0.*``: x, y offsets and two
  sigmas; ``decoders.1.*``: the seed logit). BatchNorm eps is 1e-3 throughout. The encoder's
  ``output_conv`` is in the checkpoint but unused at inference, as in the official forward.
  :class:`PointTrackSegmenter` adds the official edge padding, so any frame size runs.
* :class:`TrackerNet` is the official ``TrackerOffsetEmb(num_points=1000, border_ic=3,
  env_points=500, outputD=32)``: three point branches (``point_feat.*``) and the box encoding
  of :func:`location_embedding`, giving one 32-d embedding per instance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from amodalkit.errors import AmodalkitError

BN_EPS = 1e-3
OFFICIAL_PAD = (384, 1248)
SEG_CHANNELS = (4, 1)
FG_POINTS = 1000
BG_POINTS = 500
POINT_FEATURES = 8
EMBEDDING_DIM = 32
BOX_CODE_DIM = 64
BOX_WAVE_LEN = 1000.0
BOX_SCALE = 100.0


class DownsamplerBlock(nn.Module):
    """ERFNet downsampler: [3x3 stride-2 conv (C_out - C_in channels), 2x2 max-pool] -> BN -> ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out - c_in, 3, stride=2, padding=1, bias=True)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W)`` (H, W even) -> ``(N, C_out, H/2, W/2)``."""
        return F.relu(self.bn(torch.cat((self.conv(x), self.pool(x)), 1)))


class NonBottleneck1d(nn.Module):
    """ERFNet's factorized residual block: (3x1, ReLU, 1x3, BN, ReLU) twice, the second dilated."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        c, d = channels, dilation
        self.conv3x1_1 = nn.Conv2d(c, c, (3, 1), padding=(1, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(c, c, (1, 3), padding=(0, 1), bias=True)
        self.bn1 = nn.BatchNorm2d(c, eps=BN_EPS)
        self.conv3x1_2 = nn.Conv2d(c, c, (3, 1), padding=(d, 0), dilation=(d, 1), bias=True)
        self.conv1x3_2 = nn.Conv2d(c, c, (1, 3), padding=(0, d), dilation=(1, d), bias=True)
        self.bn2 = nn.BatchNorm2d(c, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, C, H, W)`` (dropout is inactive at inference and left out)."""
        y = F.relu(self.bn1(self.conv1x3_1(F.relu(self.conv3x1_1(x)))))
        y = self.bn2(self.conv1x3_2(F.relu(self.conv3x1_2(y))))
        return F.relu(y + x)


class UpsamplerBlock(nn.Module):
    """ERFNet upsampler: 3x3 stride-2 transposed conv -> BN -> ReLU."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=True)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W)`` -> ``(N, C_out, 2H, 2W)``."""
        return F.relu(self.bn(self.conv(x)))


class Encoder(nn.Module):
    """ERFNet encoder: ``(N, 3, H, W)`` -> ``(N, 128, H/8, W/8)``."""

    def __init__(self, head_channels: int) -> None:
        super().__init__()
        self.initial_block = DownsamplerBlock(3, 16)
        blocks: list[nn.Module] = [DownsamplerBlock(16, 64)]
        blocks += [NonBottleneck1d(64, 1) for _ in range(5)]
        blocks.append(DownsamplerBlock(64, 128))
        blocks += [NonBottleneck1d(128, d) for _ in range(2) for d in (2, 4, 8, 16)]
        self.layers = nn.ModuleList(blocks)
        self.output_conv = nn.Conv2d(128, head_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, 128, H/8, W/8)``."""
        x = self.initial_block(x)
        for block in self.layers:
            x = block(x)
        return x


class Decoder(nn.Module):
    """ERFNet decoder: ``(N, 128, H/8, W/8)`` -> ``(N, C, H, W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([
            UpsamplerBlock(128, 64), NonBottleneck1d(64, 1), NonBottleneck1d(64, 1),
            UpsamplerBlock(64, 16), NonBottleneck1d(16, 1), NonBottleneck1d(16, 1),
        ])
        self.output_conv = nn.ConvTranspose2d(16, channels, 2, stride=2, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 128, H/8, W/8)`` -> ``(N, C, H, W)``."""
        for block in self.layers:
            x = block(x)
        return self.output_conv(x)


class SegmenterNet(nn.Module):
    """The seed network: ``(N, 3, H, W)`` RGB in [0, 1], H and W multiples of 8 -> ``(N, 5, H, W)``."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder(sum(SEG_CHANNELS))
        self.decoders = nn.ModuleList([Decoder(c) for c in SEG_CHANNELS])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, 5, H, W)``: x, y offset logits, two sigmas, seed logit."""
        feats = self.encoder(x)
        return torch.cat([decoder(feats) for decoder in self.decoders], 1)


class PointTrackSegmenter(SegmenterNet):
    """The seed network for any frame size: ``(N, 3, H, W)`` RGB in [0, 1] -> ``(N, 5, H, W)``.

    The frame is padded right and bottom with its edge pixels to ``pad_to`` (the official test
    size, so KITTI frames see exactly the official input) or, when it does not fit or
    ``pad_to`` is None, to the next multiples of 8; the output is cropped back.
    """

    def __init__(self, pad_to: tuple[int, int] | None = OFFICIAL_PAD) -> None:
        super().__init__()
        if pad_to is not None and (len(pad_to) != 2 or any(int(v) <= 0 or int(v) % 8 for v in pad_to)):
            raise AmodalkitError(f"pad_to must be two positive multiples of 8, got {pad_to}")
        self.pad_to = None if pad_to is None else (int(pad_to[0]), int(pad_to[1]))

    def padded_size(self, h: int, w: int) -> tuple[int, int]:
        """The (H, W) the network runs at for an ``h`` x ``w`` frame."""
        h8, w8 = -(-h // 8) * 8, -(-w // 8) * 8
        if self.pad_to is not None and h <= self.pad_to[0] and w <= self.pad_to[1]:
            return self.pad_to
        return h8, w8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, 5, H, W)``."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise AmodalkitError(f"the PointTrack segmenter takes (N, 3, H, W) RGB, got {tuple(x.shape)}")
        h, w = x.shape[2:]
        ph, pw = self.padded_size(h, w)
        if (ph, pw) != (h, w):
            x = F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")
        return super().forward(x)[:, :, :h, :w]


def location_embedding(boxes: torch.Tensor) -> torch.Tensor:
    """Sinusoidal box code: ``(N, 4)`` normalized (x0, y0, x1, y1) -> ``(N, 64)``.

    Each of (cx, cy, w + 1, h + 1), times 100, is multiplied by ``1000 ** (-k / 8)`` for
    k = 0..7; the 32 products give 32 sines followed by 32 cosines (the official ordering).
    """
    x0, y0, x1, y1 = boxes.unbind(1)
    geometry = torch.stack(((x0 + x1) * 0.5, (y0 + y1) * 0.5, x1 - x0 + 1.0, y1 - y0 + 1.0), 1)
    steps = BOX_CODE_DIM // 8
    freqs = BOX_WAVE_LEN ** -(torch.arange(steps, device=boxes.device, dtype=boxes.dtype) / steps)
    angles = (BOX_SCALE * geometry[:, :, None] * freqs).reshape(len(boxes), -1)
    return torch.cat((torch.sin(angles), torch.cos(angles)), 1)


def _pw(c_in: int, c_out: int) -> nn.Conv1d:
    """A pointwise (kernel 1) Conv1d."""
    return nn.Conv1d(c_in, c_out, 1)


class BorderBranch(nn.Module):
    """The background-point branch (official ``PointFeatFuse3P``): three paths fused, max-pooled."""

    def __init__(self, colour_channels: int = 3, out_channels: int = 256) -> None:
        super().__init__()
        self.conv1, self.conv2, self.conv3 = _pw(2, 64), _pw(64, 128), _pw(128, 128)
        self.e_conv1, self.e_conv2, self.e_conv3 = _pw(colour_channels, 64), _pw(64, 128), _pw(128, 256)
        self.t_conv1, self.t_conv2, self.t_conv3 = _pw(3, 64), _pw(64, 128), _pw(128, 128)
        self.conv4, self.conv5, self.conv6 = _pw(512, 256), _pw(256, 512), _pw(512, out_channels)

    def forward(self, offsets: torch.Tensor, colours: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """``(N, 2, P)`` offsets, ``(N, 3, P)`` colours, ``(N, 3, P)`` category codes -> ``(N, 256)``."""
        act = F.leaky_relu
        for a, b, c in ((self.conv1, self.e_conv1, self.t_conv1), (self.conv2, self.e_conv2, self.t_conv2),
                        (self.conv3, self.e_conv3, self.t_conv3)):
            offsets, colours, codes = act(a(offsets)), act(b(colours)), act(c(codes))
        x = torch.cat((offsets, colours, codes), 1)
        x = act(self.conv6(act(self.conv5(act(self.conv4(x))))))
        return x.amax(dim=2)


class PointFeatures(nn.Module):
    """The instance encoder (official ``PoseNetFeatOffsetEmb``): foreground and border points -> embedding."""

    def __init__(self, output_dim: int = EMBEDDING_DIM, border_channels: int = 256) -> None:
        super().__init__()
        self.borderConv = BorderBranch(3, border_channels)
        self.conv1, self.conv2, self.conv3 = _pw(2, 64), _pw(64, 128), _pw(128, 256)
        self.conv1_bn, self.conv2_bn = nn.BatchNorm1d(64), nn.BatchNorm1d(128)
        self.conv3_bn = nn.BatchNorm1d(256)
        self.e_conv1, self.e_conv2, self.e_conv3 = _pw(3, 64), _pw(64, 128), _pw(128, 256)
        self.e_conv1_bn, self.e_conv2_bn = nn.BatchNorm1d(64), nn.BatchNorm1d(128)
        self.e_conv3_bn = nn.BatchNorm1d(256)
        self.conv4, self.conv5, self.conv6 = _pw(512, 256), _pw(256, 512), _pw(512, 64)
        self.conv4_bn, self.conv5_bn = nn.BatchNorm1d(256), nn.BatchNorm1d(512)
        self.conv7, self.conv8, self.conv9 = _pw(512, 256), _pw(256, 512), _pw(512, 64)
        self.conv7_bn, self.conv8_bn = nn.BatchNorm1d(256), nn.BatchNorm1d(512)
        self.conv_weight = _pw(128, 1)
        width = 64 + 64 + 512 + border_channels + BOX_CODE_DIM
        self.last_emb = nn.Sequential(nn.Linear(width, 256), nn.LeakyReLU(), nn.Linear(256, output_dim))

    def forward(self, fg: torch.Tensor, bg: torch.Tensor, box_code: torch.Tensor) -> torch.Tensor:
        """``(N, 5, P_fg)`` fg points, ``(N, 8, P_bg)`` border points, ``(N, 64)`` box code -> ``(N, D)``."""
        act = F.leaky_relu
        pos, col = fg[:, 3:5], fg[:, :3]
        for conv, bn, e_conv, e_bn in ((self.conv1, self.conv1_bn, self.e_conv1, self.e_conv1_bn),
                                       (self.conv2, self.conv2_bn, self.e_conv2, self.e_conv2_bn),
                                       (self.conv3, self.conv3_bn, self.e_conv3, self.e_conv3_bn)):
            pos, col = act(bn(conv(pos))), act(e_bn(e_conv(col)))
        joint = torch.cat((pos, col), 1)
        avg_path = act(self.conv6(act(self.conv5_bn(self.conv5(act(self.conv4_bn(self.conv4(joint))))))))
        max_path = act(self.conv9(act(self.conv8_bn(self.conv8(act(self.conv7_bn(self.conv7(joint))))))))
        weight = torch.softmax(self.conv_weight(torch.cat((avg_path, max_path), 1)), dim=2)
        border = self.borderConv(bg[:, 3:5], bg[:, :3], bg[:, 5:])
        pooled = (avg_path.mean(dim=2), max_path.amax(dim=2), (weight * joint).sum(dim=2), border, box_code)
        return self.last_emb(torch.cat(pooled, 1))


class TrackerNet(nn.Module):
    """The tracker: points ``(N, 1500, 8)`` and boxes ``(N, 4)`` -> embeddings ``(N, 32)``.

    Points 0..999 are foreground samples (B, G, R in [0, 1], dv, du; the last three columns
    unused), points 1000..1499 background samples of the enlarged box with their 3-d
    category code in the last three columns. Boxes are (umin/1242, vmin/375, umax/1242, vmax/375).
    """

    def __init__(self) -> None:
        super().__init__()
        self.point_feat = PointFeatures()

    def forward(self, points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``(N, 1500, 8)``, ``(N, 4)`` -> ``(N, 32)``."""
        n = points.shape[0]
        if points.shape[1:] != (FG_POINTS + BG_POINTS, POINT_FEATURES) or boxes.shape != (n, 4):
            raise AmodalkitError(f"the PointTrack tracker takes points (N, {FG_POINTS + BG_POINTS}, "
                                 f"{POINT_FEATURES}) and boxes (N, 4), got {tuple(points.shape)} and "
                                 f"{tuple(boxes.shape)}")
        fg = points[:, :FG_POINTS, :5].transpose(1, 2).contiguous()
        bg = points[:, FG_POINTS:].transpose(1, 2).contiguous()
        return self.point_feat(fg, bg, location_embedding(boxes))
