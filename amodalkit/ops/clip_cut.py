"""Cut object clips out of a video as tensors (layout: :mod:`amodalkit.data.clips`), one or all at once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from amodalkit.device import to_device
from amodalkit.errors import AmodalkitError
from amodalkit.io.shards import Video
from amodalkit.ops.boxes import ClipCrop
from amodalkit.ops.crops import crop_maps, crop_matrices


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
