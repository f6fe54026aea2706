"""Self-Deocclusion, PCNet-M style (Zhan et al. 2020): per-frame mask completion learned from visible masks.

Training never sees an amodal mask. For each object-frame crop with visible mask V, another
crop's visible mask in the batch (another object, frame or video), randomly shifted and
flipped, becomes a surrogate occluder O. Two cases, as in the original method:

* occluder above (probability 1 - ``p_no_occlusion``): input (V · (1 - O), O), target V:
  recover the part O erased;
* occluder below (probability ``p_no_occlusion``, PCNet-M's 1 - ``eraser_front_prob`` = 0.2):
  input (V, O · (1 - V)), target V: where nothing is hidden, do not grow into the occluder.

The loss is the BCE of the completion logits against V over every pixel of the crop. At
inference the input is (V, union of the other objects' visible masks in that frame) and the
output is the amodal probability (:class:`DeocclusionMethod`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from amodalkit.errors import AmodalkitError
from amodalkit.io.checkpoint import Checkpoint
from amodalkit.models.baselines import framewise
from amodalkit.models.baselines.framewise import (
    FramewiseConfig,
    FramewiseMethod,
    FramewiseNet,
    framewise_config_from_options,
    framewise_step,
    save_framewise,
)
from amodalkit.models.registry import ModelSpec, TableRow, register_model

MODEL_NAME = "deocclusion"


@dataclass(frozen=True)
class DeocclusionConfig(FramewiseConfig):
    """The U-Net of :class:`FramewiseConfig` plus the surrogate-occluder sampling.

    ``max_shift`` bounds the occluder's random shift as a fraction of the crop size.
    """

    p_no_occlusion: float = 0.2
    max_shift: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.p_no_occlusion <= 1:
            raise AmodalkitError(f"p_no_occlusion must be in [0, 1], got {self.p_no_occlusion}")
        if not 0 <= self.max_shift <= 1:
            raise AmodalkitError(f"max_shift must be in [0, 1], got {self.max_shift}")


class DeocclusionNet(FramewiseNet):
    """PCNet-M's mask completion network: (V, O[, image]) -> amodal logits, (N, h, w)."""

    config_class = DeocclusionConfig


def surrogate_occluders(visible: torch.Tensor, max_shift: float, generator: torch.Generator) -> torch.Tensor:
    """Each crop's occluder: another crop's visible mask, flipped and shifted: (N, h, w) -> (N, h, w).

    Each axis is flipped with probability 1/2 and shifted by a whole number of pixels up to
    ``max_shift`` times the crop size, so the mask is moved exactly (zero where it leaves the
    crop). With a single crop its own mask is used.
    """
    n, h, w = visible.shape
    other = (torch.arange(n) + torch.randint(1, max(n, 2), (n,), generator=generator)) % n
    size = torch.tensor([h, w])
    shift = torch.round((torch.rand(n, 2, generator=generator) * 2 - 1) * max_shift * size).long()
    flip = torch.rand(n, 2, generator=generator) < 0.5
    rows = torch.arange(h)[None] - shift[:, :1]
    cols = torch.arange(w)[None] - shift[:, 1:]
    rows = torch.where(flip[:, :1], h - 1 - rows, rows)
    cols = torch.where(flip[:, 1:], w - 1 - cols, cols)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    dev = visible.device
    picked = visible[other.to(dev)[:, None, None], rows.clamp(0, h - 1).to(dev)[:, :, None],
                     cols.clamp(0, w - 1).to(dev)[:, None, :]]
    return picked * inside.to(dev)


def synthesize_occlusion(visible: torch.Tensor, config: DeocclusionConfig,
                         generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training input from visible masks alone: (N, h, w) -> (visible in, occluder in, target V)."""
    occ = surrogate_occluders(visible, config.max_shift, generator)
    below = (torch.rand(visible.shape[0], generator=generator) < config.p_no_occlusion).to(visible.device)
    below = below[:, None, None]
    vis_in = torch.where(below, visible, visible * (1 - occ))
    occ_in = torch.where(below, occ * (1 - visible), occ)
    return vis_in, occ_in, visible


def deocclusion_loss(net: DeocclusionNet, batch: dict[str, torch.Tensor],
                     generator: torch.Generator) -> torch.Tensor:
    """PCNet-M's self-supervised loss on a batch of crops (reads ``visible`` and ``image`` only)."""
    vis_in, occ_in, target = synthesize_occlusion(batch["visible"], net.config, generator)
    logits = net(vis_in, occ_in, batch.get("image"))
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


class DeocclusionMethod(FramewiseMethod):
    """Self-Deocclusion as an amodal method: (V, other objects' visible masks) -> amodal per frame."""

    name = MODEL_NAME
    net_class = DeocclusionNet


def method_from_deocclusion_checkpoint(ck: Checkpoint, path: str | Path,
                                       device: str = "cpu") -> DeocclusionMethod:
    """A :class:`DeocclusionMethod` from a checkpoint already read (used by the registry)."""
    net = framewise.load_framewise(ck, MODEL_NAME, DeocclusionNet, device, path)
    return DeocclusionMethod(net, checkpoint=path, device=device)


register_model(ModelSpec(
    name=MODEL_NAME, summary="Self-Deocclusion (PCNet-M style), per frame, self-supervised",
    method=DeocclusionMethod,
    table=(TableRow(MODEL_NAME, "Self-Deocclusion (PCNet-M)", paper=(0.9624, 0.3307)),),
    config=DeocclusionConfig,
    build_config=partial(framewise_config_from_options, DeocclusionConfig, MODEL_NAME),
    net=lambda config: DeocclusionNet(config).to_channels_last(), step=framewise_step(deocclusion_loss),
    save=lambda path, net, extra: save_framewise(path, MODEL_NAME, net, extra),
    load=method_from_deocclusion_checkpoint,
    data="frame_crops", reads_amodal=False,
))
