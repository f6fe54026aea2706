"""Object-frame crops: one object at one frame, cropped around its visible mask (per-frame baselines).

Every item is one (video, object, frame) of a set of shards where the object has visible
pixels. The box is :meth:`CropBox.around` the object's visible mask in that frame, enlarged
by ``enlarge`` and resampled to ``crop_size`` (32x32 by default); the same crop is used at
inference (:func:`crop_object_frame`), and :meth:`CropBox.paste_back` inverts it.

The shards (see :mod:`amodalkit.io.shards`) are given as files, folders or globs::

    DIR/
      train-00000.h5      /videos/<name>/{frames, visible_ids, presence, amodal, amodal_annotated, ...}
      train-00001.h5
      val-00000.h5

One item (float32 unless noted)::

    image     (3, h, w)   RGB in [0, 1] (only with ``with_image``)
    visible   (h, w)      the object's visible mask (soft at resampled edges)
    occluder  (h, w)      the other objects' visible masks in that frame (union)
    amodal    (h, w)      amodal ground truth (only with ``with_amodal``)
    box       (4,)  int64 y0, x0, height, width of the crop box in frame pixels
    key       (4,)  int64 shard index, video index, object, frame

``amodal`` is read only with ``with_amodal`` (the supervised U-Net); then only object-frames
whose amodal mask is annotated are items. Self-supervised training never sets it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from amodalkit.errors import AmodalkitError
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shards import expand_shard_paths
from amodalkit.ops.boxes import CropBox, visible_pixel_counts
from amodalkit.ops.frame_cut import crop_object_frame


@dataclass(frozen=True)
class FrameCropConfig:
    """How object-frames are cropped and which channels an item carries."""

    crop_size: tuple[int, int] = (32, 32)
    enlarge: float = 1.5
    with_image: bool = True
    with_amodal: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_size", tuple(int(v) for v in self.crop_size))
        if len(self.crop_size) != 2 or min(self.crop_size) < 2:
            raise AmodalkitError(f"crop size must be two sizes of at least 2, got {self.crop_size}")
        if self.enlarge <= 0:
            raise AmodalkitError("the crop enlargement factor must be positive")


class FrameCrops(Dataset):
    """Object-frame crops over every video of a set of shards (module docstring for the layout).

    One item per (video, object, frame) with visible pixels (and, with ``with_amodal``, an
    annotated amodal mask). Shard handles reopen lazily in each DataLoader worker.
    """

    def __init__(self, shards: str | Path | Iterable[str | Path], config: FrameCropConfig | None = None,
                 quiet: bool = True) -> None:
        self.config = config or FrameCropConfig()
        self.paths = expand_shard_paths(shards)
        self.readers = [ShardReader(p) for p in self.paths]
        self.index: list[tuple[int, int, int, int]] = []
        total = sum(len(r) for r in self.readers)
        bar = tqdm(total=total, desc="index object-frames", unit="video", disable=quiet)
        for si, reader in enumerate(self.readers):
            for vi in range(len(reader)):
                meta = reader.meta(vi)
                seen = visible_pixel_counts(reader.read_field(vi, "visible_ids"), meta["num_objects"]) > 0
                if self.config.with_amodal:
                    seen &= reader.read_field(vi, "amodal_annotated")
                self.index.extend((si, vi, int(k), int(t)) for k, t in zip(*np.nonzero(seen)))
                bar.update(1)
            reader.close()
        bar.close()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        si, vi, k, t = self.index[i]
        reader = self.readers[si]
        cfg = self.config
        item = crop_object_frame(
            reader.read_field(vi, "visible_ids", t), k, cfg.crop_size, cfg.enlarge,
            frame=reader.read_field(vi, "frames", t) if cfg.with_image else None,
            amodal=reader.read_field(vi, "amodal", (k, t)) if cfg.with_amodal else None,
        )
        item["key"] = torch.tensor([si, vi, k, t], dtype=torch.int64)
        return item

    def crop_box(self, item: dict[str, torch.Tensor]) -> CropBox:
        """The :class:`CropBox` of an item (or of one entry of a batch)."""
        si, vi = int(item["key"][0]), int(item["key"][1])
        return CropBox.from_tensor(item["box"], self.readers[si].meta(vi)["size"], self.config.crop_size)
