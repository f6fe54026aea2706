"""Batched crop and paste-back on any device: each box's resampling as two small matrices.

:meth:`amodalkit.ops.boxes.CropBox.crop` (bilinear, antialiased when the box is
taller than the crop, zero outside the frame) and :meth:`CropBox.paste_back` (bilinear,
zero outside the box) are separable linear maps. For N boxes of any sizes they are
therefore ``crop = Gy^T @ x @ Gx`` and ``paste = Py @ p @ Px^T``, with one (frame side x
crop side) matrix per box and axis. The weights come from ``F.interpolate`` applied to an
identity, so they are PyTorch's own; results equal the per-box calls to float rounding.

Boxes are (N, 4) int64 ``y0, x0, height, width`` in frame pixels (the clips' ``box`` layout).
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F


@lru_cache(maxsize=4096)
def resample_weights(n_in: int, n_out: int, antialias: bool) -> torch.Tensor:
    """Weights of bilinear ``F.interpolate`` (align_corners=False) along one axis: (n_out, n_in) float32.

    Taken along the last axis: the antialiased kernel on an (n, 1) map does not match its
    weights inside a 2-D resize (torch 2.13), while the (1, n) map does.
    """
    eye = torch.eye(n_in).reshape(n_in, 1, 1, n_in)
    out = F.interpolate(eye, size=(1, n_out), mode="bilinear", align_corners=False, antialias=antialias)
    return out[:, 0, 0, :].T.contiguous()


def _axis_matrices(origin: torch.Tensor, size: torch.Tensor, antialias: torch.Tensor, n_frame: int,
                   n_crop: int, paste: bool, device: torch.device) -> torch.Tensor:
    """One axis's weights, frame position first: origins, sizes, antialias (N,) -> (N, n_frame, n_crop)."""
    pairs = list(zip(size.tolist(), antialias.tolist()))
    keys = {key: i for i, key in enumerate(sorted(set(pairs)))}
    longest = max(s for s, _ in keys)
    table = torch.zeros(len(keys), longest, n_crop)
    for (s, a), i in keys.items():
        table[i, :s] = resample_weights(n_crop, s, False) if paste else resample_weights(s, n_crop, a).T
    which = torch.tensor([keys[key] for key in pairs])
    table, which = table.to(device, non_blocking=True), which.to(device, non_blocking=True)
    origin, size = origin.to(device, non_blocking=True), size.to(device, non_blocking=True)
    pos = torch.arange(n_frame, device=device)[None] - origin[:, None]
    inside = (pos >= 0) & (pos < size[:, None])
    index = pos.clamp(0, longest - 1)[:, :, None].expand(-1, -1, n_crop)
    return table[which].gather(1, index) * inside[:, :, None]


def crop_matrices(boxes: torch.Tensor, frame_size: tuple[int, int], crop_size: tuple[int, int],
                  device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of :meth:`CropBox.crop` per box: (N, 4) -> Gy (N, H, h), Gx (N, W, w) on `device`."""
    boxes = boxes.cpu().long()
    down = boxes[:, 2] > crop_size[0]
    device = torch.device(device)
    gy = _axis_matrices(boxes[:, 0], boxes[:, 2], down, frame_size[0], crop_size[0], False, device)
    gx = _axis_matrices(boxes[:, 1], boxes[:, 3], down, frame_size[1], crop_size[1], False, device)
    return gy, gx


def paste_matrices(boxes: torch.Tensor, frame_size: tuple[int, int], crop_size: tuple[int, int],
                   device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of :meth:`CropBox.paste_back` per box: (N, 4) -> Py (N, H, h), Px (N, W, w) on `device`."""
    boxes = boxes.cpu().long()
    plain = torch.zeros(boxes.shape[0], dtype=torch.bool)
    device = torch.device(device)
    py = _axis_matrices(boxes[:, 0], boxes[:, 2], plain, frame_size[0], crop_size[0], True, device)
    px = _axis_matrices(boxes[:, 1], boxes[:, 3], plain, frame_size[1], crop_size[1], True, device)
    return py, px


def crop_maps(x: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
    """Resample frame maps into their boxes: (N, C, H, W), Gy (N, H, h), Gx (N, W, w) -> (N, C, h, w)."""
    n, c, fh, fw = x.shape
    rows = torch.bmm(x.float().reshape(n, c * fh, fw), gx).reshape(n, c, fh, -1)
    return torch.einsum("nyh,ncyw->nchw", gy, rows)


def paste_maps(p: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Crop maps back to their frames, zero outside each box: (N, C, h, w) -> (N, C, H, W).

    Py (N, H, h) and Px (N, W, w) from :func:`paste_matrices`.
    """
    return (py[:, None] @ p.float()) @ px.transpose(1, 2)[:, None]


def paste_clips(pred: torch.Tensor, boxes: torch.Tensor, objects: torch.Tensor, starts: torch.Tensor,
                shape: tuple[int, int, int, int], max_elements: int = 1 << 25) -> torch.Tensor:
    """Paste clip crops back and average where clips overlap, on `pred`'s device.

    pred (N, L, h, w) crop maps of object ``objects[n]`` from frame ``starts[n]``, boxes
    (N, L, 4) on the CPU, `shape` (K, T, H, W) -> (K, T, H, W) float32, zero where no clip
    reaches. At most `max_elements` frame pixels are pasted at a time.
    """
    k_, t_, h_, w_ = shape
    n, length = pred.shape[:2]
    device = pred.device
    py, px = paste_matrices(boxes.reshape(-1, 4), (h_, w_), tuple(pred.shape[-2:]), device)
    frames = torch.arange(length)[None] + starts.cpu().long()[:, None]
    rows = (objects.cpu().long()[:, None] * t_ + frames).reshape(-1).to(device, non_blocking=True)
    flat = pred.reshape(n * length, 1, *pred.shape[-2:])
    total = torch.zeros(k_ * t_, h_, w_, device=device)
    count = torch.zeros(k_ * t_, device=device)
    chunk = max(1, max_elements // (h_ * w_))
    for i in range(0, n * length, chunk):
        r = slice(i, i + chunk)
        total.index_add_(0, rows[r], paste_maps(flat[r], py[r], px[r])[:, 0])
    count.index_add_(0, rows, torch.ones_like(rows, dtype=count.dtype))
    return (total / count.clamp(min=1)[:, None, None]).reshape(shape)


def keep_on_occluders(pred: torch.Tensor, visible_ids: torch.Tensor) -> torch.Tensor:
    """The official evaluation's rule: (K, T, H, W) prediction, (T, H, W) id map -> (K, T, H, W) float32.

    The prediction is kept only on pixels covered by the *other* objects' visible masks, the
    only place a hidden part can be; elsewhere the output is the object's own visible mask.
    """
    ids = visible_ids[None]
    obj = torch.arange(1, pred.shape[0] + 1, device=pred.device, dtype=ids.dtype)[:, None, None, None]
    return torch.where((ids != 0) & (ids != obj), pred.float(), (ids == obj).float())
