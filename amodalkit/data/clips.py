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

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from amodalkit.device import to_device
from amodalkit.errors import AmodalkitError
from amodalkit.io.shards import ShardReader, Video, expand_shard_paths
from amodalkit.ops.crops import crop_maps, crop_matrices

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


def boxes_from_extents(y_first: np.ndarray | int, y_last: np.ndarray | int, x_first: np.ndarray | int,
                       x_last: np.ndarray | int, crop_size: tuple[int, int], enlarge: float) -> np.ndarray:
    """Boxes around masks from their first and last rows and columns (inclusive): (N,) each -> (N, 4) int64.

    The box is centred on the mask's bounding box, enlarged by `enlarge` and widened to the
    aspect ratio of `crop_size`; rows are y0, x0, height, width (:meth:`CropBox.around`).
    """
    y_first, y_last, x_first, x_last = (np.atleast_1d(np.asarray(v, np.int64)) for v in
                                        (y_first, y_last, x_first, x_last))
    cy = (y_first + y_last + 1) / 2
    cx = (x_first + x_last + 1) / 2
    bh = (y_last - y_first + 1) * enlarge
    bw = (x_last - x_first + 1) * enlarge
    ratio = crop_size[0] / crop_size[1]
    bh = np.where(bh / bw < ratio, bw * ratio, bh)
    height = np.maximum(2, np.rint(bh))
    width = np.maximum(2, np.rint(height / ratio))
    return np.stack([np.floor(cy - height / 2 + 0.5), np.floor(cx - width / 2 + 0.5), height, width],
                    axis=1).astype(np.int64)


@dataclass(frozen=True)
class CropBox:
    """An axis-aligned box in frame pixels resampled to a crop, and its inverse.

    Pixel (y, x) of the frame maps to crop coordinates ((y + .5 - y0) * sy - .5,
    (x + .5 - x0) * sx - .5), with (sy, sx) = crop size / box size.
    """

    y0: int
    x0: int
    height: int
    width: int
    image_size: tuple[int, int]
    crop_size: tuple[int, int]

    @classmethod
    def around(cls, mask: np.ndarray, crop_size: tuple[int, int], enlarge: float = 1.5) -> CropBox:
        """The box around the union of `mask` ((..., H, W) bool), enlarged and set to the crop's aspect."""
        mask = np.asarray(mask, bool)
        image_size = (int(mask.shape[-2]), int(mask.shape[-1]))
        union = mask.reshape(-1, *image_size).any(axis=0)
        ys, xs = np.nonzero(union)
        if ys.size == 0:
            raise AmodalkitError("cannot crop around an empty mask")
        box = boxes_from_extents(ys.min(), ys.max(), xs.min(), xs.max(), crop_size, enlarge)[0]
        return cls(*(int(v) for v in box), image_size=image_size, crop_size=tuple(crop_size))

    @classmethod
    def from_tensor(cls, box: torch.Tensor | np.ndarray, image_size: tuple[int, int],
                    crop_size: tuple[int, int]) -> CropBox:
        """Rebuild a box from the (4,) ``box`` entry of a clip."""
        y0, x0, h, w = (int(v) for v in box)
        return cls(y0, x0, h, w, tuple(image_size), tuple(crop_size))

    def as_tensor(self) -> torch.Tensor:
        """(4,) int64: y0, x0, height, width."""
        return torch.tensor([self.y0, self.x0, self.height, self.width], dtype=torch.int64)

    @property
    def scale(self) -> tuple[float, float]:
        """(sy, sx): crop pixels per frame pixel."""
        return self.crop_size[0] / self.height, self.crop_size[1] / self.width

    def _overlap(self) -> tuple[slice, slice, slice, slice]:
        """Slices of the frame and of the box region where they overlap."""
        ih, iw = self.image_size
        fy0, fy1 = max(self.y0, 0), min(self.y0 + self.height, ih)
        fx0, fx1 = max(self.x0, 0), min(self.x0 + self.width, iw)
        fy1, fx1 = max(fy1, fy0), max(fx1, fx0)
        return (slice(fy0, fy1), slice(fx0, fx1),
                slice(fy0 - self.y0, fy1 - self.y0), slice(fx0 - self.x0, fx1 - self.x0))

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        """Resample frames into the crop: (N, C, H, W) float -> (N, C, h, w), zero outside the frame."""
        n, c = x.shape[:2]
        fy, fx, ry, rx = self._overlap()
        region = x.new_zeros((n, c, self.height, self.width))
        region[:, :, ry, rx] = x[:, :, fy, fx]
        down = self.height > self.crop_size[0]
        return F.interpolate(region, size=self.crop_size, mode="bilinear", align_corners=False,
                             antialias=down)

    def crop_flow(self, flow: torch.Tensor) -> torch.Tensor:
        """Flow in frame pixels to flow in crop pixels: (N, 2, H, W) (u, v) -> (N, 2, h, w)."""
        sy, sx = self.scale
        out = self.crop(flow)
        return out * out.new_tensor([sx, sy]).view(1, 2, 1, 1)

    def paste_back(self, pred_crop: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Crop-space maps back to the frame: (..., h, w) -> (..., H, W), zero outside the box.

        Each frame pixel samples the crop bilinearly at its centre, so for an integer
        upscale a thresholded mask survives the round trip exactly.
        """
        is_numpy = isinstance(pred_crop, np.ndarray)
        x = torch.from_numpy(np.asarray(pred_crop, np.float32)) if is_numpy else pred_crop.float()
        lead = x.shape[:-2]
        x = x.reshape(-1, 1, *x.shape[-2:])
        region = F.interpolate(x, size=(self.height, self.width), mode="bilinear", align_corners=False)
        out = x.new_zeros((x.shape[0], 1, *self.image_size))
        fy, fx, ry, rx = self._overlap()
        out[:, :, fy, fx] = region[:, :, ry, rx]
        out = out.reshape(*lead, *self.image_size)
        return out.numpy() if is_numpy else out


@dataclass(frozen=True)
class ClipCrop:
    """The crop boxes of one clip: one size and scale, one origin per frame.

    Mode ``clip`` (the default): every frame uses the box around the union of the visible
    masks over the clip. Mode ``track``: the box follows the object, moved each frame by its
    mean visible flow ("common fate"), and is sized to hold every frame's visible mask
    relative to that track; the object then stays still in the crop while the frame moves.
    """

    boxes: tuple[CropBox, ...]

    @classmethod
    def around(cls, visible: np.ndarray, flow: np.ndarray | None, crop_size: tuple[int, int],
               enlarge: float = 1.5, mode: str = "clip") -> ClipCrop:
        """Boxes for visible masks (T, H, W) bool with forward flow (T-1, H, W, 2) (used by ``track``)."""
        visible = np.asarray(visible, bool)
        if mode == "clip":
            box = CropBox.around(visible, crop_size, enlarge)
            return cls((box,) * visible.shape[0])
        if mode != "track":
            raise AmodalkitError(f"crop mode must be 'clip' or 'track', got {mode!r}")
        t = visible.shape[0]
        pos = np.zeros((t, 2))
        step = np.zeros(2)
        for i in range(t - 1):
            if visible[i].any() and flow is not None:
                step = np.asarray(flow[i][visible[i]], np.float64).mean(axis=0)[::-1]
            pos[i + 1] = pos[i] + step
        lo, hi = np.full(2, np.inf), np.full(2, -np.inf)
        for i in range(t):
            ys, xs = np.nonzero(visible[i])
            if ys.size:
                rel = np.stack([ys, xs], axis=1) - pos[i]
                lo, hi = np.minimum(lo, rel.min(axis=0)), np.maximum(hi, rel.max(axis=0) + 1)
        if not np.isfinite(lo).all():
            raise AmodalkitError("cannot crop around an empty mask")
        centre = (lo + hi) / 2
        bh, bw = (hi - lo) * enlarge
        ratio = crop_size[0] / crop_size[1]
        if bh / bw < ratio:
            bh = bw * ratio
        height = max(2, round(bh))
        width = max(2, round(height / ratio))
        image_size = (int(visible.shape[-2]), int(visible.shape[-1]))
        return cls(tuple(CropBox(math.floor(centre[0] + p[0] - height / 2 + 0.5),
                                 math.floor(centre[1] + p[1] - width / 2 + 0.5), height, width,
                                 image_size, tuple(crop_size)) for p in pos))

    @classmethod
    def from_tensor(cls, boxes: torch.Tensor | np.ndarray, image_size: tuple[int, int],
                    crop_size: tuple[int, int]) -> ClipCrop:
        """Rebuild from the (T, 4) ``box`` entry of a clip."""
        return cls(tuple(CropBox.from_tensor(b, image_size, crop_size) for b in np.asarray(boxes)))

    def as_tensor(self) -> torch.Tensor:
        """(T, 4) int64: y0, x0, height, width per frame."""
        return torch.tensor([[b.y0, b.x0, b.height, b.width] for b in self.boxes], dtype=torch.int64)

    @property
    def scale(self) -> tuple[float, float]:
        """(sy, sx): crop pixels per frame pixel (the same for every frame)."""
        return self.boxes[0].scale

    def origin_steps(self) -> np.ndarray:
        """How far each box moved from the previous frame's, in crop pixels: (T, 2) (dx, dy); row 0 zero."""
        o = np.array([[b.x0, b.y0] for b in self.boxes], np.float64)
        sy, sx = self.scale
        steps = np.zeros_like(o)
        steps[1:] = (o[1:] - o[:-1]) * (sx, sy)
        return steps

    def paste_back(self, pred_crop: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """Per-frame crops back to the frames: (T, h, w) -> (T, H, W), zero outside each box."""
        if all(b == self.boxes[0] for b in self.boxes):
            return self.boxes[0].paste_back(pred_crop)
        parts = [b.paste_back(pred_crop[i]) for i, b in enumerate(self.boxes)]
        return np.stack(parts) if isinstance(pred_crop, np.ndarray) else torch.stack(parts)


def build_clip(frames: np.ndarray, visible_ids: np.ndarray, presence: np.ndarray, flow: np.ndarray | None,
               flow_backward: np.ndarray | None, obj: int, crop_size: tuple[int, int], enlarge: float,
               amodal: np.ndarray | None = None, annotated: np.ndarray | None = None,
               mode: str = "clip") -> dict[str, torch.Tensor]:
    """One object's clip from a run of L frames (module docstring for the item layout).

    frames (L, H, W, 3) uint8; visible_ids (L, H, W); presence (L,) bool; flow and
    flow_backward (L-1, H, W, 2) (backward defaults to the negated forward flow);
    amodal (L, H, W) bool and annotated (L,) bool, optional. Every channel is cut from
    each frame's box and resampled in one call; the flow takes the box motion into account,
    so it maps crop pixels of frame t to crop pixels of the neighbouring frame's crop.
    """
    if flow is None:
        raise AmodalkitError("SaVos needs optical flow in the shards; add it with the flow preprocessing")
    length = visible_ids.shape[0]
    vis = visible_ids == obj + 1
    crop = ClipCrop.around(vis, flow, crop_size, enlarge, mode)
    height, width = crop.boxes[0].height, crop.boxes[0].width
    n_ch = 10 if amodal is not None else 9
    region = np.zeros((length, height, width, n_ch), np.float32)
    for t, box in enumerate(crop.boxes):
        fy, fx, ry, rx = box._overlap()
        part = region[t, ry, rx]
        part[..., 0:3] = frames[t, fy, fx] * np.float32(1 / 255)
        ids = visible_ids[t, fy, fx]
        part[..., 3] = ids == obj + 1
        part[..., 4] = (ids == 0) | (ids == obj + 1)
        if t < length - 1:
            part[..., 5:7] = flow[t, fy, fx]
        if t > 0:
            part[..., 7:9] = -flow[t - 1, fy, fx] if flow_backward is None else flow_backward[t - 1, fy, fx]
        if amodal is not None:
            part[..., 9] = amodal[t, fy, fx]
        region[t, ry, rx] = part
    down = height > crop_size[0]
    out = F.interpolate(torch.from_numpy(region).permute(0, 3, 1, 2), size=crop_size, mode="bilinear",
                        align_corners=False, antialias=down)
    sy, sx = crop.scale
    out[:, 5:9] *= out.new_tensor([sx, sy, sx, sy]).view(1, 4, 1, 1)
    steps = torch.from_numpy(crop.origin_steps()).float()
    if length > 1 and steps.abs().sum() > 0:
        out[:-1, 5:7] -= steps[1:, :, None, None]
        out[1:, 7:9] += steps[1:, :, None, None]
    out = out.permute(1, 0, 2, 3)
    item = {
        "image": out[0:3].contiguous(),
        "visible": out[3].contiguous(),
        "flow": out[5:7].contiguous(),
        "flow_backward": out[7:9].contiguous(),
        "weight": out[4].contiguous(),
        "valid": torch.from_numpy(np.asarray(presence, bool).copy()),
        "box": crop.as_tensor(),
    }
    if amodal is not None:
        item["amodal"] = out[9].contiguous()
        item["annotated"] = torch.from_numpy(np.asarray(annotated, bool).copy())
    return item


def video_clip_batch(video: Video, length: int, starts: Sequence[int], crop_size: tuple[int, int],
                     enlarge: float, mode: str = "clip", device: str | torch.device = "cpu",
                     max_elements: int = 1 << 25) -> tuple[list[tuple[int, int, ClipCrop]],
                                                           dict[str, torch.Tensor] | None]:
    """Every (object, start) clip of `length` frames where the object is visible, cut on `device` at once.

    The clips equal :func:`build_clip`'s to float rounding, stacked (N clips, L = `length`):
    image (N, 3, L, h, w), visible and weight (N, L, h, w), flow and flow_backward
    (N, 2, L, h, w), valid (N, L) bool and box (N, L, 4) int64. Boxes are found on the CPU
    (:meth:`ClipCrop.around`); the video goes to `device` once and every channel of every
    clip frame is resampled there by batched matrix products (:mod:`amodalkit.ops.crops`),
    at most `max_elements` frame values at a time. Returns each clip's (object, start, crop)
    and the batch (None when no object is visible in any clip).
    """
    if video.flow is None:
        raise AmodalkitError("SaVos needs optical flow in the shards; add it with the flow preprocessing")
    where = []
    for k in range(video.num_objects):
        for s in starts:
            vis = video.visible_ids[s:s + length] == k + 1
            if vis.any():
                crop = ClipCrop.around(vis, video.flow[s:s + length - 1], crop_size, enlarge, mode)
                where.append((k, s, crop))
    if not where:
        return where, None
    n, (h, w), (fh, fw) = len(where), crop_size, video.size
    dev = torch.device(device)
    boxes = torch.stack([c.as_tensor() for _, _, c in where])
    scale = torch.tensor([[c.scale[1], c.scale[0]] for _, _, c in where], dtype=torch.float32)
    steps = torch.from_numpy(np.stack([c.origin_steps() for _, _, c in where])).float()
    valid = np.stack([video.presence[k, s:s + length] for k, s, _ in where])
    pos = torch.arange(length).repeat(n)
    rows_t = (torch.tensor([s for _, s, _ in where])[:, None] + torch.arange(length)).reshape(-1)
    rows_k = torch.tensor([k for k, _, _ in where]).repeat_interleave(length)
    frames = to_device(video.frames, dev)
    ids = to_device(video.visible_ids.astype(np.int32), dev)
    zero = np.zeros((1, fh, fw, 2), np.float32)
    flow = to_device(np.concatenate([video.flow.astype(np.float32), zero]), dev)
    back = -video.flow if video.flow_backward is None else video.flow_backward
    back = to_device(np.concatenate([zero, back.astype(np.float32)]), dev)
    pos, rows_t, rows_k = (x.to(dev, non_blocking=True) for x in (pos, rows_t, rows_k))
    gy, gx = crop_matrices(boxes.reshape(-1, 4), video.size, crop_size, dev)
    out = torch.empty(n * length, 9, h, w, device=dev)
    chunk = max(1, max_elements // (9 * fh * fw))
    for i in range(0, n * length, chunk):
        r = slice(i, i + chunk)
        t = rows_t[r]
        idr = ids[t]
        vis = idr == (rows_k[r] + 1)[:, None, None]
        x = torch.empty(t.shape[0], 9, fh, fw, device=dev)
        x[:, 0:3] = frames[t].permute(0, 3, 1, 2)
        x[:, 0:3] *= 1 / 255
        x[:, 3] = vis
        x[:, 4] = (idr == 0) | vis
        x[:, 5:7] = flow[t].permute(0, 3, 1, 2)
        x[:, 5:7] *= (pos[r] < length - 1)[:, None, None, None]
        x[:, 7:9] = back[t].permute(0, 3, 1, 2)
        x[:, 7:9] *= (pos[r] > 0)[:, None, None, None]
        out[r] = crop_maps(x, gy[r], gx[r])
    out = out.reshape(n, length, 9, h, w)
    sc = scale.to(dev, non_blocking=True).repeat(1, 2)[:, None, :, None, None]
    out[:, :, 5:9] *= sc
    st = steps.to(dev, non_blocking=True)[:, 1:, :, None, None]
    out[:, :-1, 5:7] -= st
    out[:, 1:, 7:9] += st
    batch = {
        "image": out[:, :, 0:3].transpose(1, 2).contiguous(),
        "visible": out[:, :, 3].contiguous(),
        "flow": out[:, :, 5:7].transpose(1, 2).contiguous(),
        "flow_backward": out[:, :, 7:9].transpose(1, 2).contiguous(),
        "weight": out[:, :, 4].contiguous(),
        "valid": to_device(valid, dev),
        "box": boxes.to(dev, non_blocking=True),
    }
    return where, batch


def pad_clip(item: dict[str, torch.Tensor], length: int) -> dict[str, torch.Tensor]:
    """Pad a clip along time to `length` frames (padding frames are not ``valid``)."""
    t = item["valid"].shape[0]
    if t >= length:
        return item
    out = {}
    for name, value in item.items():
        if name == "key":
            out[name] = value
            continue
        if name == "box":
            out[name] = torch.cat([value, value[-1:].expand(length - t, 4)])
            continue
        axis = 1 if name in ("image", "flow", "flow_backward") else 0
        shape = list(value.shape)
        shape[axis] = length - t
        out[name] = torch.cat([value, value.new_zeros(shape)], dim=axis)
    return out


def collate_clips(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack clips into a batch, padding shorter clips in time to the longest."""
    length = max(int(it["valid"].shape[0]) for it in items)
    padded = [pad_clip(it, length) for it in items]
    return {name: torch.stack([it[name] for it in padded]) for name in padded[0]}


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


def visible_pixel_counts(visible_ids: np.ndarray, num_objects: int) -> np.ndarray:
    """Visible pixels per object and frame: (T, H, W) id map -> (K, T) int."""
    t = visible_ids.shape[0]
    flat = visible_ids.reshape(t, -1).astype(np.int64) + (np.arange(t) * (num_objects + 1))[:, None]
    counts = np.bincount(flat.ravel(), minlength=t * (num_objects + 1)).reshape(t, num_objects + 1)
    return counts[:, 1:].T
