"""FlowNet2 side by side on CPU: amodalkit's pure-PyTorch port against ptlflow's, same weights, same frames.

Runs in an environment that has ptlflow (amodalkit need not be installed there: the repository
root is put on ``sys.path``)::

    OMP_NUM_THREADS=1 /work/ptlvenv/bin/python benchmarks/bench_flownet2_ptlflow.py [--repeats 2]

What it does:

* builds amodalkit's FlowNet2 with seeded random weights (the official initialization), saves its
  state dict as an official checkpoint (``{"state_dict": ...}``, the ``FlowNet2_checkpoint.pth.tar``
  key names), loads that file back with ``load_flownet2`` and, unchanged, into
  ``ptlflow.get_model("flownet2")`` with ``strict=True`` (missing and unexpected keys are printed);
* feeds both the same seeded textured frame pair (the second frame is the first shifted by
  (-5, +3) px) at 384x1280, the size both resize a 375x1242 KITTI frame to (the next multiples of
  64; 1248 is not one), so neither resizes: ours gets ``(1, 3, 2, H, W)`` RGB in [0, 255],
  ptlflow ``{"images": (1, 2, 3, H, W)}`` BGR in [0, 1] (it subtracts the mean and flips BGR to RGB,
  with no further scaling, so both networks see (RGB - mean) / 255);
* times one forward each (eval, no grad), interleaved, best of ``--repeats``, and compares flows;
* checks each of the five sub-networks on identical inputs (this isolates the weights and the
  key layout from the glue between them);
* replays the FlowNet2 glue on our sub-networks with ptlflow's four departures from the official
  ``models.FlowNet2`` switched on one at a time, then all together, to account for the difference.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
NET_SIZE = (384, 1280)
KITTI_SIZE = (375, 1242)
SHIFT = (-5, 3)
DIV_FLOW = 20.0
DEVIATIONS = ("per_frame_mean", "masked_zero_warp", "bilinear_s2_sd", "sd_div_cubed")
DEVIATION_TEXT = {
    "per_frame_mean": "mean subtracted per frame, not over the pair",
    "masked_zero_warp": "warp pads with zeros and zeroes any pixel touching outside, not edge-clamped",
    "bilinear_s2_sd": "FlowNetS2 and FlowNetSD flows upsampled bilinearly, not nearest",
    "sd_div_cubed": "FlowNetSD flow divided by div_flow**3 = 8000, not div_flow = 20",
}


def textured_pair(size: tuple[int, int], shift: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``(2, 3, H, W)`` RGB in [0, 255]: a smooth random texture, then the same moved by `shift` (dx, dy)."""
    h, w = size
    dx, dy = shift
    pad = max(abs(dx), abs(dy))
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, (h + 2 * pad) // 4 + 2, (w + 2 * pad) // 4 + 2, generator=gen)
    canvas = F.interpolate(coarse, size=(h + 2 * pad, w + 2 * pad), mode="bicubic", align_corners=False)[0]
    canvas = (canvas - canvas.min()) / (canvas.max() - canvas.min()) * 255.0
    first = canvas[:, pad:pad + h, pad:pad + w]
    second = canvas[:, pad - dy:pad - dy + h, pad - dx:pad - dx + w]
    return torch.stack((first, second)).contiguous()


def max_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def diff(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Max and mean absolute difference."""
    d = (a.float() - b.float()).abs()
    return d.max().item(), d.mean().item()


def warp(image: torch.Tensor, flow: torch.Tensor, masked_zero: bool) -> torch.Tensor:
    """Backward warp: edge-clamped (official Resample2d) or zero-padded and masked (ptlflow's ``warp``)."""
    _, _, h, w = flow.shape
    ys = torch.arange(h, dtype=flow.dtype)
    xs = torch.arange(w, dtype=flow.dtype)
    gx = (xs[None, :] + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys[:, None] + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=3)
    if not masked_zero:
        return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)
    out = F.grid_sample(image, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    mask = F.grid_sample(torch.ones_like(image), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=True)
    return out * (mask >= 0.9999).to(out.dtype)


def replay_glue(model: nn.Module, pair: torch.Tensor, switched: frozenset[str]) -> torch.Tensor:
    """Official ``models.FlowNet2.forward`` on `model`'s sub-networks, with the `switched` deviations."""
    inputs = pair.permute(1, 0, 2, 3)[None]
    if "per_frame_mean" in switched:
        mean = inputs.mean(dim=(3, 4), keepdim=True)
    else:
        mean = inputs.reshape(1, 3, -1).mean(dim=-1).view(1, 3, 1, 1, 1)
    x = (inputs - mean) / 255.0
    img0, img1 = x[:, :, 0], x[:, :, 1]
    x = torch.cat((img0, img1), dim=1)
    masked = "masked_zero_warp" in switched
    late_mode = "bilinear" if "bilinear_s2_sd" in switched else "nearest"

    def up(f: torch.Tensor, mode: str) -> torch.Tensor:
        if mode == "nearest":
            return F.interpolate(f, scale_factor=4, mode="nearest")
        return F.interpolate(f, scale_factor=4, mode="bilinear", align_corners=False)

    def refine_input(flow: torch.Tensor) -> torch.Tensor:
        warped = warp(img1, flow, masked)
        return torch.cat((x, warped, flow / DIV_FLOW, torch.norm(img0 - warped, dim=1, keepdim=True)), dim=1)

    flow_c = up(model.flownetc(x) * DIV_FLOW, "bilinear")
    flow_s1 = up(model.flownets_1(refine_input(flow_c)) * DIV_FLOW, "bilinear")
    flow_s2 = up(model.flownets_2(refine_input(flow_s1)) * DIV_FLOW, late_mode)
    sd_div = DIV_FLOW ** 3 if "sd_div_cubed" in switched else DIV_FLOW
    flow_sd = up(model.flownets_d(x) / sd_div, late_mode)
    concat = torch.cat((img0, flow_sd, flow_s2, torch.norm(flow_sd, dim=1, keepdim=True),
                        torch.norm(flow_s2, dim=1, keepdim=True),
                        torch.norm(img0 - warp(img1, flow_sd, masked), dim=1, keepdim=True),
                        torch.norm(img0 - warp(img1, flow_s2, masked), dim=1, keepdim=True)), dim=1)
    return model.flownetfusion(concat)


def subnet_diffs(ours: nn.Module, theirs: nn.Module, size: tuple[int, int],
                 seed: int = 1) -> list[tuple[str, float, float, float]]:
    """Per sub-network: max and mean |difference| and ptlflow's max |output| on identical seeded inputs."""
    h, w = size
    gen = torch.Generator().manual_seed(seed)
    x6 = torch.rand(1, 6, h, w, generator=gen) - 0.5
    x12 = torch.rand(1, 12, h, w, generator=gen) - 0.5
    x11 = torch.rand(1, 11, h, w, generator=gen) - 0.5

    def up(f: torch.Tensor) -> torch.Tensor:
        return F.interpolate(f, scale_factor=4, mode="bilinear", align_corners=False)

    cases: list[tuple[str, torch.Tensor, torch.Tensor]] = [
        ("flownetc", DIV_FLOW * up(ours.flownetc(x6)),
         theirs.flownetc({"images": x6.view(1, 2, 3, h, w)}, skip_preprocess=True)["flows"][:, 0]),
        ("flownets_1", DIV_FLOW * up(ours.flownets_1(x12)),
         theirs.flownets_1({"images": x12[:, None]}, skip_preprocess=True)["flows"][:, 0]),
        ("flownets_2", DIV_FLOW * up(ours.flownets_2(x12)),
         theirs.flownets_2({"images": x12[:, None]}, skip_preprocess=True)["flows"][:, 0]),
        ("flownets_d", up(ours.flownets_d(x6)) / DIV_FLOW,
         theirs.flownets_d({"images": x6.view(1, 2, 3, h, w)}, skip_preprocess=True)["flows"][:, 0]),
        ("flownetfusion", ours.flownetfusion(x11),
         theirs.flownetfusion({"images": x11[:, None]})["flows"][:, 0]),
    ]
    return [(name, *diff(a, b), b.abs().max().item()) for name, a, b in cases]


def timed(fn: Callable[[], torch.Tensor], times: list[float]) -> torch.Tensor:
    """Run `fn` once, append its wall time to `times`, return its output."""
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
    return out


def main() -> None:
    """Load the same weights into both, time them and compare their flows."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2, help="timed forwards per model (best is reported)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, nargs=2, default=NET_SIZE, metavar=("H", "W"),
                    help="network input size, multiples of 64 (default: what a 375x1242 frame becomes)")
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    import ptlflow

    from amodalkit.preprocess.flow.flownet2 import FlowNet2, load_flownet2

    torch.set_grad_enabled(False)
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"machine: {os.cpu_count()} CPU cores, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads (OMP_NUM_THREADS={omp}), "
          f"ptlflow {importlib.metadata.version('ptlflow')}, load average {os.getloadavg()[0]:.2f}")

    torch.manual_seed(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "FlowNet2_checkpoint.pth.tar"
        torch.save({"state_dict": FlowNet2().state_dict(), "epoch": 0}, ckpt)
        ours = load_flownet2(ckpt)
        state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    theirs = ptlflow.get_model("flownet2")
    their_keys = list(theirs.state_dict().keys())
    missing = [k for k in their_keys if k not in state]
    unexpected = [k for k in state if k not in their_keys]
    print(f"\nofficial-layout checkpoint: {len(state)} keys; ptlflow flownet2 state dict: "
          f"{len(their_keys)} keys, same order: {their_keys == list(state)}; "
          f"missing {missing}, unexpected {unexpected}")
    theirs.load_state_dict(state, strict=True)
    theirs.eval()
    print("ptlflow load_state_dict(strict=True) of the checkpoint's state_dict, no renaming: ok")

    pair = textured_pair(tuple(args.size), SHIFT, seed=args.seed)
    ours_in = pair.permute(1, 0, 2, 3)[None].contiguous()
    theirs_in = (pair.flip(1) / 255.0)[None].contiguous()

    def run_ours() -> torch.Tensor:
        return ours(ours_in)

    def run_theirs() -> torch.Tensor:
        return theirs({"images": theirs_in})["flows"][:, 0]

    t_ours: list[float] = []
    t_theirs: list[float] = []
    rss = {}
    for _ in range(args.repeats):
        flow_ours = timed(run_ours, t_ours)
        rss.setdefault("ours", max_rss_mib())
        flow_theirs = timed(run_theirs, t_theirs)
        rss.setdefault("ptlflow", max_rss_mib())
    s_ours, s_theirs = min(t_ours), min(t_theirs)
    d_max, d_mean = diff(flow_ours, flow_theirs)
    size = f"{args.size[0]}x{args.size[1]}"
    print(f"\nruns (s): ours {[round(t, 2) for t in t_ours]}, ptlflow {[round(t, 2) for t in t_theirs]}; "
          f"peak RSS after first forward: ours {rss['ours']:.0f} MiB, ptlflow {rss['ptlflow']:.0f} MiB")
    print(f"flow scale (random weights): ours max |flow| {flow_ours.abs().max().item():.3g} px, "
          f"ptlflow max |flow| {flow_theirs.abs().max().item():.3g} px")

    print("\nsub-networks on identical random inputs (128x256), ptlflow's output convention:\n")
    print("| sub-network | max abs diff | mean abs diff | ptlflow max abs output |")
    print("|---|---|---|---|")
    for name, mx, mn, scale in subnet_diffs(ours, theirs, (128, 256)):
        print(f"| `{name}` | {mx:.2e} | {mn:.2e} | {scale:.3g} |")

    print(f"\nFlowNet2 glue replayed on our sub-networks ({size}), ptlflow's departures from the official "
          f"models.FlowNet2 switched on:\n")
    print("| switched on | vs ours: max / mean abs diff (px) | vs ptlflow: max / mean abs diff (px) "
          "| vs ptlflow: pixels off by > 1e-3 px |")
    print("|---|---|---|---|")
    rows = [frozenset(), *(frozenset({d}) for d in DEVIATIONS), frozenset(DEVIATIONS)]
    for switched in rows:
        replay = replay_glue(ours, pair, switched)
        if len(switched) == 1:
            (name,) = switched
            label = f"`{name}`: {DEVIATION_TEXT[name]}"
        else:
            label = "all four" if switched else "none (official glue)"
        (a, b), (c, d) = diff(replay, flow_ours), diff(replay, flow_theirs)
        off = int(((replay - flow_theirs).abs() > 1e-3).any(dim=1).sum())
        print(f"| {label} | {a:.3g} / {b:.3g} | {c:.3g} / {d:.3g} | {off} of {replay[0, 0].numel()} |")

    print(f"\nFlowNet2 on CPU, random weights, one {KITTI_SIZE[0]}x{KITTI_SIZE[1]} pair as the {size} "
          f"network input both resize it to, {torch.get_num_threads()} thread(s), best of {args.repeats}:\n")
    print("| model | s per pair | ours / ptlflow | flow max abs diff (px) | flow mean abs diff (px) |")
    print("|---|---|---|---|---|")
    print(f"| amodalkit `FlowNet2` (channels-last, as `load_flownet2` gives it) | {s_ours:.2f} | "
          f"{s_ours / s_theirs:.2f} | {d_max:.3g} | {d_mean:.3g} |")
    print(f"| ptlflow `flownet2` | {s_theirs:.2f} | 1.00 | - | - |")


if __name__ == "__main__":
    main()
