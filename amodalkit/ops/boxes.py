"""Crop boxes around objects: a box per clip or per frame, the crop's scale, and pasting back."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from amodalkit.errors import AmodalkitError


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


def visible_pixel_counts(visible_ids: np.ndarray, num_objects: int) -> np.ndarray:
    """Visible pixels per object and frame: (T, H, W) id map -> (K, T) int."""
    t = visible_ids.shape[0]
    flat = visible_ids.reshape(t, -1).astype(np.int64) + (np.arange(t) * (num_objects + 1))[:, None]
    counts = np.bincount(flat.ravel(), minlength=t * (num_objects + 1)).reshape(t, num_objects + 1)
    return counts[:, 1:].T
