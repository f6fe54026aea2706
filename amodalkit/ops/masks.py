"""Mask rules on tensors, on any device."""

from __future__ import annotations

import torch


def keep_on_occluders(pred: torch.Tensor, visible_ids: torch.Tensor) -> torch.Tensor:
    """The official evaluation's rule: (K, T, H, W) prediction, (T, H, W) id map -> (K, T, H, W) float32.

    The prediction is kept only on pixels covered by the *other* objects' visible masks, the
    only place a hidden part can be; elsewhere the output is the object's own visible mask.
    """
    ids = visible_ids[None]
    obj = torch.arange(1, pred.shape[0] + 1, device=pred.device, dtype=ids.dtype)[:, None, None, None]
    return torch.where((ids != 0) & (ids != obj), pred.float(), (ids == obj).float())
