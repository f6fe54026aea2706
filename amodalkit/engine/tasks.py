"""What each trained model contributes to the loop: its network, its data and its ``step``.

A :class:`TrainTask` builds the network from the model's config, the training and
validation datasets from the shards, and ``step(model, batch, ctx)``: the losses of one
batch as ``{name: scalar tensor}``, with ``loss`` the one to backpropagate. Everything else
(optimizer, EMA, step cap, time budget, DDP, resume, best/last selection, logging) is the
loop's (:mod:`amodalkit.engine.trainer`).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, DistributedSampler, Sampler, SequentialSampler

from amodalkit.data.clips import ClipConfig, ObjectClips
from amodalkit.data.frame_crops import FrameCropConfig, FrameCrops
from amodalkit.device import DistInfo
from amodalkit.errors import AmodalkitError
from amodalkit.models.baselines import deocclusion, unet
from amodalkit.models.baselines.framewise import FramewiseConfig, FramewiseNet, save_framewise
from amodalkit.models.savos.config import MODEL_NAME as SAVOS
from amodalkit.models.savos.config import SavosConfig
from amodalkit.models.savos.loss import savos_loss
from amodalkit.models.savos.net import SavosNet, save_savos
from amodalkit.ops.clip_cut import collate_clips

if TYPE_CHECKING:
    from amodalkit.engine.trainer import TrainConfig


#: a batch, or a step's losses: name -> tensor
Batch = dict[str, torch.Tensor]


@dataclass(frozen=True)
class StepContext:
    """Where a step sits: ``train`` (``index`` = optimizer steps so far) or ``val`` (batch index)."""

    phase: str
    index: int
    seed: int
    autocast: Callable[[], contextlib.AbstractContextManager]


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from a key such as (seed, phase, step)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


class EpochRandomSampler(Sampler[int]):
    """A fresh permutation per epoch from ``keyed_generator(seed, 2, epoch)`` (one process)."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose permutation the next pass yields."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.size, generator=keyed_generator(self.seed, 2, self.epoch)).tolist())

    def __len__(self) -> int:
        return self.size


class TrainTask(ABC):
    """One trained model's part of the loop (see the module docstring)."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    #: losses of ``step`` logged as ``train_KEY`` / ``val_KEY`` (``loss`` first)
    loss_keys: ClassVar[tuple[str, ...]] = ("loss",)
    val_keys: ClassVar[tuple[str, ...]] = ("loss",)
    #: what one dataset item is, for messages; and its name in the ``train_NAME_per_s`` log key
    item_label: ClassVar[str] = "items"
    rate_name: ClassVar[str] = "items"
    #: batch entries that stay on the host (crop boxes and item keys)
    host_keys: ClassVar[tuple[str, ...]] = ("box", "key")
    collate_fn: ClassVar[Callable | None] = None

    def __init__(self, model_config: object) -> None:
        if type(model_config) is not self.config_class:
            raise AmodalkitError(f"--model {self.name} needs a {self.config_class.__name__}, "
                                 f"got {type(model_config).__name__}")
        self.model_config = model_config

    @abstractmethod
    def build_net(self, device: torch.device) -> nn.Module:
        """The network of ``model_config`` on `device` (weights from the global torch seed)."""

    @abstractmethod
    def datasets(self, cfg: TrainConfig, quiet: bool) -> tuple[Dataset, Dataset | None]:
        """Training and (when ``cfg.val`` is given) validation datasets; refuses empty ones."""

    @abstractmethod
    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Batch:
        """Losses of one batch (scalar tensors on the device); ``loss`` is backpropagated in training."""

    @abstractmethod
    def save(self, path: Path, net: nn.Module, extra: dict) -> None:
        """Write `net` as this model's checkpoint at `path`."""

    def batch_items(self, batch: dict[str, torch.Tensor]) -> int:
        """Items in a batch (from a shape: no device sync)."""
        return next(v for k, v in batch.items() if k not in self.host_keys).shape[0]

    def sampler(self, dataset: Dataset, shuffle: bool, seed: int, info: DistInfo) -> Sampler:
        """Item order: each rank's share, reshuffled per epoch from (seed, epoch) with ``set_epoch``."""
        return DistributedSampler(dataset, num_replicas=info.world, rank=info.rank, shuffle=shuffle,
                                  seed=seed, drop_last=False)


class SavosTask(TrainTask):
    """SaVos (§E.2): object clips, self-supervised loss λ1 · L_M + λ2 · L_C (+ horizon)."""

    name = SAVOS
    config_class = SavosConfig
    loss_keys = ("loss", "mask", "consistency", "horizon")
    val_keys = ("loss", "mask", "consistency")
    item_label = "clips"
    rate_name = "clips"
    collate_fn = staticmethod(collate_clips)

    def build_net(self, device: torch.device) -> nn.Module:
        return SavosNet(self.model_config).to(device)

    def datasets(self, cfg: TrainConfig, quiet: bool) -> tuple[Dataset, Dataset | None]:
        mc = self.model_config
        clips = ClipConfig(clip_len=mc.clip_len, stride=cfg.clip_stride, crop_size=mc.crop_size,
                           enlarge=mc.enlarge, crop_mode=mc.crop_mode)
        train = ObjectClips(cfg.data, clips, quiet=quiet)
        if len(train) == 0:
            raise AmodalkitError("the training shards hold no object with visible pixels")
        return train, ObjectClips(cfg.val, clips, quiet=quiet) if cfg.val else None

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Batch:
        with ctx.autocast():
            out = model(batch)
        return savos_loss({k: v.float() if v.is_floating_point() else v for k, v in out.items()}, batch,
                          self.model_config)

    def save(self, path: Path, net: nn.Module, extra: dict) -> None:
        save_savos(path, net, extra)


#: loss(net, batch, generator) -> scalar tensor
FramewiseLoss = Callable[[nn.Module, Batch, torch.Generator], torch.Tensor]


class FramewiseTask(TrainTask):
    """A per-frame baseline: object-frame crops, the model's own loss with keyed surrogate randomness."""

    net_class: ClassVar[type[FramewiseNet]]
    loss: ClassVar[FramewiseLoss]
    needs_amodal: ClassVar[bool]
    item_label = "object-frames"

    def build_net(self, device: torch.device) -> nn.Module:
        return self.net_class(self.model_config).to(device).to_channels_last()

    def datasets(self, cfg: TrainConfig, quiet: bool) -> tuple[Dataset, Dataset | None]:
        mc = self.model_config
        crops = FrameCropConfig(crop_size=mc.crop_size, enlarge=mc.enlarge, with_image=mc.use_image,
                                with_amodal=self.needs_amodal)
        train = FrameCrops(cfg.data, crops, quiet=quiet)
        val = FrameCrops(cfg.val, crops, quiet=quiet) if cfg.val else None
        need = "an annotated amodal mask" if self.needs_amodal else "visible pixels"
        for name, paths, dataset in (("training", cfg.data, train), ("validation", cfg.val, val)):
            if dataset is not None and len(dataset) == 0:
                raise AmodalkitError(f"the {name} shards hold no object-frame with {need}",
                                     paths[0] if len(paths) == 1 else None)
        return train, val

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Batch:
        generator = keyed_generator(ctx.seed, 0 if ctx.phase == "train" else 1, ctx.index)
        with ctx.autocast():
            return {"loss": type(self).loss(model, batch, generator)}

    def save(self, path: Path, net: nn.Module, extra: dict) -> None:
        save_framewise(path, self.name, net, extra)

    def sampler(self, dataset: Dataset, shuffle: bool, seed: int, info: DistInfo) -> Sampler:
        """One process: a keyed permutation per epoch (or file order); several: each rank's share."""
        if info.world > 1:
            return super().sampler(dataset, shuffle, seed, info)
        return EpochRandomSampler(len(dataset), seed) if shuffle else SequentialSampler(dataset)


class DeocclusionTask(FramewiseTask):
    """Self-Deocclusion (PCNet-M): self-supervised, surrogate occluders drawn per step."""

    name = deocclusion.MODEL_NAME
    config_class = deocclusion.DeocclusionConfig
    net_class = deocclusion.DeocclusionNet
    loss = staticmethod(deocclusion.deocclusion_loss)
    needs_amodal = deocclusion.NEEDS_AMODAL


class UNetTask(FramewiseTask):
    """The supervised U-Net oracle: BCE against the amodal ground truth."""

    name = unet.MODEL_NAME
    config_class = unet.UNetConfig
    net_class = unet.UNet
    loss = staticmethod(unet.unet_loss)
    needs_amodal = unet.NEEDS_AMODAL


#: model name -> its part of the training loop
TASKS: dict[str, type[TrainTask]] = {t.name: t for t in (SavosTask, DeocclusionTask, UNetTask)}


def make_task(model_name: str, model_config: object) -> TrainTask:
    """The task of a trainable model name, checking the config's type."""
    if model_name not in TASKS:
        raise AmodalkitError(f"unknown trainable model {model_name!r}; choose from "
                             f"{', '.join(sorted(TASKS))}")
    return TASKS[model_name](model_config)


#: SaVos-only ``amodalkit train`` options and the values that mean "not given"
_SAVOS_DEFAULTS = {"preset": "paper", "clip_stride": 0}


def build_framewise_config(model_name: str, crop: str | tuple[int, int] | None = None,
                           channels: str | tuple[int, ...] | None = None, enlarge: float | None = None,
                           no_image: bool = False, **savos_options: object) -> FramewiseConfig:
    """The model's default config with CLI-style overrides (``crop`` "HxW", ``channels`` "a,b,c").

    SaVos-only options are accepted only at their "not given" values (None, False, or the
    CLI default), so ``amodalkit train --model unet --hidden 64`` fails instead of being ignored.
    """
    task = TASKS.get(model_name)
    if task is None or not issubclass(task, FramewiseTask):
        names = sorted(n for n, t in TASKS.items() if issubclass(t, FramewiseTask))
        raise AmodalkitError(f"unknown per-frame model {model_name!r}; choose from {', '.join(names)}")
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
    return task.config_class(**changes)
