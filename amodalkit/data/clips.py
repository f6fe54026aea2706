"""Object-centric clips: each object cropped around its visible masks over a run of frames.

Every item is one (video, object, clip start) of a set of shards. The clip holds ``T``
frames (``clip_len``, or the whole video), cropped with one box per clip: the union of the
object's visible masks over the clip, enlarged by ``enlarge`` around its centre, widened to
the aspect ratio of the crop and resampled to ``crop_size`` (H, W), 64x128 in the paper
(§E.1). The box may reach outside the frame (zero padding), so the scale is the same on
both axes up to rounding and the crop is exactly invertible (:meth:`CropBox.paste_back`).

With ``crop_mode="track"`` the box instead follows the object frame by frame (see
:class:`ClipCrop`), keeping the object still in the crop.

One item (all float32 unless noted)::

    image          (3, T, h, w)   RGB in [0, 1]
    visible        (T, h, w)      the object's visible mask (soft at resampled edges)
    flow           (2, T, h, w)   forward flow t -> t+1 in crop pixels (u, v); zero at T-1
    flow_backward  (2, T, h, w)   backward flow t -> t-1 in crop pixels; zero at t = 0
                                  (both from crop t to the other frame's crop)
    weight         (T, h, w)      loss weight W = (1 - sum_i V_i) + V_k: 0 on other objects
    valid          (T,)  bool     frame exists (not padding) and the object is present
    box            (T, 4) int64   y0, x0, height, width of each frame's crop box in frame pixels
    key            (4,)  int64    shard index, video index, object, clip start
    amodal         (T, h, w)      amodal ground truth (only with ``with_amodal``; never for training)
    annotated      (T,)  bool     where ``amodal`` is ground truth (only with ``with_amodal``)

Shard handles are opened lazily in each DataLoader worker (``ShardReader`` re-opens after
a fork); the index scan at construction closes them again before any worker starts.
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
from amodalkit.ops.boxes import ClipCrop, visible_pixel_counts
from amodalkit.ops.clip_cut import build_clip, pad_clip

CLIP_FIELDS = ("frames", "visible_ids", "presence", "flow", "flow_backward")


@dataclass(frozen=True)
class ClipConfig:
    """How clips are cut and cropped."""

    clip_len: int = 10
    stride: int = 0
    crop_size: tuple[int, int] = (64, 128)
    enlarge: float = 1.5
    crop_mode: str = "clip"
    with_amodal: bool = False

    def __post_init__(self) -> None:
        if self.clip_len < 0 or self.clip_len == 1:
            raise AmodalkitError("clip length must be 0 (whole video) or at least 2")
        if self.stride < 0:
            raise AmodalkitError("clip stride must be 0 (= clip length) or positive")
        if len(self.crop_size) != 2 or min(self.crop_size) < 2:
            raise AmodalkitError(f"crop size must be two sizes of at least 2, got {self.crop_size}")
        if self.enlarge <= 0:
            raise AmodalkitError("the crop enlargement factor must be positive")
        if self.crop_mode not in ("clip", "track"):
            raise AmodalkitError(f"crop mode must be 'clip' or 'track', got {self.crop_mode!r}")

    def clip_starts(self, num_frames: int) -> list[int]:
        """Start frames of the clips of a video of `num_frames` frames (the last ends at the end)."""
        if self.clip_len == 0 or num_frames <= self.clip_len:
            return [0]
        stride = self.stride or self.clip_len
        starts = list(range(0, num_frames - self.clip_len + 1, stride))
        if starts[-1] != num_frames - self.clip_len:
            starts.append(num_frames - self.clip_len)
        return starts

    def length(self, num_frames: int) -> int:
        """Frames per clip for a video of `num_frames` frames."""
        return num_frames if self.clip_len == 0 else min(self.clip_len, num_frames)


class ObjectClips(Dataset):
    """Object-centric clips over every video of a set of shards.

    The shards are amodalkit HDF5 files (see :mod:`amodalkit.io.shards`), given as paths,
    folders or globs, e.g. ``DIR/train-*.h5``; every video needs ``flow`` (``flow_backward``
    is used when present). One item per (video, object, clip start) whose object has
    visible pixels somewhere in the clip.
    """

    def __init__(self, shards: str | Path | Iterable[str | Path], config: ClipConfig | None = None,
                 quiet: bool = True) -> None:
        self.config = config or ClipConfig()
        self.paths = expand_shard_paths(shards)
        self.readers = [ShardReader(p) for p in self.paths]
        self.index: list[tuple[int, int, int, int, int]] = []
        total = sum(len(r) for r in self.readers)
        bar = tqdm(total=total, desc="index clips", unit="video", disable=quiet)
        for si, reader in enumerate(self.readers):
            for vi in range(len(reader)):
                meta = reader.meta(vi)
                if "flow" not in meta["fields"]:
                    raise AmodalkitError(f"video {reader.video_names[vi]!r} has no flow; SaVos needs it",
                                         reader.path)
                counts = visible_pixel_counts(reader.read_field(vi, "visible_ids"), meta["num_objects"])
                length = self.config.length(meta["num_frames"])
                for start in self.config.clip_starts(meta["num_frames"]):
                    seen = counts[:, start:start + length].sum(axis=1) > 0
                    self.index.extend((si, vi, int(k), start, length) for k in np.nonzero(seen)[0])
                bar.update(1)
            reader.close()
        bar.close()

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        si, vi, k, start, length = self.index[i]
        reader = self.readers[si]
        sel = slice(start, start + length)
        fields = reader.meta(vi)["fields"]
        flow_sel = slice(start, start + length - 1)
        amodal = annotated = None
        if self.config.with_amodal:
            amodal = reader.read_field(vi, "amodal", (k, sel))
            annotated = reader.read_field(vi, "amodal_annotated", (k, sel))
        item = build_clip(
            reader.read_field(vi, "frames", sel),
            reader.read_field(vi, "visible_ids", sel),
            reader.read_field(vi, "presence", (k, sel)),
            reader.read_field(vi, "flow", flow_sel),
            reader.read_field(vi, "flow_backward", flow_sel) if "flow_backward" in fields else None,
            k, self.config.crop_size, self.config.enlarge, amodal, annotated, self.config.crop_mode,
        )
        item["key"] = torch.tensor([si, vi, k, start], dtype=torch.int64)
        if self.config.clip_len:
            item = pad_clip(item, self.config.clip_len)
        return item

    def crop_box(self, item: dict[str, torch.Tensor]) -> ClipCrop:
        """The :class:`ClipCrop` of an item (or of one entry of a batch)."""
        si, vi = int(item["key"][0]), int(item["key"][1])
        return ClipCrop.from_tensor(item["box"], self.readers[si].meta(vi)["size"], self.config.crop_size)
