"""Cut per-frame object crops out of a video as tensors (layout in :mod:`amodalkit.data.frame_crops`)."""

from __future__ import annotations

import numpy as np
import torch

from amodalkit.device import to_device
from amodalkit.io.shards import Video
from amodalkit.ops.boxes import CropBox, boxes_from_extents
from amodalkit.ops.crops import crop_maps, crop_matrices


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
