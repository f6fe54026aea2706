"""The interface every amodal method implements: predict a video's amodal masks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from amodalkit.io.shards import Video

if TYPE_CHECKING:
    from torch import nn


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
