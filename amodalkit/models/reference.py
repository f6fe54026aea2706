"""The per-object inference loops that batched inference replaced, kept as its reference.

Each function is the ``predict_video`` its method had before batching: clips or crops cut
one object at a time on the CPU (:func:`build_clip`, :func:`crop_object_frame`), copied to
the device chunk by chunk, predicted, and pasted back one object at a time with numpy.
``tests/models/test_batched_inference.py`` checks the batched methods against them and
``benchmarks/bench_inference.py`` times both in one process. Neither is used by a method.
"""

from __future__ import annotations

import numpy as np
import torch

from amodalkit.io.shards import Video
from amodalkit.models.baselines.framewise import FramewiseMethod
from amodalkit.models.savos.method import SavosMethod
from amodalkit.ops.boxes import ClipCrop, CropBox, visible_pixel_counts
from amodalkit.ops.clip_cut import build_clip, collate_clips
from amodalkit.ops.frame_cut import crop_object_frame


def occluders_only(out: np.ndarray, video: Video) -> np.ndarray:
    """Keep the prediction only on other objects' visible pixels, the own visible mask elsewhere."""
    ids = video.visible_ids[None]
    obj = np.arange(1, video.num_objects + 1, dtype=ids.dtype)[:, None, None, None]
    return np.where((ids != 0) & (ids != obj), out, (ids == obj).astype(np.float32))


def savos_per_object(method: SavosMethod, video: Video) -> np.ndarray:
    """SaVos without TTA, one clip at a time through :func:`build_clip`: (K, T, H, W) in [0, 1]."""
    cfg = method.model.config
    k_, t, (h, w) = video.num_objects, video.num_frames, video.size
    length = t if method.window == 0 else min(method.window, t)
    starts = list(range(0, t - length + 1, max(1, length // 2)))
    if starts[-1] != t - length:
        starts.append(t - length)
    items, where = [], []
    for k in range(k_):
        for s in starts:
            sel = slice(s, s + length)
            if not (video.visible_ids[sel] == k + 1).any():
                continue
            fsel = slice(s, s + length - 1)
            item = build_clip(video.frames[sel], video.visible_ids[sel], video.presence[k, sel],
                              None if video.flow is None else video.flow[fsel],
                              None if video.flow_backward is None else video.flow_backward[fsel],
                              k, cfg.crop_size, cfg.enlarge, mode=cfg.crop_mode)
            where.append((k, s, ClipCrop.from_tensor(item["box"], video.size, cfg.crop_size)))
            items.append(item)
    total = np.zeros((k_, t, h, w), np.float32)
    count = np.zeros((k_, t), np.float32)
    if not items:
        return total
    batch = collate_clips(items)
    preds = []
    size = method.batch_size or 64
    with torch.no_grad():
        for i in range(0, len(items), size):
            part = {k: v[i:i + size].to(method.device) for k, v in batch.items()}
            preds.append(method.model(part)["prediction"].float().cpu())
    for (k, s, box), pred in zip(where, torch.cat(preds)):
        total[k, s:s + pred.shape[0]] += box.paste_back(pred).numpy()
        count[k, s:s + pred.shape[0]] += 1
    out = total / np.maximum(count, 1)[:, :, None, None]
    return occluders_only(out, video) if method.occluders_only else out


def framewise_per_object(method: FramewiseMethod, video: Video) -> np.ndarray:
    """A per-frame model, one object-frame crop at a time through :func:`crop_object_frame`."""
    cfg = method.model.config
    k_, t_, (h, w) = video.num_objects, video.num_frames, video.size
    out = np.zeros((k_, t_, h, w), np.float32)
    pairs = np.argwhere(visible_pixel_counts(video.visible_ids, video.num_objects) > 0)
    if len(pairs) == 0:
        return out
    items = [crop_object_frame(video.visible_ids[t], int(k), cfg.crop_size, cfg.enlarge,
                               frame=video.frames[t] if cfg.use_image else None) for k, t in pairs]
    batch = {name: torch.stack([it[name] for it in items]) for name in items[0]}
    preds = []
    with torch.inference_mode():
        for i in range(0, len(pairs), method.batch_size):
            part = {k: v[i:i + method.batch_size].to(method.device) for k, v in batch.items() if k != "box"}
            logits = method.runner(part["visible"], part["occluder"], part.get("image"))
            preds.append(torch.sigmoid(logits.float()).cpu())
    for (k, t), box, pred in zip(pairs, batch["box"].numpy(), torch.cat(preds).numpy()):
        out[k, t] = CropBox.from_tensor(box, (h, w), cfg.crop_size).paste_back(pred)
    return occluders_only(out, video) if method.occluders_only else out
