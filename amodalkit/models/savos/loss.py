"""SaVos losses: the weighted visible-mask BCE, the completion consistency and the horizon loss."""

from __future__ import annotations

import torch
from torch import nn

from amodalkit.models.base import Batch, StepContext
from amodalkit.models.savos.config import SavosConfig
from amodalkit.models.savos.net import EPS
from amodalkit.ops.warp import forward_warp


def soft_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Differentiable IoU of soft masks over the last two axes: (..., h, w) -> (...)."""
    inter = (a * b).sum(dim=(-2, -1))
    union = (a + b - a * b).sum(dim=(-2, -1))
    return (inter + EPS) / (union + EPS)


def savos_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
               config: SavosConfig) -> dict[str, torch.Tensor]:
    """λ1 · L_M + λ2 · L_C (+ the horizon term) for a batch: ``loss``, ``mask``, ``consistency``, ``horizon``.

    L_M: mean over predicted object-frames of the pixel mean of W ⊙ BCE(M̂_t, V_t).
    L_C: mean over each direction's warped frames of 1 - softIoU(M̃_t, M̂_t).
    """
    valid = batch["valid"].bool()
    target = batch["visible"]
    pred = out["prediction"].clamp(EPS, 1 - EPS)
    bce = -(target * torch.log(pred) + (1 - target) * torch.log(1 - pred))
    per_frame = (batch["weight"] * bce).mean(dim=(-2, -1))
    has = out["has_prediction"] & valid
    mask_loss = (per_frame * has).sum() / has.sum().clamp(min=1)
    cons_terms, cons_n = [], []
    for d in ("forward", "backward"):
        if f"{d}_completion" not in out:
            continue
        hd = out[f"{d}_has_warped"] & valid
        dist = 1 - soft_iou(out[f"{d}_completion"], out[f"{d}_warped"])
        cons_terms.append((dist * hd).sum())
        cons_n.append(hd.sum())
    consistency = torch.stack(cons_terms).sum() / torch.stack(cons_n).sum().clamp(min=1)
    lam_c = 0.0 if config.no_consistency else config.lambda_consistency
    loss = config.lambda_mask * mask_loss + lam_c * consistency
    horizon = mask_loss.new_zeros(())
    if config.horizon > 1:
        horizon = torch.stack([horizon_mask_loss(out, batch, d, config) for d in ("forward", "backward")
                               if f"{d}_completion" in out]).mean()
        loss = loss + config.lambda_horizon * horizon
    return {"loss": loss, "mask": mask_loss.detach(), "consistency": consistency.detach(),
            "horizon": horizon.detach()}


def horizon_mask_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], direction: str,
                      config: SavosConfig) -> torch.Tensor:
    """Appendix B's L_complete, truncated: W ⊙ BCE of M̃_t warped 2..horizon frames ahead against V.

    The paper's L_M only compares M̃_t with the next frame, so a hidden part that stays
    hidden for one more frame gets no feedback; here M̃_t is carried along the predicted
    motion for up to ``horizon`` frames (in this direction's time order) and compared with
    every visible mask it meets. Mean over (frame, step) pairs whose frames all exist.
    """
    flip = direction == "backward"

    def ordered(x: torch.Tensor) -> torch.Tensor:
        return x.flip(1) if flip else x

    completion = ordered(out[f"{direction}_completion"])
    motion = ordered(out[f"{direction}_motion"])
    target, weight = ordered(batch["visible"]), ordered(batch["weight"])
    valid = ordered(batch["valid"].bool())
    n, t, h, w = completion.shape
    cur, alive = completion, valid
    total = completion.new_zeros(())
    count = completion.new_zeros(())
    for step in range(1, min(config.horizon, t - 1) + 1):
        cur = forward_warp(cur[:, :-1].reshape(-1, 1, h, w), motion[:, step - 1:t - 1].reshape(-1, 2, h, w),
                           config.warp).reshape(n, t - step, h, w)
        alive = alive[:, :-1] & valid[:, step:]
        if step == 1:
            continue
        pred = cur.clamp(EPS, 1 - EPS)
        tgt = target[:, step:]
        bce = -(tgt * torch.log(pred) + (1 - tgt) * torch.log(1 - pred))
        per_frame = (weight[:, step:] * bce).mean(dim=(-2, -1))
        total = total + (per_frame * alive).sum()
        count = count + alive.sum()
    return total / count.clamp(min=1)


def visible_iou(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> float:
    """IoU of the thresholded prediction with the visible masks where W gives feedback (all frames pooled)."""
    has = (out["has_prediction"] & batch["valid"].bool())[:, :, None, None]
    feedback = batch["weight"] > 0.5
    pred = (out["prediction"] > 0.5) & feedback & has
    vis = (batch["visible"] > 0.5) & has
    inter = (pred & vis).sum().item()
    union = (pred | vis).sum().item()
    return (inter + EPS) / (union + EPS)


def savos_step(model: nn.Module, batch: Batch, config: SavosConfig, ctx: StepContext) -> Batch:
    """One training or validation step: the network under the loop's autocast, the losses in float32."""
    with ctx.autocast():
        out = model(batch)
    return savos_loss({k: v.float() if v.is_floating_point() else v for k, v in out.items()}, batch, config)
