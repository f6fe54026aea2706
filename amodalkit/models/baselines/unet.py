"""Supervised oracle: a U-Net per frame trained on the amodal ground truth (the paper's upper bound).

Same crops, network and inference as Self-Deocclusion (:mod:`.framewise`): input the
object's visible mask, the other objects' visible masks (occluder) and the image patch;
the loss is the BCE of the logits against the amodal crop over every pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

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

MODEL_NAME = "unet"


@dataclass(frozen=True)
class UNetConfig(FramewiseConfig):
    """The U-Net of :class:`FramewiseConfig`, with the image patch as input by default."""

    use_image: bool = True


class UNet(FramewiseNet):
    """The supervised U-Net: (V, O, image) -> amodal logits, (N, h, w)."""

    config_class = UNetConfig


def unet_loss(net: UNet, batch: dict[str, torch.Tensor],
              generator: torch.Generator | None = None) -> torch.Tensor:
    """BCE of the amodal logits against the amodal crops (`generator` unused: no sampling)."""
    logits = net(batch["visible"], batch["occluder"], batch.get("image"))
    return F.binary_cross_entropy_with_logits(logits.float(), batch["amodal"].float())


class UNetMethod(FramewiseMethod):
    """The supervised U-Net as an amodal method, per frame."""

    name = MODEL_NAME
    net_class = UNet


def method_from_unet_checkpoint(ck: Checkpoint, path: str | Path, device: str = "cpu") -> UNetMethod:
    """A :class:`UNetMethod` from a checkpoint already read (used by the registry)."""
    net = framewise.load_framewise(ck, MODEL_NAME, UNet, device, path)
    return UNetMethod(net, checkpoint=path, device=device)


register_model(ModelSpec(
    name=MODEL_NAME, summary="per-frame U-Net trained on the amodal ground truth (the supervised oracle)",
    method=UNetMethod,
    table=(TableRow(MODEL_NAME, "Supervised U-Net (oracle)", paper=(0.9613, 0.3321)),),
    config=UNetConfig, build_config=partial(framewise_config_from_options, UNetConfig, MODEL_NAME),
    net=lambda config: UNet(config).to_channels_last(), step=framewise_step(unet_loss),
    save=lambda path, net, extra: save_framewise(path, MODEL_NAME, net, extra),
    load=method_from_unet_checkpoint,
    data="frame_crops", reads_amodal=True,
))
