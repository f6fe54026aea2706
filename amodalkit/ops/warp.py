"""Warps along optical flow, all in one place: forward (splat) and backward (sample).

Flow is (u, v) = (dx, dy) in pixels, forward flow mapping frame t to t+1:
``I[t+1][y + v, x + u] ~ I[t][y, x]`` (the shard convention).

* forward: :func:`splat_mask` (a bool mask moved pixel by pixel, nearest target; the
  temporal baseline and the tracker) and :func:`forward_warp` (soft maps, bilinear
  splatting, differentiable; SaVos);
* backward: :func:`warp_backward` (OpenCV remap, numpy) and :func:`warp_backward_torch`
  (``grid_sample``, differentiable; FlowNet2's Resample2d).

torch is imported inside the tensor functions, so numpy users do not load it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from amodalkit.errors import AmodalkitError

if TYPE_CHECKING:
    import torch


def splat_mask(mask: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Move each pixel of a mask by its flow to the nearest pixel: (H, W) bool, (H, W, 2) -> (H, W) bool.

    Pixels that land outside the frame are dropped; only the mask's bounding box is read.
    """
    out = np.zeros(mask.shape, bool)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return out
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    ys, xs = np.nonzero(mask[y0:y1, x0:x1])
    d = flow[y0:y1, x0:x1][ys, xs].astype(np.float64)
    nx = np.rint(xs + x0 + d[:, 0]).astype(np.int64)
    ny = np.rint(ys + y0 + d[:, 1]).astype(np.int64)
    keep = (nx >= 0) & (nx < mask.shape[1]) & (ny >= 0) & (ny < mask.shape[0])
    out[ny[keep], nx[keep]] = True
    return out


def forward_warp(src: torch.Tensor, flow: torch.Tensor, mode: str = "splat") -> torch.Tensor:
    """Move `src` along `flow` so that out[x + flow(x)] = src[x]: (N, C, h, w), (N, 2, h, w) -> (N, C, h, w).

    ``splat``: bilinear forward splatting, normalised where several sources land on one
    pixel (weights summing above 1), so masks stay in [0, 1]; differentiable in both inputs.
    ``sample``: the official code's approximation, backward sampling at x - flow(x).
    ``official``: that sampling exactly as the released ``utils/warp.py`` does it, with its
    pixel grid normalised as 2x/W - 1 (so half a pixel up and left of x - flow(x)) and
    border padding (outside reads the nearest edge pixel).
    Flow channels are (u, v) = (dx, dy) in pixels; nothing enters from outside the frame
    (except through ``official``'s border padding).
    """
    import torch
    import torch.nn.functional as F

    src = src.float()
    flow = flow.float()
    n, c, h, w = src.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=src.device, dtype=flow.dtype),
                            torch.arange(w, device=src.device, dtype=flow.dtype), indexing="ij")
    if mode in ("sample", "official"):
        half = 0.0 if mode == "official" else 1.0
        gx = (xs - flow[:, 0]) * (2.0 / w) + (half / w - 1.0)
        gy = (ys - flow[:, 1]) * (2.0 / h) + (half / h - 1.0)
        return F.grid_sample(src, torch.stack([gx, gy], dim=-1), mode="bilinear",
                             padding_mode="zeros" if mode == "sample" else "border", align_corners=False)
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    x0 = torch.floor(x)
    y0 = torch.floor(y)
    fx = x - x0
    fy = y - y0
    out = src.new_zeros((n, c, h * w))
    wsum = src.new_zeros((n, 1, h * w))
    flat_src = src.reshape(n, c, h * w)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            cx = x0 + dx
            cy = y0 + dy
            inside = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
            weight = (wx * wy * inside).reshape(n, 1, h * w)
            idx = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).long().reshape(n, 1, h * w)
            out = out.scatter_add(2, idx.expand(n, c, h * w), flat_src * weight)
            wsum = wsum.scatter_add(2, idx, weight)
    return (out / wsum.clamp(min=1.0)).reshape(n, c, h, w)


def _remap(image: np.ndarray, flow: np.ndarray, border: int) -> np.ndarray:
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    map_x = gx + flow[..., 0].astype(np.float32)
    map_y = gy + flow[..., 1].astype(np.float32)
    chans = [image[..., i:i + 4] for i in range(0, image.shape[2], 4)]
    out = [cv2.remap(np.ascontiguousarray(c), map_x, map_y, cv2.INTER_LINEAR, borderMode=border,
                     borderValue=0) for c in chans]
    return np.concatenate([o.reshape(h, w, -1) for o in out], axis=2)


def warp_backward(image: np.ndarray, flow: np.ndarray, padding: str = "zeros") -> np.ndarray:
    """Sample `image` at each pixel plus its flow: ``out[y, x] = image[y + v, x + u]`` (bilinear).

    Args:
        image: ``(H, W)``, ``(H, W, C)`` or a batch ``(B, H, W, C)``; uint8, uint16, int16,
            float32 or float64 (other dtypes, e.g. bool, are sampled as float32).
        flow: ``(H, W, 2)`` or ``(B, H, W, 2)`` in pixels (``u`` along x, ``v`` along y).
        padding: ``"zeros"`` (outside reads 0) or ``"border"`` (outside reads the nearest edge).

    Returns:
        The warped image, same shape as `image`. With the forward flow of frames t -> t+1,
        ``warp_backward(frame[t+1], flow)`` approximates ``frame[t]``. OpenCV interpolates
        with 1/32-pixel weights; use :func:`warp_backward_torch` for exact, differentiable sampling.
    """
    if padding not in ("zeros", "border"):
        raise AmodalkitError(f"padding must be 'zeros' or 'border', got {padding!r}")
    border = cv2.BORDER_CONSTANT if padding == "zeros" else cv2.BORDER_REPLICATE
    image = np.asarray(image)
    flow = np.asarray(flow)
    if image.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        image = image.astype(np.float32)
    batched = flow.ndim == 4
    if flow.shape[-1] != 2 or flow.ndim not in (3, 4):
        raise AmodalkitError(f"flow must be (H, W, 2) or (B, H, W, 2), got {flow.shape}")
    squeeze = image.ndim == 2
    img = image[..., None] if squeeze else image
    if batched:
        if img.ndim != 4 or img.shape[:3] != flow.shape[:3]:
            raise AmodalkitError(f"image {image.shape} does not match flow {flow.shape}")
        out = np.stack([_remap(i, f, border) for i, f in zip(img, flow, strict=True)])
    else:
        if img.ndim != 3 or img.shape[:2] != flow.shape[:2]:
            raise AmodalkitError(f"image {image.shape} does not match flow {flow.shape}")
        out = _remap(img, flow, border)
    return out[..., 0] if squeeze else out


def warp_backward_torch(image: torch.Tensor, flow: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Differentiable backward warp with ``grid_sample``: ``out[..., y, x] = image[..., y + v, x + u]``.

    Args:
        image: ``(B, C, H, W)`` float tensor.
        flow: ``(B, 2, H, W)`` flow in pixels, channel 0 = u (x), channel 1 = v (y).
        padding: ``"zeros"`` or ``"border"`` (clamp to the edge, as FlowNet2's Resample2d does).

    Returns:
        ``(B, C, H, W)``: bilinear samples of `image` (align_corners=True pixel grid).
    """
    if image.ndim != 4 or flow.ndim != 4 or flow.shape[1] != 2 or image.shape[0] != flow.shape[0] \
            or image.shape[2:] != flow.shape[2:]:
        raise AmodalkitError(f"image must be (B, C, H, W) and flow (B, 2, H, W) of the same size, got "
                             f"{tuple(image.shape)} and {tuple(flow.shape)}")
    import torch
    import torch.nn.functional as F

    _, _, h, w = flow.shape
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype)
    gx = (xs[None, :] + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys[:, None] + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=3)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode=padding,
                         align_corners=True)
