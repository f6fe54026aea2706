"""The interface every amodal method implements: predict a video's amodal masks."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from amodalkit.shards import Video


class AmodalMethod(ABC):
    """Predicts the amodal mask of every object of a video from what a shard holds."""

    name: str = "method"
    #: shard fields ``predict_video`` reads (visible_ids and presence are always read)
    fields: tuple[str, ...] = ()

    @abstractmethod
    def predict_video(self, video: Video) -> np.ndarray:
        """Amodal probabilities (or bools) for every object-frame: (K, T, H, W) in [0, 1]."""

    def describe(self) -> dict:
        """Settings that identify this method in a results file."""
        return {"method": self.name}
