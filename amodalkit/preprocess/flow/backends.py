"""Optical flow backends behind one registry (the stage that uses them: :mod:`.stage`).

Backends (``get_flow_backend(name, checkpoint, device)``):

* ``dis`` (default): OpenCV's DIS optical flow with its documented ``MEDIUM`` preset (the
  one with variational refinement; ``dis:fast`` and ``dis:ultrafast`` pick the others).
  Needs no weights; runs on the grayscale frames.
* ``flownet2``: FlowNet2 in plain PyTorch (:mod:`amodalkit.preprocess.flow.flownet2`), from the
  official ``FlowNet2_checkpoint.pth.tar`` the user brings (``checkpoint``).
* ``rigid[:BASE]``: one integer translation per object fitted to its visible masks, with
  ``BASE`` (default ``dis:fast``; ``zero`` for none; ``layers``: none, untracked patches fitted)
  for the background
  (:mod:`amodalkit.preprocess.flow.rigid`); needs a shard's visible id map.
* ``ptlflow:NAME``: any model of the optional ``ptlflow`` package (``pip install ptlflow``),
  with ``checkpoint`` a ptlflow checkpoint name (e.g. ``things``) or file.

Every backend maps frame pairs to forward flow: ``compute_pairs(first, second)`` with
``(N, H, W, 3)`` uint8 RGB batches gives ``(N, H, W, 2)`` float32 flow such that
``second[y + v, x + u] ~ first[y, x]``. ``compute(frames)`` is the forward flow of a video
(pairs t, t+1), ``compute_backward(frames)`` the backward flow (pairs t+1, t), and
``compute_both(frames)`` both in one pass: the pairs (t, t+1) and (t+1, t) side by side in
the same network call (``batch_size`` pairs per call, as everywhere), same results.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from amodalkit.errors import AmodalkitError
from amodalkit.preprocess.flow.base import FlowBackend
from amodalkit.preprocess.flow.rigid import DEFAULT_BACKGROUND, RigidObjectBackend

if TYPE_CHECKING:
    import torch


DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


DEFAULT_DIS_PRESET = "medium"


class DISBackend(FlowBackend):
    """OpenCV DIS optical flow (Kroeger et al. 2016) on grayscale frames; no weights."""

    def __init__(self, preset: str = DEFAULT_DIS_PRESET) -> None:
        if preset not in DIS_PRESETS:
            raise AmodalkitError(f"unknown DIS preset {preset!r}; choose one of {', '.join(DIS_PRESETS)}")
        self.preset = preset
        self.name = "dis" if preset == DEFAULT_DIS_PRESET else f"dis:{preset}"
        self.provenance = {"backend": self.name, "opencv": cv2.__version__, "preset": preset}
        self._dis = cv2.DISOpticalFlow_create(DIS_PRESETS[preset])

    def _pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        out = []
        for a, b in zip(first, second, strict=True):
            ga = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
            gb = cv2.cvtColor(np.ascontiguousarray(b), cv2.COLOR_RGB2GRAY)
            out.append(self._dis.calc(ga, gb, None))
        return np.stack(out)


def resolve_device(device: str) -> str:
    """The device string of :func:`amodalkit.device.resolve_device` (the one ``--device`` rule)."""
    from amodalkit.device import resolve_device as resolve

    return str(resolve(device))


class _TorchBackend(FlowBackend):
    """Shared batching for PyTorch models: uint8 (N, H, W, 3) -> float (N, 3, H, W) on the device."""

    device: str

    def _to_tensor(self, frames: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float()


class FlowNet2Backend(_TorchBackend):
    """FlowNet2 from the official checkpoint, in plain PyTorch (CPU or GPU)."""

    name = "flownet2"

    def __init__(self, checkpoint: str | Path | None, device: str = "cpu",
                 option: str = "--checkpoint") -> None:
        from amodalkit.preprocess.flow.flownet2 import load_flownet2

        if checkpoint is None:
            raise AmodalkitError(f"the flownet2 backend needs {option} FlowNet2_checkpoint.pth.tar "
                                 "(the official NVIDIA/flownet2-pytorch weights)")
        self.device = resolve_device(device)
        self.model = load_flownet2(checkpoint, self.device)
        self.provenance = {"backend": self.name, "checkpoint": Path(checkpoint).name}

    def _pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        import torch

        from amodalkit.preprocess.flow.flownet2 import estimate_flow

        with torch.inference_mode():
            flow = estimate_flow(self.model, self._to_tensor(first), self._to_tensor(second))
        return flow.permute(0, 2, 3, 1).float().cpu().numpy()


class PtlflowBackend(_TorchBackend):
    """Any model of the optional ptlflow package (RAFT, FlowNet2, ...), loaded by ptlflow."""

    def __init__(self, model_name: str, checkpoint: str | Path | None, device: str = "cpu",
                 option: str = "--checkpoint") -> None:
        try:
            import ptlflow
        except ImportError as exc:
            raise AmodalkitError("the ptlflow backend needs the optional ptlflow package: "
                                 "pip install ptlflow") from exc
        if checkpoint is None:
            raise AmodalkitError(f"ptlflow:{model_name} needs {option}: a ptlflow checkpoint name "
                                 f"(e.g. things) or a checkpoint file")
        self.device = resolve_device(device)
        try:
            model = ptlflow.get_model(model_name, ckpt_path=str(checkpoint))
        except Exception as exc:
            raise AmodalkitError(f"ptlflow could not build model {model_name!r} with checkpoint "
                                 f"{checkpoint}: {exc}") from exc
        self.model = model.to(self.device).eval()
        self.name = f"ptlflow:{model_name}"
        self.provenance = {"backend": self.name, "checkpoint": str(checkpoint),
                           "ptlflow": getattr(ptlflow, "__version__", "")}

    def _pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        import torch

        bgr = [self._to_tensor(f)[:, [2, 1, 0]] / 255.0 for f in (first, second)]
        with torch.inference_mode():
            preds = self.model({"images": torch.stack(bgr, dim=1)})
        return preds["flows"][:, 0].permute(0, 2, 3, 1).float().cpu().numpy()


def _make_dis(variant: str, checkpoint: str | Path | None, device: str, option: str) -> FlowBackend:
    if checkpoint is not None:
        raise AmodalkitError(f"the dis backend uses no weights; drop {option}", checkpoint)
    return DISBackend(variant or DEFAULT_DIS_PRESET)


def _make_flownet2(variant: str, checkpoint: str | Path | None, device: str, option: str) -> FlowBackend:
    if variant:
        raise AmodalkitError(f"flownet2 has no variants, got 'flownet2:{variant}'")
    return FlowNet2Backend(checkpoint, device, option)


def _make_ptlflow(variant: str, checkpoint: str | Path | None, device: str, option: str) -> FlowBackend:
    if not variant:
        raise AmodalkitError("name the ptlflow model: ptlflow:NAME (e.g. ptlflow:raft)")
    return PtlflowBackend(variant, checkpoint, device, option)


def _make_rigid(variant: str, checkpoint: str | Path | None, device: str, option: str) -> FlowBackend:

    base = variant or DEFAULT_BACKGROUND
    if base.partition(":")[0] == "rigid":
        raise AmodalkitError(f"rigid flow needs another backend for the background, got {base!r}")
    if base in ("zero", "layers"):
        return RigidObjectBackend(None, patches=base == "layers")
    return RigidObjectBackend(get_flow_backend(base, checkpoint, device, option))


BACKENDS: dict[str, Callable[[str, str | Path | None, str, str], FlowBackend]] = {
    "dis": _make_dis,
    "flownet2": _make_flownet2,
    "ptlflow": _make_ptlflow,
    "rigid": _make_rigid,
}


def get_flow_backend(name: str = "dis", checkpoint: str | Path | None = None, device: str = "cpu",
                     checkpoint_option: str = "--checkpoint") -> FlowBackend:
    """Build a backend by name: ``dis[:PRESET]``, ``flownet2``, ``ptlflow:NAME`` or ``rigid[:BASE]``.

    `device` (auto, cpu, cuda, cuda:N) is resolved by :func:`amodalkit.device.resolve_device`
    in the network backends; DIS runs on the CPU, but a malformed name is refused for every
    backend. `checkpoint_option` is the command's option for `checkpoint`, named in errors.
    """
    if device not in ("auto", "cpu"):
        from amodalkit.device import check_device_name  # imports torch, which DIS on auto/cpu never needs

        check_device_name(device)
    base, _, variant = name.partition(":")
    if base not in BACKENDS:
        raise AmodalkitError(f"unknown flow backend {name!r}; "
                             "choose dis, flownet2, ptlflow:NAME or rigid[:BASE]")
    return BACKENDS[base](variant, checkpoint, device, checkpoint_option)


def require_frames_only(backend: FlowBackend, where: str) -> FlowBackend:
    """`backend`, or a clear error when it needs visible masks that `where` does not have."""
    if backend.uses_visible:
        raise AmodalkitError(f"the {backend.name} flow backend fits each object's motion to its visible "
                             f"masks, so it runs on shards (amodalkit flow SHARD), not in {where}")
    return backend


def end_point_error(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean end-point error (L2) of ``(..., H, W, 2)`` flows, over `mask` ``(..., H, W)`` if given."""
    err = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(gt, np.float64), axis=-1)
    if mask is not None:
        err = err[np.asarray(mask, bool)]
    return float(err.mean()) if err.size else float("nan")
