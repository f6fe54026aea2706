"""Device placement for inference: pinned host copies, non-blocking transfers, autocast on CUDA only."""

from __future__ import annotations

import contextlib

import numpy as np
import torch


def is_cuda(device: str | torch.device) -> bool:
    """Whether `device` is a CUDA device."""
    return torch.device(device).type == "cuda"


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """Autocast dtype for inference on `device`: bf16 on CUDA where supported, else fp16; None off CUDA."""
    if not is_cuda(device):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def inference_autocast(device: str | torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision for a forward on `device` (CUDA only; a no-op elsewhere)."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def to_device(array: np.ndarray | torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Host data on `device`, same dtype: through pinned memory and a non-blocking copy when it is CUDA."""
    x = torch.from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
    if is_cuda(device) and x.device.type == "cpu":
        x = x.pin_memory()
    return x.to(device, non_blocking=True)
