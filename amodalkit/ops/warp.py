"""Forward warps: move masks along optical flow so that out[x + flow(x)] = src[x]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def forward_warp(src: torch.Tensor, flow: torch.Tensor, mode: str = "splat") -> torch.Tensor:
    """Move `src` along `flow` so that out[x + flow(x)] = src[x]: (N, C, h, w), (N, 2, h, w) -> (N, C, h, w).

    ``splat``: bilinear forward splatting, normalised where several sources land on one
    pixel (weights summing above 1), so masks stay in [0, 1]; differentiable in both inputs.
    ``sample``: the official code's approximation, backward sampling at x - flow(x).
    Flow channels are (u, v) = (dx, dy) in pixels; nothing enters from outside the frame.
    """
    src = src.float()
    flow = flow.float()
    n, c, h, w = src.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=src.device, dtype=flow.dtype),
                            torch.arange(w, device=src.device, dtype=flow.dtype), indexing="ij")
    if mode == "sample":
        gx = (xs - flow[:, 0]) * (2.0 / w) + (1.0 / w - 1.0)
        gy = (ys - flow[:, 1]) * (2.0 / h) + (1.0 / h - 1.0)
        return F.grid_sample(src, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="zeros",
                             align_corners=False)
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    x0 = torch.floor(x)
    y0 = torch.floor(y)
    fx = x - x0
    fy = y - y0
    out = src.new_zeros((n, c, h * w))
    wsum = src.new_zeros((n, 1, h * w))
    flat_src = src.reshape(n, c, h * w)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            cx = x0 + dx
            cy = y0 + dy
            inside = (cx >= 0) & (cx <= w - 1) & (cy >= 0) & (cy <= h - 1)
            weight = (wx * wy * inside).reshape(n, 1, h * w)
            idx = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).long().reshape(n, 1, h * w)
            out = out.scatter_add(2, idx.expand(n, c, h * w), flat_src * weight)
            wsum = wsum.scatter_add(2, idx, weight)
    return (out / wsum.clamp(min=1.0)).reshape(n, c, h, w)
