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

Beyond the paper (config switches): ``skips`` adds CNN_a's maps into DeConv_a and
``mask_feedback`` feeds DeConv_a the warped previous completion M̂_t beside V_t (both off
in the ``paper`` and ``small`` presets, on in ``cpu``); ``horizon`` > 1 adds appendix B's
L_complete, truncated (:func:`amodalkit.models.savos.loss.horizon_mask_loss`; 1, i.e. off,
in every preset). The ``official`` preset follows the released code instead of the text:
``completor_input="flow_x"`` (CNN_a reads the horizontal flow, not V_t), ``motion_base=
"visible_flow"`` (the residual is added to the flow itself on visible pixels, to its mean
elsewhere) and ``leaky_slope`` 0.01.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from amodalkit.errors import AmodalkitError
from amodalkit.io.checkpoint import Checkpoint, build_checked, read_checkpoint, save_checkpoint
from amodalkit.models.savos.config import MODEL_NAME, SavosConfig
from amodalkit.ops.warp import forward_warp

EPS = 1e-6


def _block(cin: int, cout: int, kernel: int | tuple[int, int], stride: int | tuple[int, int],
           pad: int, slope: float = 0.2) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, pad), nn.GroupNorm(1, cout),
                         nn.LeakyReLU(slope))


class Encoder(nn.Module):
    """CNN of §E.1: GroupNorm + LeakyReLU after each layer, down to 1x1: (N, C, h, w) -> (N, out_dim)."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], out_dim: int,
                 square: bool = False, slope: float = 0.2) -> None:
        super().__init__()
        n = len(channels) - 2
        layers = []
        cin = in_channels
        for c in channels[:n]:
            layers.append(_block(cin, c, 4, 2, 1, slope))
            cin = c
        layers.append(_block(cin, channels[n], 3 if square else (3, 4), 1 if square else (1, 2), 1, slope))
        layers.append(_block(channels[n], channels[n + 1], 4, 1, 0, slope))
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
                 square: bool = False, slope: float = 0.2) -> None:
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
            layers += [nn.GroupNorm(1, cin), nn.LeakyReLU(slope), nn.ConvTranspose2d(cin, cout, k, s, p)]
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
        sq, slope = config.square, config.leaky_slope
        self.st_encoder = Encoder(config.in_channels, ch, d, sq, slope)
        self.seq = nn.Identity() if config.no_temporal else nn.LSTM(d, d, batch_first=True)
        self.mask_encoder = Encoder(2 if config.mask_feedback else 1, ch, d, sq, slope)
        self.mask_decoder = Decoder(2 * d, ch, 2, sq, slope)
        self.motion_encoder = Encoder(2, ch, d, sq, slope)
        self.motion_decoder = Decoder(2 * d, ch, 2, sq, slope)
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
        base = mean_visible_flow(flow, visible, valid)[..., None, None]
        if cfg.motion_base == "visible_flow":
            base = torch.where(vis > 0.5, flow, base)
        motion = residual.reshape(n, t, 2, h, w) + base
        cond = vis if cfg.completor_input == "visible" else flow[:, :, :1]
        if cfg.mask_feedback:
            completion, alpha, moved = self._complete_recurrent(hidden, cond[:, :, 0], motion)
        else:
            out = self._decode_mask(hidden.reshape(n * t, -1), cond.reshape(n * t, 1, h, w))
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


def inference_copy(model: SavosNet) -> SavosNet:
    """An eval-mode copy with its convolutions in channels-last layout (faster on CPU and GPU)."""
    return copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
