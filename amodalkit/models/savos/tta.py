"""Test-time adaptation: fine-tune a copy of the network on one video's own clips before predicting it."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from amodalkit.errors import AmodalkitError
from amodalkit.models.savos.loss import savos_loss, visible_iou
from amodalkit.models.savos.net import SavosNet


@dataclass(frozen=True)
class TTAConfig:
    """Test-time adaptation (§3.2): optimise the training loss on one test video.

    ``chunk_size`` bounds memory on long videos: at most that many clips go through one
    forward/backward, with the gradient accumulated over chunks (:func:`adapt`).
    """

    max_iters: int = 50
    lr: float = 1e-4
    window: int = 10
    min_gain: float = 0.01
    chunk_size: int = 16

    def __post_init__(self) -> None:
        if isinstance(self.max_iters, bool) or not isinstance(self.max_iters, int) or self.max_iters < 1:
            raise AmodalkitError(f"--tta-max-iters must be at least 1, got {self.max_iters!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise AmodalkitError(f"--tta-lr must be a finite number >= 0, got {self.lr!r}")
        if not isinstance(self.window, int) or self.window < 1 or not math.isfinite(self.min_gain):
            raise AmodalkitError("the TTA window must be at least 1 and its min_gain finite")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise AmodalkitError(f"--tta-chunk must be at least 1 clip, got {self.chunk_size!r}")


@dataclass
class TTAStats:
    """What adaptation did over the videos it ran on."""

    iterations: list[int] = field(default_factory=list)
    visible_iou_before: list[float] = field(default_factory=list)
    visible_iou_after: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        """Means over the adapted videos."""
        def mean(v: list) -> float:
            return float(np.mean(v)) if v else float("nan")

        return {"videos": len(self.iterations), "mean_iterations": mean(self.iterations),
                "visible_iou_before": mean(self.visible_iou_before),
                "visible_iou_after": mean(self.visible_iou_after)}


def adapt(model: SavosNet, batch: dict[str, torch.Tensor],
          tta: TTAConfig) -> tuple[SavosNet, int, list[float]]:
    """Fine-tune a copy of `model` on one video's clips; stop when the visible-part IoU gained
    less than ``min_gain`` over the last ``window`` iterations, or at ``max_iters``.

    Returns the adapted copy, the iterations run and the visible IoU before each iteration
    (plus the final one). A video of more than ``chunk_size`` clips is run in chunks: a
    forward without graph gives the outputs, the loss over all of them gives its gradient
    with respect to each output, and each chunk's forward is then redone with its graph and
    back-propagated from that gradient. The parameter gradient is the whole batch's (the
    network treats clips independently), with one chunk's graph in memory at a time.
    """
    adapted = copy.deepcopy(model).train()
    opt = torch.optim.Adam(adapted.parameters(), lr=tta.lr)
    history: list[float] = []
    iters = 0
    chunked = batch["valid"].shape[0] > tta.chunk_size
    while True:
        out = _forward_in_chunks(adapted, batch, tta.chunk_size) if chunked else adapted(batch)
        history.append(visible_iou(out, batch))
        if iters >= tta.max_iters:
            break
        if len(history) > tta.window and history[-1] - history[-1 - tta.window] < tta.min_gain:
            break
        opt.zero_grad(set_to_none=True)
        if chunked:
            _backward_in_chunks(adapted, batch, out, tta.chunk_size)
        else:
            savos_loss(out, batch, adapted.config)["loss"].backward()
        opt.step()
        iters += 1
    return adapted.eval(), iters, history


def _chunks(batch: dict[str, torch.Tensor], chunk: int) -> list[dict[str, torch.Tensor]]:
    """A batch of clips split into batches of at most `chunk` clips (views, in order)."""
    n = batch["valid"].shape[0]
    return [{k: v[i:i + chunk] for k, v in batch.items()} for i in range(0, n, chunk)]


def _forward_in_chunks(model: SavosNet, batch: dict[str, torch.Tensor],
                       chunk: int) -> dict[str, torch.Tensor]:
    """The network's outputs for a batch of clips, `chunk` clips at a time, without graph."""
    with torch.no_grad():
        parts = [model(part) for part in _chunks(batch, chunk)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _backward_in_chunks(model: SavosNet, batch: dict[str, torch.Tensor], out: dict[str, torch.Tensor],
                        chunk: int) -> None:
    """Accumulate the gradient of the loss over all of `out` into `model`, one chunk's graph at a time."""
    leaves = {k: v.detach().requires_grad_() if v.is_floating_point() else v for k, v in out.items()}
    savos_loss(leaves, batch, model.config)["loss"].backward()
    used = [k for k, v in leaves.items() if v.grad is not None]
    for i, part in zip(range(0, batch["valid"].shape[0], chunk), _chunks(batch, chunk)):
        piece = model(part)
        torch.autograd.backward([piece[k] for k in used], [leaves[k].grad[i:i + chunk] for k in used])
