"""What the loop feeds each trained model: the data kind of its spec, its network and its ``step``.

A model's facts are its :class:`~amodalkit.models.registry.ModelSpec` (network, config,
step, checkpoint writer, whether it reads amodal labels). A :class:`TrainTask` adds what
depends only on the spec's data kind: object clips (:class:`ClipTask`) or per-frame object
crops (:class:`FrameCropTask`), their datasets, sampler and collate function. Everything else
(optimizer, EMA, step cap, time budget, DDP, resume, best/last selection, logging) is the
loop's (:mod:`amodalkit.engine.trainer`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset, DistributedSampler, Sampler, SequentialSampler

from amodalkit.data.clips import ClipConfig, ObjectClips
from amodalkit.data.frame_crops import FrameCropConfig, FrameCrops
from amodalkit.device import DistInfo
from amodalkit.errors import AmodalkitError
from amodalkit.models.base import Batch, StepContext, keyed_generator
from amodalkit.models.registry import ModelSpec, get_model_spec
from amodalkit.ops.clip_cut import collate_clips

if TYPE_CHECKING:
    from amodalkit.engine.trainer import TrainConfig


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


class ClipsPerObjectSampler(Sampler[int]):
    """``n`` random clips of each object per epoch (all of an object's clips when it has fewer).

    `index` holds one (shard, video, object, ...) tuple per dataset item, as
    :attr:`ObjectClips.index <amodalkit.data.clips.ObjectClips.index>` does. The draw and its
    order come from ``keyed_generator(seed, 3, epoch)``; with ``shuffle`` False (validation)
    the draw is the same every epoch and in index order. Each of ``world`` ranks takes every
    ``world``-th clip, the list padded by wrapping so that every rank has as many.
    """

    def __init__(self, index: Sequence[tuple[int, ...]], n: int, seed: int, info: DistInfo,
                 shuffle: bool) -> None:
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, entry in enumerate(index):
            groups.setdefault(tuple(entry[:3]), []).append(i)
        self.groups, self.n, self.seed = list(groups.values()), n, seed
        self.info, self.shuffle = info, shuffle
        self.total = sum(min(n, len(g)) for g in self.groups)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose draw the next pass yields (validation ignores it)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        gen = keyed_generator(self.seed, 3, self.epoch if self.shuffle else 0)
        chosen = []
        for members in self.groups:
            picks = torch.randperm(len(members), generator=gen)[:self.n].sort().values.tolist()
            chosen.extend(members[j] for j in picks)
        if self.shuffle:
            chosen = [chosen[j] for j in torch.randperm(len(chosen), generator=gen).tolist()]
        world = self.info.world
        padded = (chosen * world)[:len(self) * world] if chosen else []
        return iter(padded[self.info.rank::world])

    def __len__(self) -> int:
        return math.ceil(self.total / self.info.world)


class TrainTask(ABC):
    """One trained model's part of the loop (see the module docstring)."""

    #: what one dataset item is, for messages; and its name in the ``train_NAME_per_s`` log key
    item_label: ClassVar[str] = "items"
    rate_name: ClassVar[str] = "items"
    #: batch entries that stay on the host (crop boxes and item keys)
    host_keys: ClassVar[tuple[str, ...]] = ("box", "key")
    collate_fn: ClassVar[Callable | None] = None

    def __init__(self, spec: ModelSpec, model_config: object) -> None:
        if type(model_config) is not spec.config:
            raise AmodalkitError(f"--model {spec.name} needs a {spec.config.__name__}, "
                                 f"got {type(model_config).__name__}")
        self.spec, self.model_config = spec, model_config
        self.name, self.config_class = spec.name, spec.config
        self.loss_keys, self.val_keys = spec.loss_keys, spec.val_keys

    def build_net(self, device: torch.device) -> nn.Module:
        """The network of ``model_config`` on `device` (weights from the global torch seed)."""
        return self.spec.net(self.model_config).to(device)

    @abstractmethod
    def datasets(self, cfg: TrainConfig, quiet: bool) -> tuple[Dataset, Dataset | None]:
        """Training and (when ``cfg.val`` is given) validation datasets; refuses empty ones."""

    def step(self, model: nn.Module, batch: Batch, ctx: StepContext) -> Batch:
        """Losses of one batch (scalar tensors on the device); ``loss`` is backpropagated in training."""
        return self.spec.step(model, batch, self.model_config, ctx)

    def save(self, path: Path, net: nn.Module, extra: dict) -> None:
        """Write `net` as this model's checkpoint at `path`."""
        self.spec.save(path, net, extra)

    def batch_items(self, batch: dict[str, torch.Tensor]) -> int:
        """Items in a batch (from a shape: no device sync)."""
        return next(v for k, v in batch.items() if k not in self.host_keys).shape[0]

    def sampler(self, dataset: Dataset, shuffle: bool, seed: int, info: DistInfo) -> Sampler:
        """Item order: each rank's share, reshuffled per epoch from (seed, epoch) with ``set_epoch``."""
        return DistributedSampler(dataset, num_replicas=info.world, rank=info.rank, shuffle=shuffle,
                                  seed=seed, drop_last=False)


class ClipTask(TrainTask):
    """Object clips (SaVos): one item per (video, object, clip start).

    No amodal label is read, except on the validation shards under ``--select-by
    val_amodal_iou`` (checkpoint selection on ground truth, as the released SaVos scripts
    do). With ``clips_per_object`` each epoch draws that many clips of each object
    (:class:`ClipsPerObjectSampler`); with ``--clip-stride 1`` that is a random window.
    """

    item_label = "clips"
    rate_name = "clips"
    collate_fn = staticmethod(collate_clips)
    clips_per_object = 0

    def datasets(self, cfg: TrainConfig, quiet: bool) -> tuple[Dataset, Dataset | None]:
        mc = self.model_config
        self.clips_per_object = cfg.clips_per_object
        clips = ClipConfig(clip_len=mc.clip_len, stride=cfg.clip_stride, crop_size=mc.crop_size,
                           enlarge=mc.enlarge, crop_mode=mc.crop_mode, with_amodal=self.spec.reads_amodal)
        train = ObjectClips(cfg.data, clips, quiet=quiet)
        if len(train) == 0:
            raise AmodalkitError("the training shards hold no object with visible pixels")
        if not cfg.val:
            return train, None
        labelled = self.spec.reads_amodal or cfg.select_by == "val_amodal_iou"
        return train, ObjectClips(cfg.val, replace(clips, with_amodal=labelled), quiet=quiet)

    def sampler(self, dataset: Dataset, shuffle: bool, seed: int, info: DistInfo) -> Sampler:
        """As every task's, or ``clips_per_object`` clips of each object (:class:`ClipsPerObjectSampler`)."""
        if self.clips_per_object:
            return ClipsPerObjectSampler(dataset.index, self.clips_per_object, seed, info, shuffle)
        return super().sampler(dataset, shuffle, seed, info)


class FrameCropTask(TrainTask):
    """Per-frame object crops (the per-frame baselines); amodal crops only for a model that reads labels."""

    item_label = "object-frames"

    def datasets(self, cfg: TrainConfig, quiet: bool) -> tuple[Dataset, Dataset | None]:
        if cfg.clips_per_object:
            raise AmodalkitError(f"--clips-per-object is for clip models (savos), not --model {self.name}")
        mc, needs_amodal = self.model_config, self.spec.reads_amodal
        crops = FrameCropConfig(crop_size=mc.crop_size, enlarge=mc.enlarge, with_image=mc.use_image,
                                with_amodal=needs_amodal)
        train = FrameCrops(cfg.data, crops, quiet=quiet)
        val = FrameCrops(cfg.val, crops, quiet=quiet) if cfg.val else None
        need = "an annotated amodal mask" if needs_amodal else "visible pixels"
        for name, paths, dataset in (("training", cfg.data, train), ("validation", cfg.val, val)):
            if dataset is not None and len(dataset) == 0:
                raise AmodalkitError(f"the {name} shards hold no object-frame with {need}",
                                     paths[0] if len(paths) == 1 else None)
        return train, val

    def sampler(self, dataset: Dataset, shuffle: bool, seed: int, info: DistInfo) -> Sampler:
        """One process: a keyed permutation per epoch (or file order); several: each rank's share."""
        if info.world > 1:
            return super().sampler(dataset, shuffle, seed, info)
        return EpochRandomSampler(len(dataset), seed) if shuffle else SequentialSampler(dataset)


#: a spec's data kind -> its part of the training loop
DATA_TASKS: dict[str, type[TrainTask]] = {"clips": ClipTask, "frame_crops": FrameCropTask}


def make_task(model_name: str, model_config: object) -> TrainTask:
    """The task of a trained model's name, checking the config's type."""
    spec = get_model_spec(model_name)
    if not spec.trained:
        raise AmodalkitError(f"{model_name} is rule-based and has nothing to train")
    return DATA_TASKS[spec.data](spec, model_config)
