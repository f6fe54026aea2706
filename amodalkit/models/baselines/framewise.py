"""What the per-frame baselines share: config, U-Net, checkpoints and crop-predict-paste inference.

Self-Deocclusion (:mod:`.deocclusion`) and the supervised oracle (:mod:`.unet`) are both a
small U-Net on one object-frame crop at a time (no time): input the object's visible mask,
the occluder mask (the other objects' visible masks) and optionally the image patch, output
the amodal mask logit. They differ only in how they are trained. At inference every
object-frame with visible pixels of several videos is cropped on the device
(:func:`amodalkit.ops.frame_cut.video_frame_crop_batch`), predicted in one batch and
pasted back to full resolution on the device.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

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
from amodalkit.models.base import AmodalMethod, Batch, StepContext
from amodalkit.ops.crops import keep_on_occluders, paste_clips
from amodalkit.ops.frame_cut import video_frame_crop_batch

MAX_CROP_SIDE = 1024
MAX_CHANNELS = 4096


@dataclass(frozen=True)
class FramewiseConfig:
    """Crop geometry and U-Net size: one level per entry of ``channels``, halving the crop each level."""

    crop_size: tuple[int, int] = (32, 32)
    channels: tuple[int, ...] = (8, 16, 32, 64)
    enlarge: float = 1.5
    use_image: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_size", tuple(int(v) for v in self.crop_size))
        object.__setattr__(self, "channels", tuple(int(v) for v in self.channels))
        step = 2 ** (len(self.channels) - 1)
        if len(self.crop_size) != 2 or min(self.crop_size) < step or any(s % step for s in self.crop_size):
            raise AmodalkitError(f"crop size must be two multiples of {step} (2^(levels - 1) for "
                                 f"{len(self.channels)} channel counts), got {self.crop_size}")
        if not self.channels or min(self.channels) < 1:
            raise AmodalkitError(f"channel counts must be positive, got {self.channels}")
        if max(self.crop_size) > MAX_CROP_SIDE or max(self.channels) > MAX_CHANNELS:
            raise AmodalkitError(f"crops are at most {MAX_CROP_SIDE} pixels and channel counts at most "
                                 f"{MAX_CHANNELS}; got {self.crop_size} and {self.channels}")
        if self.enlarge <= 0:
            raise AmodalkitError("the crop enlargement factor must be positive")

    @property
    def in_channels(self) -> int:
        """Input channels: visible mask, occluder mask, and the RGB patch with ``use_image``."""
        return 2 + (3 if self.use_image else 0)

    @classmethod
    def from_dict(cls, data: dict) -> FramewiseConfig:
        """Rebuild from ``asdict`` output (e.g. a checkpoint's JSON), refusing unknown keys."""
        return config_from_dict(cls, data, cls.__name__)


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions with batch norm and ReLU: (N, C_in, h, w) -> (N, C_out, h, w)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        )


class MaskUNet(nn.Module):
    """A U-Net: max-pool down, bilinear up with skip connections, one logit per pixel.

    (N, C_in, h, w) -> (N, h, w); h and w must be multiples of 2^(len(channels) - 1).
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        ins = (in_channels, *channels[:-1])
        self.down = nn.ModuleList(ConvBlock(a, b) for a, b in zip(ins, channels))
        self.up = nn.ModuleList(ConvBlock(channels[i + 1] + channels[i], channels[i])
                                for i in reversed(range(len(channels) - 1)))
        self.head = nn.Conv2d(channels[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)[:, 0]


class FramewiseNet(nn.Module):
    """Amodal mask logits of object-frame crops from (visible, occluder[, image]).

    After :meth:`to_channels_last` weights and activations are in channels-last layout, which
    on a CPU makes these narrow convolutions about 1.5x (training) to 2x (inference) faster.
    """

    config_class: ClassVar[type[FramewiseConfig]] = FramewiseConfig

    def __init__(self, config: FramewiseConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise AmodalkitError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                                 f"got {type(config).__name__}")
        self.config = config
        self.unet = MaskUNet(config.in_channels, config.channels)
        self.channels_last = False

    def forward(self, visible: torch.Tensor, occluder: torch.Tensor,
                image: torch.Tensor | None = None) -> torch.Tensor:
        """visible, occluder (N, h, w), image (N, 3, h, w) -> logits (N, h, w)."""
        parts = [visible[:, None], occluder[:, None]]
        if self.config.use_image:
            if image is None:
                raise AmodalkitError("this network was built with use_image; give it the image patches")
            parts.append(image)
        x = torch.cat(parts, dim=1)
        return self.unet(x.contiguous(memory_format=torch.channels_last) if self.channels_last else x)

    def to_channels_last(self) -> FramewiseNet:
        """Switch weights and inputs to channels-last layout (in place); returns self."""
        self.channels_last = True
        return self.to(memory_format=torch.channels_last)


def inference_copy(net: FramewiseNet) -> FramewiseNet:
    """An eval-mode copy with every batch norm folded into its convolution, in channels-last layout."""
    net = copy.deepcopy(net).eval()
    for block in net.modules():
        if isinstance(block, ConvBlock):
            for conv, norm in ((0, 1), (3, 4)):
                block[conv] = fuse_conv_bn_eval(block[conv], block[norm])
                block[norm] = nn.Identity()
    return net.to_channels_last()


def save_framewise(path: str | Path, model_name: str, net: FramewiseNet, extra: dict | None = None) -> Path:
    """Write a checkpoint whose ``model`` field is `model_name` and config the net's dataclass."""
    return save_checkpoint(path, model_name, asdict(net.config), net.state_dict(), extra)


def load_framewise(source: str | Path | Checkpoint, model_name: str, net_class: type[FramewiseNet],
                   device: str | torch.device = "cpu", path: str | Path | None = None) -> FramewiseNet:
    """Rebuild a per-frame network from a checkpoint (path or already read), checking config and weights."""
    ck = source if isinstance(source, Checkpoint) else read_checkpoint(source, expect_model=model_name)
    where = path if isinstance(source, Checkpoint) else source
    if ck.model != model_name:
        raise AmodalkitError(f"checkpoint holds a {ck.model!r} model, expected {model_name!r}", where)
    try:
        config = net_class.config_class.from_dict(ck.config)
    except (TypeError, AmodalkitError) as exc:
        raise AmodalkitError(f"invalid {model_name} config in checkpoint: {exc}", where) from exc
    net = build_checked(lambda: net_class(config), ck.state_dict, where)
    return net.to(device).eval()


class FramewiseMethod(AmodalMethod):
    """A trained per-frame network as an amodal method: all object-frames of several videos in one batch.

    :meth:`predict_videos` crops, predicts and pastes back on the device, ``batch_size``
    crops per forward; callers hand it ``videos_per_batch`` videos at a time (default 16 on
    CUDA, 1 on a CPU, where one video's crops are already a batch the size CPUs run best).

    With ``occluders_only`` (off by default: scoring applies the official paste rule to every
    method alike under ``--protocol official``) the prediction is kept only on pixels covered
    by the *other* objects' visible masks, the only place a hidden part can be; elsewhere the
    output is the object's own visible mask. The weights are copied once at construction
    (:func:`inference_copy`), so a network changed afterwards needs a new method.
    """

    name = "framewise"
    net_class: ClassVar[type[FramewiseNet]] = FramewiseNet

    def __init__(self, model: FramewiseNet | None = None, checkpoint: str | Path | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 4096,
                 occluders_only: bool = False, videos_per_batch: int | None = None) -> None:
        if model is None:
            if checkpoint is None:
                raise AmodalkitError(f"the {self.name} method needs a trained model: give a checkpoint")
            model = load_framewise(checkpoint, self.name, self.net_class, device)
        self.model = model.to(device).eval()
        self.runner = inference_copy(self.model)
        self.device = torch.device(device)
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.batch_size = batch_size
        self.occluders_only = occluders_only
        self.videos_per_batch = videos_per_batch or (16 if is_cuda(self.device) else 1)
        self.fields = ("frames",) if model.config.use_image else ()

    def to_device(self, device: str | torch.device) -> None:
        """Move the network to `device` (a worker of one GPU takes its copy there)."""
        self.model, self.device = self.model.to(device), torch.device(device)
        self.runner = inference_copy(self.model)

    def describe(self) -> dict:
        return {"method": self.name, "checkpoint": self.checkpoint, "occluders_only": self.occluders_only,
                "config": asdict(self.model.config)}

    def crops(self, video: Video) -> tuple[np.ndarray, dict[str, torch.Tensor] | None]:
        """(N, 2) (object, frame) pairs with visible pixels, and their crops as one batch on the device."""
        cfg = self.model.config
        return video_frame_crop_batch(video, cfg.crop_size, cfg.enlarge, cfg.use_image, self.device)

    def predict_crops(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Amodal probabilities of crops on the device, ``batch_size`` at a time: (N, h, w) float32.

        Runs under ``inference_mode`` with autocast on CUDA; nothing here waits for the device.
        """
        out = []
        with torch.inference_mode(), inference_autocast(self.device):
            for i in range(0, batch["visible"].shape[0], self.batch_size):
                part = {k: v[i:i + self.batch_size] for k, v in batch.items() if k != "box"}
                logits = self.runner(part["visible"], part["occluder"], part.get("image"))
                out.append(torch.sigmoid(logits.float()))
        return torch.cat(out)

    @torch.inference_mode()
    def paste(self, video: Video, pairs: np.ndarray, boxes: torch.Tensor, preds: torch.Tensor) -> np.ndarray:
        """Crop predictions (N, h, w) of (object, frame) `pairs` pasted back on the device -> (K, T, H, W)."""
        objects, frames = torch.from_numpy(pairs.T.astype(np.int64))
        out = paste_clips(preds[:, None], boxes[:, None], objects, frames,
                          (video.num_objects, video.num_frames, *video.size))
        if self.occluders_only:
            out = keep_on_occluders(out, to_device(video.visible_ids.astype(np.int32), preds.device))
        return out.cpu().numpy()

    def predict_video(self, video: Video) -> np.ndarray:
        return self.predict_videos([video])[0]

    def predict_videos(self, videos: Sequence[Video]) -> list[np.ndarray]:
        """Every object-frame of every video through the network together."""
        crops = [self.crops(v) for v in videos]
        found = [i for i, (_, batch) in enumerate(crops) if batch is not None]
        out = {}
        if found:
            names = [k for k in crops[found[0]][1] if k != "box"]
            joint = {k: torch.cat([crops[i][1][k] for i in found]) for k in names}
            preds = self.predict_crops(joint).split([len(crops[i][0]) for i in found])
            out = {i: self.paste(videos[i], crops[i][0], crops[i][1]["box"], p) for i, p in zip(found, preds)}
        return [out[i] if i in out else np.zeros((v.num_objects, v.num_frames, *v.size), np.float32)
                for i, v in enumerate(videos)]


#: loss(net, batch, generator) -> scalar tensor
FramewiseLoss = Callable[[nn.Module, dict[str, torch.Tensor], torch.Generator], torch.Tensor]


def framewise_step(loss: FramewiseLoss) -> Callable[[nn.Module, Batch, FramewiseConfig, StepContext], Batch]:
    """The training step of a per-frame model: its loss under autocast, with the step's keyed randomness."""

    def step(model: nn.Module, batch: Batch, config: FramewiseConfig, ctx: StepContext) -> Batch:
        generator = ctx.generator()
        with ctx.autocast():
            return {"loss": loss(model, batch, generator)}

    return step


#: SaVos-only ``amodalkit train`` options and the values that mean "not given"
_SAVOS_DEFAULTS = {"preset": "paper", "clip_stride": 0}


def framewise_config_from_options(config_class: type[FramewiseConfig], model_name: str,
                                  crop: str | tuple[int, int] | None = None,
                                  channels: str | tuple[int, ...] | None = None, enlarge: float | None = None,
                                  no_image: bool = False, **savos_options: object) -> FramewiseConfig:
    """The model's default config with CLI-style overrides (``crop`` "HxW", ``channels`` "a,b,c").

    SaVos-only options are accepted only at their "not given" values (None, False, or the
    CLI default), so ``amodalkit train --model unet --hidden 64`` fails instead of being ignored.
    """
    given = sorted(k for k, v in savos_options.items()
                   if v is not None and v is not False and v != _SAVOS_DEFAULTS.get(k))
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise AmodalkitError(f"{flags}: SaVos option(s), not for --model {model_name} "
                             "(it takes --crop, --channels, --enlarge and --no-image)")
    changes: dict[str, object] = {}
    try:
        if crop is not None:
            changes["crop_size"] = (tuple(int(v) for v in crop.lower().split("x")) if isinstance(crop, str)
                                    else crop)
        if channels is not None:
            changes["channels"] = (tuple(int(v) for v in channels.split(",")) if isinstance(channels, str)
                                   else channels)
    except ValueError as exc:
        raise AmodalkitError(f"--crop must look like 32x32 and --channels like 8,16,32,64 ({exc})") from exc
    if enlarge is not None:
        changes["enlarge"] = enlarge
    if no_image:
        changes["use_image"] = False
    return config_class(**changes)
