"""SaVos (§3, §E.1): self-supervised amodal video object segmentation.

Per object clip (see :mod:`amodalkit.data.clips`), for each direction of time:

* spatiotemporal embedding: h_t = LSTM(Enc([I_t, ΔV_t, V_t])) (eqs. 9-10);
* amodal completor: [M̃_t, α_t] = DeConv_a([h_t, CNN_a(V_t)]) (eq. 11), M̃_t through a sigmoid,
  α_t the alpha logit of the bi-directional blend;
* motion predictor: ΔM̃_t = mean(ΔV_t over V_t) + DeConv_c([h_t, CNN_c(ΔV_t)]) (eq. 12);
* warp without parameters: M̂_{t+1} = Warp(M̃_t, ΔM̃_t), a differentiable forward
  (splatting) warp, so M̂_{t+1}[x + ΔM̃_t(x)] = M̃_t[x] (eq. 2).

The backward direction runs the same network on the reversed clip with the backward flow.
Where both directions predict a frame, a softmax over their warped alphas blends them
(eq. 8); the blend M̂_t is the model's amodal prediction. The loss is
λ1 · L_M + λ2 · L_C: L_M the W-weighted BCE of M̂_t against V_t (eqs. 3-5), L_C the soft-IoU
distance between each direction's completion M̃_t and its warped prediction M̂_t (eq. 6).

Beyond the paper (config switches, off in the ``paper`` and ``small`` presets, on in
``cpu``): ``skips`` adds CNN_a's maps into DeConv_a, ``mask_feedback`` feeds DeConv_a the
warped previous completion M̂_t beside V_t, and ``horizon`` > 1 adds appendix B's
L_complete, truncated (:func:`horizon_mask_loss`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from amodalkit.data.clips import ClipCrop, video_clip_batch
from amodalkit.device import inference_autocast, is_cuda, to_device
from amodalkit.errors import AmodalkitError
from amodalkit.io.checkpoint import (
    Checkpoint,
    build_checked,
    config_from_dict,
    read_checkpoint,
    save_checkpoint,
)
from amodalkit.io.shards import Video
from amodalkit.models.base import AmodalMethod
from amodalkit.ops.crops import keep_on_occluders, paste_clips

MODEL_NAME = "savos"
EPS = 1e-6
PAPER_CHANNELS = (32, 64, 128, 256, 256, 512)
ABLATIONS = ("no_consistency", "no_bidirectional", "no_temporal", "no_flow", "no_image")
MAX_CROP_SIDE = 1024
MAX_CHANNELS = 4096


@dataclass(frozen=True)
class SavosConfig:
    """Architecture, input geometry, loss weights and the Table 2 ablation switches.

    The encoders have one stride-2 layer per halving of the crop down to 4x8, then the
    paper's (3,4)/(1,2) layer and a final 4x4 layer, so ``channels`` needs
    log2(crop_h / 4) + 2 entries; (64, 128) with 32..512 is the paper's §E.1 network. The
    decoders mirror the encoders with transposed convolutions. ``width`` multiplies every
    channel count; smaller crops make the network shallower. Square crops (an extension for
    square objects) replace the (3,4)/(1,2) layer by a 3x3 stride-1 one. ``crop_mode`` picks
    one box per clip (``clip``) or a box that follows the object (``track``, see
    :class:`amodalkit.data.clips.ClipCrop`); ``clip_len`` 0 trains on whole videos.
    """

    crop_size: tuple[int, int] = (64, 128)
    channels: tuple[int, ...] = PAPER_CHANNELS
    width: float = 1.0
    hidden: int = 256
    clip_len: int = 10
    enlarge: float = 1.5
    crop_mode: str = "clip"
    lambda_mask: float = 1.0
    lambda_consistency: float = 1.0
    horizon: int = 1
    lambda_horizon: float = 1.0
    mask_feedback: bool = False
    skips: bool = False
    warp: str = "splat"
    no_consistency: bool = False
    no_bidirectional: bool = False
    no_temporal: bool = False
    no_flow: bool = False
    no_image: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_size", tuple(int(v) for v in self.crop_size))
        object.__setattr__(self, "channels", tuple(int(v) for v in self.channels))
        h, w = self.crop_size
        n = self.num_downsamples
        if h < 4 or w not in (h, 2 * h) or 4 * 2 ** n != h:
            raise AmodalkitError(f"crop size must be (4*2^n, 8*2^n) or square (4*2^n, 4*2^n) with n >= 0, "
                                 f"e.g. (64, 128), (32, 64) or (32, 32); got {self.crop_size}")
        if len(self.channels) != n + 2:
            raise AmodalkitError(f"a {h}x{w} crop needs {n + 2} encoder channel counts "
                                 f"({n} stride-2 layers + 2), got {len(self.channels)}: {self.channels}")
        if self.width <= 0 or self.hidden < 1 or min(self.channels) < 1:
            raise AmodalkitError("width, hidden size and channel counts must be positive")
        if w > MAX_CROP_SIDE or self.hidden > MAX_CHANNELS or max(self.scaled_channels()) > MAX_CHANNELS:
            raise AmodalkitError(f"crops are at most {MAX_CROP_SIDE} pixels wide and the hidden size and "
                                 f"channel counts (after --width) at most {MAX_CHANNELS}; got crop "
                                 f"{self.crop_size}, hidden {self.hidden}, channels {self.scaled_channels()}")
        if self.warp not in ("splat", "sample"):
            raise AmodalkitError(f"warp must be 'splat' or 'sample', got {self.warp!r}")
        if self.clip_len < 0 or self.clip_len == 1:
            raise AmodalkitError("clip length must be 0 (whole video) or at least 2")
        if self.crop_mode not in ("clip", "track"):
            raise AmodalkitError(f"crop mode must be 'clip' or 'track', got {self.crop_mode!r}")
        if self.horizon < 1 or self.lambda_horizon < 0:
            raise AmodalkitError("horizon must be at least 1 and lambda_horizon non-negative")

    @property
    def num_downsamples(self) -> int:
        """Stride-2 layers of each encoder: log2(crop_h / 4)."""
        h = self.crop_size[0]
        return max(0, round(math.log2(max(h, 1) / 4)))

    def scaled_channels(self) -> tuple[int, ...]:
        """Channel counts after the width multiplier."""
        return tuple(max(1, round(c * self.width)) for c in self.channels)

    @property
    def square(self) -> bool:
        """Square crops: the 4x8 -> 4x4 layer becomes 4x4 -> 4x4."""
        return self.crop_size[0] == self.crop_size[1]

    @property
    def in_channels(self) -> int:
        """Input channels of the spatiotemporal encoder: image, flow, visible mask."""
        return (0 if self.no_image else 3) + (0 if self.no_flow else 2) + 1

    @classmethod
    def paper(cls, **changes: object) -> SavosConfig:
        """The paper's configuration (§E.1): 64x128 crops, 32..512 channels, LSTM 256."""
        return cls(**changes)

    @classmethod
    def small(cls, **changes: object) -> SavosConfig:
        """A CPU-sized variant: 32x32 crops that follow the object, narrow encoders, LSTM 128."""
        base = {"crop_size": (32, 32), "channels": (16, 32, 64, 64, 128), "hidden": 128, "crop_mode": "track"}
        return cls(**{**base, **changes})

    @classmethod
    def cpu(cls, **changes: object) -> SavosConfig:
        """The zoo's CPU recipe: ``small`` on whole videos, with mask feedback and skip connections.

        Neither extension is in the paper: both give the completor a pixel-precise path
        (its own warped previous completion, the mask encoder's maps), which is what lets
        the narrow network fit Chewing Gum shapes within a CPU budget (docs/benchmarks.md).
        """
        return cls.small(**{"clip_len": 0, "mask_feedback": True, "skips": True, **changes})

    @classmethod
    def from_dict(cls, data: dict) -> SavosConfig:
        """Rebuild from ``asdict`` output (e.g. a checkpoint's JSON), refusing unknown keys."""
        return config_from_dict(cls, data, "SaVos")


def default_channels(crop_size: tuple[int, int], width: float = 1.0) -> tuple[int, ...]:
    """The paper's channels at the depth a crop allows: early stride-2 layers dropped (or 32s added)."""
    n = max(0, round(math.log2(max(int(crop_size[0]), 1) / 4)))
    strided = PAPER_CHANNELS[:4]
    strided = strided[4 - n:] if n <= 4 else (strided[0],) * (n - 4) + strided
    return tuple(max(1, round(c * width)) for c in strided + PAPER_CHANNELS[4:])


def forward_warp(src: torch.Tensor, flow: torch.Tensor, mode: str = "splat") -> torch.Tensor:
    """Move `src` along `flow` so that out[x + flow(x)] = src[x]: (N, C, h, w), (N, 2, h, w) -> (N, C, h, w).

    ``splat``: bilinear forward splatting, normalised where several sources land on one
    pixel (weights summing above 1), so masks stay in [0, 1]; differentiable in both inputs.
    ``sample``: the official code's approximation, backward sampling at x - flow(x).
    Flow channels are (u, v) = (dx, dy) in pixels; nothing enters from outside the frame.
    """
    src = src.float()
    flow = flow.float()
    n, c, h, w = src.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=src.device, dtype=flow.dtype),
                            torch.arange(w, device=src.device, dtype=flow.dtype), indexing="ij")
    if mode == "sample":
        gx = (xs - flow[:, 0]) * (2.0 / w) + (1.0 / w - 1.0)
        gy = (ys - flow[:, 1]) * (2.0 / h) + (1.0 / h - 1.0)
        return F.grid_sample(src, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="zeros",
                             align_corners=False)
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    x0 = torch.floor(x)
    y0 = torch.floor(y)
    fx = x - x0
    fy = y - y0
    out = src.new_zeros((n, c, h * w))
    wsum = src.new_zeros((n, 1, h * w))
    flat_src = src.reshape(n, c, h * w)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            cx = x0 + dx
            cy = y0 + dy
            inside = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
            weight = (wx * wy * inside).reshape(n, 1, h * w)
            idx = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).long().reshape(n, 1, h * w)
            out = out.scatter_add(2, idx.expand(n, c, h * w), flat_src * weight)
            wsum = wsum.scatter_add(2, idx, weight)
    return (out / wsum.clamp(min=1.0)).reshape(n, c, h, w)


def soft_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Differentiable IoU of soft masks over the last two axes: (..., h, w) -> (...)."""
    inter = (a * b).sum(dim=(-2, -1))
    union = (a + b - a * b).sum(dim=(-2, -1))
    return (inter + EPS) / (union + EPS)


def _block(cin: int, cout: int, kernel: int | tuple[int, int], stride: int | tuple[int, int],
           pad: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, pad), nn.GroupNorm(1, cout), nn.LeakyReLU(0.2))


class Encoder(nn.Module):
    """CNN of §E.1: GroupNorm + LeakyReLU after each layer, down to 1x1: (N, C, h, w) -> (N, out_dim)."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], out_dim: int,
                 square: bool = False) -> None:
        super().__init__()
        n = len(channels) - 2
        layers = []
        cin = in_channels
        for c in channels[:n]:
            layers.append(_block(cin, c, 4, 2, 1))
            cin = c
        layers.append(_block(cin, channels[n], 3 if square else (3, 4), 1 if square else (1, 2), 1))
        layers.append(_block(channels[n], channels[n + 1], 4, 1, 0))
        self.net = nn.Sequential(*layers)
        self.fc = nn.Linear(channels[-1], out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x).flatten(1))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The embedding and every layer's map below the last (finest first), for skip connections."""
        maps = []
        for layer in self.net:
            x = layer(x)
            maps.append(x)
        return self.fc(x.flatten(1)), maps[:-1]


class Decoder(nn.Module):
    """Mirror of :class:`Encoder` with transposed convolutions: (N, in_dim) -> (N, out_channels, h, w)."""

    def __init__(self, in_dim: int, channels: tuple[int, ...], out_channels: int,
                 square: bool = False) -> None:
        super().__init__()
        n = len(channels) - 2
        self.fc = nn.Linear(in_dim, channels[-1])
        below = channels[n - 1] if n else out_channels
        specs = [(channels[n + 1], channels[n], 4, 1, 0),
                 (channels[n], below, 3 if square else (3, 4), 1 if square else (1, 2), 1)]
        for i in range(n - 1, 0, -1):
            specs.append((channels[i], channels[i - 1], 4, 2, 1))
        if n:
            specs.append((channels[0], out_channels, 4, 2, 1))
        layers = []
        for cin, cout, k, s, p in specs:
            layers += [nn.GroupNorm(1, cin), nn.LeakyReLU(0.2), nn.ConvTranspose2d(cin, cout, k, s, p)]
        self.net = nn.Sequential(*layers)

    @property
    def last(self) -> nn.ConvTranspose2d:
        """The output layer (no norm or activation after it)."""
        return self.net[-1]

    def forward(self, z: torch.Tensor, skips: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Decode `z`; `skips` (an :meth:`Encoder.features` list) are added where the shapes mirror."""
        x = self.fc(z)[:, :, None, None]
        pending = list(skips or [])
        for i in range(0, len(self.net), 3):
            if i and pending:
                x = x + pending.pop()
            x = self.net[i + 2](self.net[i + 1](self.net[i](x)))
        return x


class SavosNet(nn.Module):
    """The SaVos network; ``forward`` takes a batch of clips and returns every intermediate map."""

    def __init__(self, config: SavosConfig) -> None:
        super().__init__()
        self.config = config
        ch = config.scaled_channels()
        d = config.hidden
        sq = config.square
        self.st_encoder = Encoder(config.in_channels, ch, d, sq)
        self.seq = nn.Identity() if config.no_temporal else nn.LSTM(d, d, batch_first=True)
        self.mask_encoder = Encoder(2 if config.mask_feedback else 1, ch, d, sq)
        self.mask_decoder = Decoder(2 * d, ch, 2, sq)
        self.motion_encoder = Encoder(2, ch, d, sq)
        self.motion_decoder = Decoder(2 * d, ch, 2, sq)
        nn.init.zeros_(self.motion_decoder.last.weight)
        nn.init.zeros_(self.motion_decoder.last.bias)

    def run_direction(self, image: torch.Tensor, visible: torch.Tensor, flow: torch.Tensor,
                      valid: torch.Tensor) -> dict[str, torch.Tensor]:
        """One direction of time over clips.

        image (N, T, 3, h, w), visible (N, T, h, w), flow (N, T, 2, h, w) from t to the
        next frame of this direction, valid (N, T) -> completion, alpha (N, T, h, w), motion
        (N, T, 2, h, w), warped and warped_alpha (N, T, h, w) (frame t warped from t-1;
        zero at t = 0) and has_warped (N, T) bool.
        """
        cfg = self.config
        n, t, _, h, w = image.shape
        vis = visible[:, :, None]
        inputs = ([] if cfg.no_image else [image - 0.5]) + ([] if cfg.no_flow else [flow]) + [vis]
        x = torch.cat(inputs, dim=2).reshape(n * t, -1, h, w)
        f = self.st_encoder(x).reshape(n, t, -1)
        hidden = f if cfg.no_temporal else self.seq(f)[0]
        flow_flat = flow.reshape(n * t, 2, h, w)
        residual = self.motion_decoder(torch.cat([hidden.reshape(n * t, -1), self.motion_encoder(flow_flat)],
                                                 dim=1))
        motion = residual + mean_visible_flow(flow, visible, valid).reshape(n * t, 2, 1, 1)
        motion = motion.reshape(n, t, 2, h, w)
        if cfg.mask_feedback:
            completion, alpha, moved = self._complete_recurrent(hidden, visible, motion)
        else:
            out = self._decode_mask(hidden.reshape(n * t, -1), vis.reshape(n * t, 1, h, w))
            completion = soft_mask(out[:, 0]).reshape(n, t, h, w)
            alpha = out[:, 1].reshape(n, t, h, w)
            moved = forward_warp(torch.stack([completion[:, :-1], alpha[:, :-1]], dim=2).reshape(-1, 2, h, w),
                                 motion[:, :-1].reshape(-1, 2, h, w), cfg.warp).reshape(n, t - 1, 2, h, w)
        zeros = completion.new_zeros((n, 1, h, w))
        warped = torch.cat([zeros, moved[:, :, 0]], dim=1)
        warped_alpha = torch.cat([zeros, moved[:, :, 1]], dim=1)
        has = torch.cat([torch.zeros_like(valid[:, :1]), valid[:, 1:] & valid[:, :-1]], dim=1)
        return {"completion": completion, "alpha": alpha, "motion": motion, "warped": warped,
                "warped_alpha": warped_alpha, "has_warped": has}

    def _decode_mask(self, hidden: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Completor: DeConv_a([h_t, CNN_a(masks)]), with CNN_a's maps added back when ``skips``."""
        if not self.config.skips:
            return self.mask_decoder(torch.cat([hidden, self.mask_encoder(masks)], dim=1))
        z, maps = self.mask_encoder.features(masks)
        return self.mask_decoder(torch.cat([hidden, z], dim=1), maps)

    def _complete_recurrent(self, hidden: torch.Tensor, visible: torch.Tensor,
                            motion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Completor fed its own warped previous completion M̂_t beside V_t, frame by frame.

        M̂_t depends only on V_<t and the motions, so this stays within eq. 1's conditioning
        (F_θ of everything seen so far) while keeping a pixel-precise memory of the parts
        seen earlier, which the 1x1 bottleneck of h_t cannot hold. Returns completion and
        alpha (N, T, h, w) and the warped [completion, alpha] (N, T-1, 2, h, w).
        """
        n, t, h, w = visible.shape
        prev = visible.new_zeros((n, 1, h, w))
        completions, alphas, moved = [], [], []
        for i in range(t):
            out = self._decode_mask(hidden[:, i], torch.cat([visible[:, i, None], prev], dim=1))
            completion = soft_mask(out[:, 0])
            completions.append(completion)
            alphas.append(out[:, 1])
            if i < t - 1:
                pair = torch.stack([completion, out[:, 1]], dim=1)
                step = forward_warp(pair, motion[:, i], self.config.warp)
                moved.append(step)
                prev = step[:, :1]
        return torch.stack(completions, 1), torch.stack(alphas, 1), torch.stack(moved, 1)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Both directions and their blend for a batch of clips (layout of :mod:`amodalkit.data.clips`).

        Returns ``prediction`` (B, T, h, w), the amodal probability of every frame (the
        blend of the warped predictions; a frame no direction warps to falls back to the
        forward completion), plus ``forward_*`` and, when bi-directional, ``backward_*``
        maps of :meth:`run_direction` in the clip's own time order.
        """
        image = batch["image"].permute(0, 2, 1, 3, 4)
        flow = batch["flow"].permute(0, 2, 1, 3, 4)
        visible, valid = batch["visible"], batch["valid"].bool()
        b = image.shape[0]
        if self.config.no_bidirectional:
            fwd = self.run_direction(image, visible, flow, valid)
            out = {f"forward_{k}": v for k, v in fwd.items()}
            has = fwd["has_warped"]
            pred = torch.where(has[:, :, None, None], fwd["warped"], fwd["completion"])
            return {"prediction": pred, "has_prediction": has, **out}
        back_flow = batch["flow_backward"].permute(0, 2, 1, 3, 4).flip(1)
        both = self.run_direction(torch.cat([image, image.flip(1)]), torch.cat([visible, visible.flip(1)]),
                                  torch.cat([flow, back_flow]), torch.cat([valid, valid.flip(1)]))
        fwd = {k: v[:b] for k, v in both.items()}
        bwd = {k: v[b:].flip(1) for k, v in both.items()}
        hf, hb = fwd["has_warped"], bwd["has_warped"]
        off = torch.full_like(fwd["warped_alpha"], -1e4)
        af = torch.where(hf[:, :, None, None], fwd["warped_alpha"], off)
        ab = torch.where(hb[:, :, None, None], bwd["warped_alpha"], off)
        wf = torch.sigmoid(af - ab)
        blend = wf * fwd["warped"] + (1 - wf) * bwd["warped"]
        has = hf | hb
        pred = torch.where(has[:, :, None, None], blend, fwd["completion"])
        out = {f"forward_{k}": v for k, v in fwd.items()} | {f"backward_{k}": v for k, v in bwd.items()}
        return {"prediction": pred, "has_prediction": has, "forward_weight": wf, **out}


def soft_mask(logits: torch.Tensor) -> torch.Tensor:
    """Completor logits -> mask probabilities kept EPS/2 away from 0 and 1, so the BCE stays finite."""
    return (1 - EPS) * torch.sigmoid(logits) + EPS * 0.5


def mean_visible_flow(flow: torch.Tensor, visible: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The "common fate" motion: mean flow over the visible mask, (N, T, 2, h, w), (N, T, h, w) -> (N, T, 2).

    A frame where the object is not visible takes the last visible frame's mean (zero
    before the first one).
    """
    wts = visible * valid[:, :, None, None]
    mass = wts.sum(dim=(-2, -1))
    mean = (flow * wts[:, :, None]).sum(dim=(-2, -1)) / mass.clamp(min=EPS)[:, :, None]
    seen = mass > 1e-3
    out = []
    last = mean.new_zeros(mean[:, 0].shape)
    for t in range(mean.shape[1]):
        last = torch.where(seen[:, t, None], mean[:, t], last)
        out.append(last)
    return torch.stack(out, dim=1)


def savos_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
               config: SavosConfig) -> dict[str, torch.Tensor]:
    """λ1 · L_M + λ2 · L_C (+ the horizon term) for a batch: ``loss``, ``mask``, ``consistency``, ``horizon``.

    L_M: mean over predicted object-frames of the pixel mean of W ⊙ BCE(M̂_t, V_t).
    L_C: mean over each direction's warped frames of 1 - softIoU(M̃_t, M̂_t).
    """
    valid = batch["valid"].bool()
    target = batch["visible"]
    pred = out["prediction"].clamp(EPS, 1 - EPS)
    bce = -(target * torch.log(pred) + (1 - target) * torch.log(1 - pred))
    per_frame = (batch["weight"] * bce).mean(dim=(-2, -1))
    has = out["has_prediction"] & valid
    mask_loss = (per_frame * has).sum() / has.sum().clamp(min=1)
    cons_terms, cons_n = [], []
    for d in ("forward", "backward"):
        if f"{d}_completion" not in out:
            continue
        hd = out[f"{d}_has_warped"] & valid
        dist = 1 - soft_iou(out[f"{d}_completion"], out[f"{d}_warped"])
        cons_terms.append((dist * hd).sum())
        cons_n.append(hd.sum())
    consistency = torch.stack(cons_terms).sum() / torch.stack(cons_n).sum().clamp(min=1)
    lam_c = 0.0 if config.no_consistency else config.lambda_consistency
    loss = config.lambda_mask * mask_loss + lam_c * consistency
    horizon = mask_loss.new_zeros(())
    if config.horizon > 1:
        horizon = torch.stack([horizon_mask_loss(out, batch, d, config) for d in ("forward", "backward")
                               if f"{d}_completion" in out]).mean()
        loss = loss + config.lambda_horizon * horizon
    return {"loss": loss, "mask": mask_loss.detach(), "consistency": consistency.detach(),
            "horizon": horizon.detach()}


def horizon_mask_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], direction: str,
                      config: SavosConfig) -> torch.Tensor:
    """Appendix B's L_complete, truncated: W ⊙ BCE of M̃_t warped 2..horizon frames ahead against V.

    The paper's L_M only compares M̃_t with the next frame, so a hidden part that stays
    hidden for one more frame gets no feedback; here M̃_t is carried along the predicted
    motion for up to ``horizon`` frames (in this direction's time order) and compared with
    every visible mask it meets. Mean over (frame, step) pairs whose frames all exist.
    """
    flip = direction == "backward"

    def ordered(x: torch.Tensor) -> torch.Tensor:
        return x.flip(1) if flip else x

    completion = ordered(out[f"{direction}_completion"])
    motion = ordered(out[f"{direction}_motion"])
    target, weight = ordered(batch["visible"]), ordered(batch["weight"])
    valid = ordered(batch["valid"].bool())
    n, t, h, w = completion.shape
    cur, alive = completion, valid
    total = completion.new_zeros(())
    count = completion.new_zeros(())
    for step in range(1, min(config.horizon, t - 1) + 1):
        cur = forward_warp(cur[:, :-1].reshape(-1, 1, h, w), motion[:, step - 1:t - 1].reshape(-1, 2, h, w),
                           config.warp).reshape(n, t - step, h, w)
        alive = alive[:, :-1] & valid[:, step:]
        if step == 1:
            continue
        pred = cur.clamp(EPS, 1 - EPS)
        tgt = target[:, step:]
        bce = -(tgt * torch.log(pred) + (1 - tgt) * torch.log(1 - pred))
        per_frame = (weight[:, step:] * bce).mean(dim=(-2, -1))
        total = total + (per_frame * alive).sum()
        count = count + alive.sum()
    return total / count.clamp(min=1)


def visible_iou(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> float:
    """IoU of the thresholded prediction with the visible masks where W gives feedback (all frames pooled)."""
    has = (out["has_prediction"] & batch["valid"].bool())[:, :, None, None]
    feedback = batch["weight"] > 0.5
    pred = (out["prediction"] > 0.5) & feedback & has
    vis = (batch["visible"] > 0.5) & has
    inter = (pred & vis).sum().item()
    union = (pred | vis).sum().item()
    return (inter + EPS) / (union + EPS)


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of a module."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def save_savos(path: str | Path, model: SavosNet, extra: dict | None = None, half: bool = False) -> Path:
    """Write a SaVos checkpoint (safetensors weights + config JSON)."""
    return save_checkpoint(path, MODEL_NAME, asdict(model.config), model.state_dict(), extra, half=half)


def load_savos(source: str | Path | Checkpoint, device: str | torch.device = "cpu",
               path: str | Path | None = None) -> SavosNet:
    """Rebuild a SaVos network from a checkpoint (path or already read), checking config against weights."""
    ck = source if isinstance(source, Checkpoint) else read_checkpoint(source, expect_model=MODEL_NAME)
    where = path if isinstance(source, Checkpoint) else source
    if ck.model != MODEL_NAME:
        raise AmodalkitError(f"checkpoint holds a {ck.model!r} model, expected {MODEL_NAME!r}", where)
    try:
        config = SavosConfig.from_dict(ck.config)
    except (TypeError, AmodalkitError) as exc:
        raise AmodalkitError(f"invalid SaVos config in checkpoint: {exc}", where) from exc
    model = build_checked(lambda: SavosNet(config), ck.state_dict, where)
    return model.to(device).eval()


@dataclass(frozen=True)
class TTAConfig:
    """Test-time adaptation (§3.2): optimise the training loss on one test video.

    ``chunk_size`` bounds memory on long videos: at most that many clips go through one
    forward/backward, with the gradient accumulated over chunks (:func:`adapt`).
    """

    max_iters: int = 50
    lr: float = 1e-4
    window: int = 10
    min_gain: float = 0.01
    chunk_size: int = 16

    def __post_init__(self) -> None:
        if isinstance(self.max_iters, bool) or not isinstance(self.max_iters, int) or self.max_iters < 1:
            raise AmodalkitError(f"--tta-max-iters must be at least 1, got {self.max_iters!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise AmodalkitError(f"--tta-lr must be a finite number >= 0, got {self.lr!r}")
        if not isinstance(self.window, int) or self.window < 1 or not math.isfinite(self.min_gain):
            raise AmodalkitError("the TTA window must be at least 1 and its min_gain finite")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise AmodalkitError(f"--tta-chunk must be at least 1 clip, got {self.chunk_size!r}")


@dataclass
class TTAStats:
    """What adaptation did over the videos it ran on."""

    iterations: list[int] = field(default_factory=list)
    visible_iou_before: list[float] = field(default_factory=list)
    visible_iou_after: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        """Means over the adapted videos."""
        def mean(v: list) -> float:
            return float(np.mean(v)) if v else float("nan")

        return {"videos": len(self.iterations), "mean_iterations": mean(self.iterations),
                "visible_iou_before": mean(self.visible_iou_before),
                "visible_iou_after": mean(self.visible_iou_after)}


def adapt(model: SavosNet, batch: dict[str, torch.Tensor],
          tta: TTAConfig) -> tuple[SavosNet, int, list[float]]:
    """Fine-tune a copy of `model` on one video's clips; stop when the visible-part IoU gained
    less than ``min_gain`` over the last ``window`` iterations, or at ``max_iters``.

    Returns the adapted copy, the iterations run and the visible IoU before each iteration
    (plus the final one). A video of more than ``chunk_size`` clips is run in chunks: a
    forward without graph gives the outputs, the loss over all of them gives its gradient
    with respect to each output, and each chunk's forward is then redone with its graph and
    back-propagated from that gradient. The parameter gradient is the whole batch's (the
    network treats clips independently), with one chunk's graph in memory at a time.
    """
    adapted = copy.deepcopy(model).train()
    opt = torch.optim.Adam(adapted.parameters(), lr=tta.lr)
    history: list[float] = []
    iters = 0
    chunked = batch["valid"].shape[0] > tta.chunk_size
    while True:
        out = _forward_in_chunks(adapted, batch, tta.chunk_size) if chunked else adapted(batch)
        history.append(visible_iou(out, batch))
        if iters >= tta.max_iters:
            break
        if len(history) > tta.window and history[-1] - history[-1 - tta.window] < tta.min_gain:
            break
        opt.zero_grad(set_to_none=True)
        if chunked:
            _backward_in_chunks(adapted, batch, out, tta.chunk_size)
        else:
            savos_loss(out, batch, adapted.config)["loss"].backward()
        opt.step()
        iters += 1
    return adapted.eval(), iters, history


def _chunks(batch: dict[str, torch.Tensor], chunk: int) -> list[dict[str, torch.Tensor]]:
    """A batch of clips split into batches of at most `chunk` clips (views, in order)."""
    n = batch["valid"].shape[0]
    return [{k: v[i:i + chunk] for k, v in batch.items()} for i in range(0, n, chunk)]


def _forward_in_chunks(model: SavosNet, batch: dict[str, torch.Tensor],
                       chunk: int) -> dict[str, torch.Tensor]:
    """The network's outputs for a batch of clips, `chunk` clips at a time, without graph."""
    with torch.no_grad():
        parts = [model(part) for part in _chunks(batch, chunk)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _backward_in_chunks(model: SavosNet, batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor],
                        chunk: int) -> None:
    """Accumulate the gradient of the loss over all of `out` into `model`, one chunk's graph at a time."""
    leaves = {k: v.detach().requires_grad_() if v.is_floating_point() else v for k, v in out.items()}
    savos_loss(leaves, batch, model.config)["loss"].backward()
    used = [k for k, v in leaves.items() if v.grad is not None]
    for i, part in zip(range(0, batch["valid"].shape[0], chunk), _chunks(batch, chunk)):
        piece = model(part)
        torch.autograd.backward([piece[k] for k in used], [leaves[k].grad[i:i + chunk] for k in used])


class SavosMethod(AmodalMethod):
    """A trained SaVos network as an amodal method: every clip of several videos in one batch.

    Each object is cut into clips of ``window`` frames (default: the training clip length;
    0 = the whole video) overlapping by half, cropped like training clips, predicted, pasted
    back to full resolution and averaged where windows overlap. :meth:`predict_videos` does
    all of it on the device, ``batch_size`` clips per forward (default 128 on CUDA and 16 per
    thread on a CPU, where larger batches run slower) through a channels-last copy of the network
    (:func:`inference_copy`, made once at construction, so a network changed afterwards needs
    a new method); callers hand it ``videos_per_batch`` videos at a time. With ``tta`` a copy
    of the network is first adapted to each video (§3.2), and each video is predicted on its own.

    With ``occluders_only`` (the official evaluation's rule) the prediction is kept only on
    pixels covered by the *other* objects' visible masks, the only place a hidden part can
    be; elsewhere the output is the object's own visible mask.
    """

    name = MODEL_NAME
    fields = ("frames", "flow", "flow_backward")

    def __init__(self, model: SavosNet | None = None, checkpoint: str | Path | None = None,
                 device: str | torch.device = "cpu", window: int | None = None, batch_size: int | None = None,
                 tta: TTAConfig | None = None, occluders_only: bool = True,
                 videos_per_batch: int = 16) -> None:
        if model is None:
            if checkpoint is None:
                raise AmodalkitError("the savos method needs a trained model: give a checkpoint")
            model = load_savos(checkpoint, device)
        self.model = model.to(device).eval()
        self.runner = inference_copy(self.model)
        self.device = torch.device(device)
        self.videos_per_batch = videos_per_batch
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.window = model.config.clip_len if window is None else window
        self.batch_size = batch_size
        self.tta = tta
        self.tta_stats = TTAStats()
        self.occluders_only = occluders_only

    @property
    def window(self) -> int:
        """Frames per clip at inference (0 = the whole video)."""
        return self._window

    @window.setter
    def window(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise AmodalkitError(f"--window must be 0 (the whole video) or a positive frame count, "
                                 f"got {value!r}")
        self._window = value

    def with_tta(self, tta: TTAConfig | None) -> SavosMethod:
        """The same method with test-time adaptation switched on (or off with None)."""
        other = copy.copy(self)
        other.tta = tta
        other.tta_stats = TTAStats()
        return other

    def describe(self) -> dict:
        info = {"method": self.name, "checkpoint": self.checkpoint, "window": self.window,
                "occluders_only": self.occluders_only, "config": asdict(self.model.config)}
        if self.tta is not None:
            info["tta"] = {**asdict(self.tta), **self.tta_stats.summary()}
        return info

    def video_clips(self, video: Video) -> tuple[list[tuple[int, int, ClipCrop]],
                                                 dict[str, torch.Tensor] | None]:
        """Every (object, window start, crop box) with visible pixels, and their clips as one device batch."""
        cfg = self.model.config
        t = video.num_frames
        length = t if self.window == 0 else min(self.window, t)
        starts = list(range(0, t - length + 1, max(1, length // 2)))
        if starts[-1] != t - length:
            starts.append(t - length)
        return video_clip_batch(video, length, starts, cfg.crop_size, cfg.enlarge, cfg.crop_mode, self.device)

    def predict_clips(self, model: SavosNet, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Amodal probabilities of clips on the device, ``batch_size`` at a time: (N, L, h, w) float32.

        Runs under ``inference_mode`` with autocast on CUDA; nothing here waits for the device.
        """
        size = self.batch_size or (128 if is_cuda(self.device) else 16 * torch.get_num_threads())
        preds = []
        with torch.inference_mode(), inference_autocast(self.device):
            for i in range(0, batch["valid"].shape[0], size):
                part = {k: v[i:i + size] for k, v in batch.items()}
                preds.append(model(part)["prediction"].float())
        return torch.cat(preds)

    @torch.inference_mode()
    def paste(self, video: Video, where: list[tuple[int, int, ClipCrop]], preds: torch.Tensor) -> np.ndarray:
        """Clip predictions (N, L, h, w) pasted back and averaged, on the device -> (K, T, H, W) numpy."""
        boxes = torch.stack([crop.as_tensor() for _, _, crop in where])
        objects = torch.tensor([k for k, _, _ in where])
        starts = torch.tensor([s for _, s, _ in where])
        out = paste_clips(preds, boxes, objects, starts, (video.num_objects, video.num_frames, *video.size))
        if self.occluders_only:
            out = keep_on_occluders(out, to_device(video.visible_ids.astype(np.int32), preds.device))
        return out.cpu().numpy()

    def predict_video(self, video: Video) -> np.ndarray:
        return self.predict_videos([video])[0]

    def predict_videos(self, videos: Sequence[Video]) -> list[np.ndarray]:
        """Every clip of every video through the network together (per video with ``tta``)."""
        if self.tta is not None:
            return [self._predict_adapted(v) for v in videos]
        clips = [self.video_clips(v) for v in videos]
        by_length: dict[int, list[int]] = {}
        for i, (_, batch) in enumerate(clips):
            if batch is not None:
                by_length.setdefault(batch["valid"].shape[1], []).append(i)
        preds: dict[int, torch.Tensor] = {}
        for members in by_length.values():
            joint = {k: torch.cat([clips[i][1][k] for i in members]) for k in clips[members[0]][1]}
            out = self.predict_clips(self.runner, joint)
            preds.update(zip(members, out.split([len(clips[i][0]) for i in members])))
        return [self.paste(v, clips[i][0], preds[i]) if i in preds else _empty(v)
                for i, v in enumerate(videos)]

    def _predict_adapted(self, video: Video) -> np.ndarray:
        """One video with a copy of the network adapted to it first (§3.2)."""
        where, batch = self.video_clips(video)
        if batch is None:
            return _empty(video)
        model, iters, history = adapt(self.model, batch, self.tta)
        self.tta_stats.iterations.append(iters)
        self.tta_stats.visible_iou_before.append(history[0])
        self.tta_stats.visible_iou_after.append(history[-1])
        preds = self.predict_clips(model.to(memory_format=torch.channels_last), batch)
        return self.paste(video, where, preds)


def _empty(video: Video) -> np.ndarray:
    """An all-zero prediction: (K, T, H, W) float32."""
    return np.zeros((video.num_objects, video.num_frames, *video.size), np.float32)


def inference_copy(model: SavosNet) -> SavosNet:
    """An eval-mode copy with its convolutions in channels-last layout (faster on CPU and GPU)."""
    return copy.deepcopy(model).eval().to(memory_format=torch.channels_last)


def method_from_savos_checkpoint(ck: Checkpoint, path: str | Path, device: str = "cpu") -> SavosMethod:
    """A :class:`SavosMethod` from a checkpoint already read (used by the registry)."""
    return SavosMethod(load_savos(ck, device, path), checkpoint=path, device=device)


PRESETS: dict[str, Callable[..., SavosConfig]] = {"paper": SavosConfig.paper, "small": SavosConfig.small,
                                                  "cpu": SavosConfig.cpu}


def build_config(preset: str = "paper", crop: str | tuple[int, int] | None = None,
                 channels: str | tuple[int, ...] | None = None, **changes: object) -> SavosConfig:
    """A preset with CLI-style overrides: ``crop`` "HxW", ``channels`` "a,b,c", None keeps the preset.

    A crop without channels takes the paper's channels at the depth that crop allows.
    """
    if preset not in PRESETS:
        raise AmodalkitError(f"unknown SaVos preset {preset!r}; choose from {sorted(PRESETS)}")
    over = {k: v for k, v in changes.items() if v is not None and v is not False}
    if isinstance(crop, str):
        try:
            crop = tuple(int(v) for v in crop.lower().split("x"))
        except ValueError as exc:
            raise AmodalkitError(f"--crop must look like 32x64, got {crop!r}") from exc
    if isinstance(channels, str):
        try:
            channels = tuple(int(v) for v in channels.split(","))
        except ValueError as exc:
            raise AmodalkitError(f"--channels must look like 16,32,64,64,128, got {channels!r}") from exc
    if crop is not None:
        over["crop_size"] = tuple(crop)
        if channels is None:
            over["channels"] = default_channels(crop)
    if channels is not None:
        over["channels"] = tuple(channels)
    return PRESETS[preset](**over)
