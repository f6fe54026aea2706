"""SaVos losses and scores: the weighted visible-mask BCE, the consistency, the horizon and photometric terms.

The ``official`` preset's terms (:func:`cumulative_consistency`, :func:`photometric_loss`,
the summed BCE) and validation scores (:func:`selection_scores`) follow the released
training scripts; docs/decisions.md ("SaVos: the ``official`` preset against the released
scripts") maps each one to the official code.
"""

from __future__ import annotations

import torch
from torch import nn

from amodalkit.models.base import Batch, StepContext
from amodalkit.models.savos.config import SavosConfig
from amodalkit.models.savos.net import EPS
from amodalkit.ops.warp import forward_warp

#: the official IoU smoothing (utils/evaluation.py)
IOU_SMOOTH = 1e-6


def soft_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Differentiable IoU of soft masks over the last two axes: (..., h, w) -> (...)."""
    inter = (a * b).sum(dim=(-2, -1))
    union = (a + b - a * b).sum(dim=(-2, -1))
    return (inter + EPS) / (union + EPS)


def savos_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
               config: SavosConfig) -> dict[str, torch.Tensor]:
    """λ1 · L_M + λ2 · L_C (+ the horizon and photometric terms): ``loss``, ``mask``, ``consistency``, ...

    L_M: mean over predicted object-frames of the pixel mean (``mask_reduction="sum"``: the
    pixel sum) of W ⊙ BCE(M̂_t, V_t). L_C (``consistency_mode="paper"``): mean over each
    direction's warped frames of 1 - softIoU(M̃_t, M̂_t); ``cumulative``:
    :func:`cumulative_consistency`. ``photometric``: :func:`photometric_loss`, weighted by
    ``lambda_photometric`` (computed only when that is positive).
    """
    valid = batch["valid"].bool()
    target = batch["visible"]
    pred = out["prediction"].clamp(EPS, 1 - EPS)
    bce = -(target * torch.log(pred) + (1 - target) * torch.log(1 - pred))
    weighted = batch["weight"] * bce
    per_frame = weighted.sum(dim=(-2, -1)) if config.mask_reduction == "sum" else weighted.mean(dim=(-2, -1))
    has = out["has_prediction"] & valid
    mask_loss = (per_frame * has).sum() / has.sum().clamp(min=1)
    if config.consistency_mode == "cumulative":
        consistency = cumulative_consistency(out, batch, config)
    else:
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
    photometric = mask_loss.new_zeros(())
    if config.lambda_photometric > 0:
        photometric = photometric_loss(out, batch, config)
        loss = loss + config.lambda_photometric * photometric
    horizon = mask_loss.new_zeros(())
    if config.horizon > 1:
        horizon = torch.stack([horizon_mask_loss(out, batch, d, config) for d in ("forward", "backward")
                               if f"{d}_completion" in out]).mean()
        loss = loss + config.lambda_horizon * horizon
    return {"loss": loss, "mask": mask_loss.detach(), "consistency": consistency.detach(),
            "horizon": horizon.detach(), "photometric": photometric.detach()}


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


def _ordered(x: torch.Tensor, direction: str) -> torch.Tensor:
    """A (B, T, ...) map in the time order of `direction` (reversed for ``backward``)."""
    return x.flip(1) if direction == "backward" else x


def _directions(out: dict[str, torch.Tensor]) -> list[str]:
    """The directions the network ran (``backward`` only when bi-directional)."""
    return [d for d in ("forward", "backward") if f"{d}_motion" in out]


def cumulative_consistency(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                           config: SavosConfig) -> torch.Tensor:
    """The released L_C: the blend warped one frame on against the next blend, cumulated over time -> ().

    In each direction's time order the blended prediction M̂_t (``prediction``, (B, T, h, w))
    is warped by that direction's motion, detached as the released model returns it, and
    d_t = 1 - softIoU(Warp(M̂_t), M̂_{t+1}) is taken over the pairs where both frames have a
    prediction. The running sums of d over time are added up (so the pair at t counts once
    for itself and once for every later pair), both directions are added, and the total is
    divided by the clips in the batch: no mean over frames.
    """
    pred = out["prediction"]
    has = out["has_prediction"] & batch["valid"].bool()
    n, t, h, w = pred.shape
    total = pred.new_zeros(())
    for d in _directions(out):
        p, hv = _ordered(pred, d), _ordered(has, d)
        motion = _ordered(out[f"{d}_motion"], d).detach()
        moved = forward_warp(p[:, :-1].reshape(-1, 1, h, w), motion[:, :-1].reshape(-1, 2, h, w),
                             config.warp).reshape(n, t - 1, h, w)
        dist = (1 - soft_iou(moved, p[:, 1:])) * (hv[:, :-1] & hv[:, 1:])
        total = total + dist.cumsum(dim=1).sum()
    return total / max(n, 1)


def photometric_loss(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor],
                     config: SavosConfig) -> torch.Tensor:
    """The released photometric term, unweighted: masked L1 of each image warped to the next -> ().

    Per direction and pair of present frames (t, t+1 in its time order), image I_t
    ((B, 3, T, h, w) in the batch) and visible mask V_t are warped by the direction's motion
    (not detached: this term trains the motion predictor); |Warp(I_t) - I_{t+1}| is summed
    over the channels and over the pixels where the warped V_t is non-zero and V_{t+1} is
    set, then averaged over the pairs; the two directions are added.
    """
    image = batch["image"].permute(0, 2, 1, 3, 4)
    n, t, _, h, w = image.shape
    total = image.new_zeros(())
    for d in _directions(out):
        img, vis = _ordered(image, d), _ordered(batch["visible"], d)
        valid = _ordered(batch["valid"].bool(), d)
        motion = _ordered(out[f"{d}_motion"], d)
        src = torch.cat([img[:, :-1], vis[:, :-1, None]], dim=2).reshape(-1, 4, h, w)
        moved = forward_warp(src, motion[:, :-1].reshape(-1, 2, h, w), config.warp).reshape(n, t - 1, 4, h, w)
        overlap = (moved[:, :, 3] > 0) & (vis[:, 1:] > 0.5)
        l1 = ((moved[:, :, :3] - img[:, 1:]).abs().sum(dim=2) * overlap).sum(dim=(-2, -1))
        pairs = valid[:, :-1] & valid[:, 1:]
        total = total + (l1 * pairs).sum() / pairs.sum().clamp(min=1)
    return total


def selection_scores(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Validation IoU totals for checkpoint selection, each divided by the clips in the batch.

    The prediction, thresholded at 0.5, is kept on other objects' visible pixels (W < 0.5)
    and replaced by the object's own visible mask elsewhere (the released scripts' paste).
    Each object-frame with a prediction is scored against its visible mask
    (``visible_iou_*``: no label, the released KINS script's selection) and, when the batch
    carries ``amodal``, each annotated one against the **amodal ground truth**
    (``amodal_iou_*``: the released FISHBOWL script's selection). ``*_sum`` is the sum of
    the IoUs and ``*_n`` the number of object-frames scored; dividing both by the batch's
    clips lets the loop's clip-weighted means give totals whose ratio is the pooled mean.
    """
    has = out["has_prediction"] & batch["valid"].bool()
    own = batch["visible"] > 0.5
    pasted = torch.where(batch["weight"] < 0.5, out["prediction"] > 0.5, own)
    targets = {"visible_iou": (own, has)}
    if "amodal" in batch:
        targets["amodal_iou"] = (batch["amodal"] > 0.5, has & batch["annotated"].bool())
    clips = max(has.shape[0], 1)
    scores = {}
    for name, (target, frames) in targets.items():
        inter = (pasted & target).sum(dim=(-2, -1)).float()
        union = (pasted | target).sum(dim=(-2, -1)).float()
        iou = (inter + IOU_SMOOTH) / (union + IOU_SMOOTH)
        scores[f"{name}_sum"] = (iou * frames).sum() / clips
        scores[f"{name}_n"] = frames.sum().float() / clips
    return scores


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
    """One training or validation step: the network under the loop's autocast, the losses in float32.

    Validation steps add :func:`selection_scores` (for ``--select-by``).
    """
    with ctx.autocast():
        out = model(batch)
    out = {k: v.float() if v.is_floating_point() else v for k, v in out.items()}
    losses = savos_loss(out, batch, config)
    return losses | selection_scores(out, batch) if ctx.phase == "val" else losses
