"""Reading other projects' PyTorch checkpoints (FlowNet2, PointTrack) without running their code.

``torch.load(weights_only=True)`` only rebuilds tensors and plain values; training checkpoints
of those projects also pickle numpy scalars and dtypes in their metadata (``best_EPE``,
``best_iou``), which are allowed on a second try and nothing else is.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch


def _numpy_globals() -> list[object]:
    """The numpy reconstructors such metadata may hold."""
    try:
        from numpy._core.multiarray import scalar
    except ImportError:
        from numpy.core.multiarray import scalar
    dtypes = [type(np.dtype(c)) for c in ("float16", "float32", "float64", "int32", "int64", "bool")]
    return [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, *dtypes]


def load_plain(path: str | Path) -> object:
    """``torch.load`` of tensors and plain values only (numpy scalars allowed on a second try), on the CPU."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)


def load_error_reason(exc: BaseException) -> str:
    """The telling line of a ``torch.load`` failure, for a one-line error."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        tail = text.split("WeightsUnpickler error:", 1)[1]
        lines = [ln.strip() for ln in tail.splitlines() if ln.strip() and not ln.startswith("Check the doc")]
        if lines:
            return lines[0][:200]
    return text.splitlines()[0].split(". ")[0][:200] if text.strip() else type(exc).__name__


def state_dict_mismatch(expected: dict, state: dict) -> str | None:
    """How `state`'s names and shapes differ from a network's `expected` state dict (None: they match)."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
    if wrong:
        parts.append(f"{len(wrong)} shape mismatches (first: {wrong[0]})")
    return "; ".join(parts) or None
