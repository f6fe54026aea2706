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

from amodalkit.data.clips import CropBox, boxes_from_extents, visible_pixel_counts
from amodalkit.device import to_device
from amodalkit.errors import AmodalkitError
from amodalkit.io.shards import ShardReader, Video, expand_shard_paths
from amodalkit.ops.crops import crop_maps, crop_matrices


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


def crop_object_frame(visible_ids: np.ndarray, obj: int, crop_size: tuple[int, int], enlarge: float = 1.5,
                      frame: np.ndarray | None = None,
                      amodal: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Crop object `obj` of one frame: visible_ids (H, W), frame (H, W, 3) uint8, amodal (H, W) bool.

    Returns ``visible``, ``occluder`` (h, w), ``image`` (3, h, w) when `frame` is given,
    ``amodal`` (h, w) when `amodal` is given, and ``box`` (4,) int64. Only the part of the
    frame under the box is resampled (the box always holds the visible mask, so that part is
    never empty); outside the frame the crop is zero, exactly as :meth:`CropBox.crop` pads.
    """
    vis = visible_ids == obj + 1
    box = CropBox.around(vis, crop_size, enlarge)
    ih, iw = box.image_size
    y0, x0 = max(box.y0, 0), max(box.x0, 0)
    y1, x1 = min(box.y0 + box.height, ih), min(box.x0 + box.width, iw)
    window = CropBox(box.y0 - y0, box.x0 - x0, box.height, box.width, (y1 - y0, x1 - x0), box.crop_size)
    ids = visible_ids[y0:y1, x0:x1]
    own = ids == obj + 1
    channels = [own, (ids != 0) & ~own]
    if amodal is not None:
        channels.append(np.asarray(amodal[y0:y1, x0:x1], bool))
    x = torch.from_numpy(np.stack(channels).astype(np.float32))
    if frame is not None:
        rgb = torch.from_numpy(np.ascontiguousarray(frame[y0:y1, x0:x1].transpose(2, 0, 1)))
        x = torch.cat([rgb.float() * (1 / 255), x])
    out = window.crop(x[None])[0]
    o = 3 if frame is not None else 0
    item = {"visible": out[o], "occluder": out[o + 1], "box": box.as_tensor()}
    if frame is not None:
        item["image"] = out[:3]
    if amodal is not None:
        item["amodal"] = out[o + 2]
    return item


def video_frame_crop_batch(video: Video, crop_size: tuple[int, int], enlarge: float = 1.5,
                           with_image: bool = False, device: str | torch.device = "cpu",
                           max_elements: int = 1 << 25) -> tuple[np.ndarray, dict[str, torch.Tensor] | None]:
    """Every object-frame of a video with visible pixels, cropped on `device` at once.

    Returns the (N, 2) (object, frame) pairs and their crops, equal to
    :func:`crop_object_frame`'s to float rounding: ``visible``, ``occluder`` (N, h, w),
    ``image`` (N, 3, h, w) with `with_image`, and ``box`` (N, 4) int64 on the CPU. Boxes are
    found on the CPU; the video goes to `device` once and is resampled there by batched matrix
    products (:mod:`amodalkit.ops.crops`), at most `max_elements` frame values at a time.
    """
    fh, fw = video.size
    pairs, extents = [], []
    for k in range(video.num_objects):
        own = video.visible_ids == k + 1
        rows, cols = own.any(axis=2), own.any(axis=1)
        seen = np.nonzero(rows.any(axis=1))[0]
        rows, cols = rows[seen], cols[seen]
        pairs.append(np.stack([np.full_like(seen, k), seen], axis=1))
        extents.append(np.stack([rows.argmax(1), fh - 1 - rows[:, ::-1].argmax(1),
                                 cols.argmax(1), fw - 1 - cols[:, ::-1].argmax(1)], axis=1))
    pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    if len(pairs) == 0:
        return pairs, None
    boxes = torch.from_numpy(boxes_from_extents(*np.concatenate(extents).T, crop_size, enlarge))
    dev = torch.device(device)
    ids = to_device(video.visible_ids.astype(np.int32), dev)
    frames = to_device(video.frames, dev) if with_image else None
    rows_k, rows_t = to_device(pairs.T.astype(np.int64), dev)
    gy, gx = crop_matrices(boxes, video.size, crop_size, dev)
    channels = 5 if with_image else 2
    out = torch.empty(len(pairs), channels, *crop_size, device=dev)
    chunk = max(1, max_elements // (channels * fh * fw))
    for i in range(0, len(pairs), chunk):
        r = slice(i, i + chunk)
        idr = ids[rows_t[r]]
        own = idr == (rows_k[r] + 1)[:, None, None]
        x = torch.stack([own, (idr != 0) & ~own], dim=1).float()
        if frames is not None:
            x = torch.cat([frames[rows_t[r]].permute(0, 3, 1, 2).float() * (1 / 255), x], dim=1)
        out[r] = crop_maps(x, gy[r], gx[r])
    batch = {"visible": out[:, -2].contiguous(), "occluder": out[:, -1].contiguous(), "box": boxes}
    if with_image:
        batch["image"] = out[:, :3].contiguous()
    return pairs, batch


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
