"""Where a process computes: the one ``--device`` rule, the torchrun process group, reductions, autocast.

``resolve_device`` is the single meaning of ``--device`` for every command: ``auto`` is
this process's GPU when one is visible (``cuda:LOCAL_RANK`` under torchrun), else the CPU;
``cuda`` without a GPU is an error. Reductions across ranks run on the training device
(NCCL accepts only CUDA tensors), never on a host copy.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from amodalkit.errors import AmodalkitError

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank, world size and local rank from the torchrun environment (single process otherwise)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def check_device_name(name: str) -> None:
    """Raise AmodalkitError unless `name` is auto, cpu, cuda or cuda:N."""
    index = name.removeprefix("cuda:")
    if name not in ("auto", "cpu", "cuda") and not (name.startswith("cuda:") and index.isdigit()):
        raise AmodalkitError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")


def resolve_device(name: str, info: DistInfo | None = None) -> torch.device:
    """auto | cpu | cuda | cuda:N -> this process's torch device (``cuda`` is ``cuda:LOCAL_RANK``)."""
    check_device_name(name)
    info = info or dist_info()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise AmodalkitError(f"--device {name} was asked for but PyTorch sees no CUDA GPU (use --device cpu)")
    device = torch.device(name if ":" in name else f"cuda:{info.local_rank}")
    if device.index >= torch.cuda.device_count():
        raise AmodalkitError(f"--device {device}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
    return device


def init_distributed(device: torch.device, info: DistInfo, threads: int = 0) -> bool:
    """Join the torchrun process group (NCCL on GPUs, gloo on CPUs); True when this call created it."""
    if threads > 0:
        torch.set_num_threads(threads)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if info.world <= 1 or dist.is_initialized():
        return False
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu" and threads <= 0:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.world))
    return True


def close_distributed() -> None:
    """Leave the process group when one is open."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (a no-op in one process)."""
    if info.world > 1:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum `tensor` over all ranks in place, on the device it lives on (the training device); returns it."""
    if info.world > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def accumulator_dtype(device: torch.device) -> torch.dtype:
    """float64 for loss sums where the device has it (CPU, CUDA), else float32 (MPS, XLA)."""
    return torch.float64 if device.type in ("cpu", "cuda", "meta") else torch.float32


def check_precision(precision: str, device: torch.device) -> None:
    """Raise AmodalkitError for an unknown precision or fp16 off CUDA."""
    if precision not in PRECISIONS:
        raise AmodalkitError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise AmodalkitError(f"--precision fp16 trains on CUDA only (with a gradient scaler); device is "
                             f"{device}: use bf16 or fp32")


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Mixed-precision context for a training forward: bf16 or fp16 autocast, a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler_for(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A gradient scaler for fp16 on CUDA (fp16 gradients underflow without one); None otherwise."""
    if precision == "fp16" and device.type == "cuda":
        return torch.amp.GradScaler("cuda")
    return None


def set_deterministic(enabled: bool) -> None:
    """``torch.use_deterministic_algorithms`` (and the cuBLAS workspace setting it needs on CUDA)."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True)


def is_cuda(device: str | torch.device) -> bool:
    """Whether `device` is a CUDA device."""
    return torch.device(device).type == "cuda"


def autocast_dtype(device: str | torch.device) -> torch.dtype | None:
    """Autocast dtype for inference on `device`: bf16 on CUDA where supported, else fp16; None off CUDA."""
    if not is_cuda(device):
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def inference_autocast(device: str | torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision for an inference forward on `device` (CUDA only; a no-op elsewhere)."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return autocast_for(torch.device(device), "bf16" if dtype == torch.bfloat16 else "fp16")


def to_device(array: np.ndarray | torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """Host data on `device`, same dtype: through pinned memory and a non-blocking copy when it is CUDA."""
    x = torch.from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
    if is_cuda(device) and x.device.type == "cpu":
        x = x.pin_memory()
    return x.to(device, non_blocking=True)
