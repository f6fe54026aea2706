"""What models implement: an amodal method predicts a video's masks; a trained model adds a step."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from amodalkit.io.shards import Video

if TYPE_CHECKING:
    import torch
    from torch import nn

#: a batch, or a step's losses: name -> tensor
Batch = dict[str, "torch.Tensor"]


class AmodalMethod(ABC):
    """Predicts the amodal mask of every object of a video from what a shard holds."""

    name: str = "method"
    #: shard fields ``predict_video`` reads (visible_ids and presence are always read)
    fields: tuple[str, ...] = ()
    #: how many videos a caller should hand :meth:`predict_videos` at once
    videos_per_batch: int = 1

    @abstractmethod
    def predict_video(self, video: Video) -> np.ndarray:
        """Amodal probabilities (or bools) for every object-frame: (K, T, H, W) in [0, 1]."""

    def predict_videos(self, videos: Sequence[Video]) -> list[np.ndarray]:
        """:meth:`predict_video` of each video; batched methods predict them together."""
        return [self.predict_video(v) for v in videos]

    def describe(self) -> dict:
        """Settings that identify this method in a results file."""
        return {"method": self.name}


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters of a network."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def keyed_generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from a key such as (seed, phase, step)."""
    import torch

    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


@dataclass(frozen=True)
class StepContext:
    """Where a training step sits: ``train`` (``index`` = optimizer steps so far) or ``val`` (batch index).

    ``autocast()`` is the loop's mixed-precision context; :meth:`generator` the step's own
    random stream (the same for a step whatever ran before it, so resumed runs match).
    """

    phase: str
    index: int
    seed: int
    autocast: Callable[[], contextlib.AbstractContextManager]

    def generator(self) -> torch.Generator:
        """``keyed_generator(seed, 0 for train / 1 for val, index)``."""
        return keyed_generator(self.seed, 0 if self.phase == "train" else 1, self.index)
