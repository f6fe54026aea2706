"""SaVos training throughput on this machine: object-clips/s, batched against a per-object loop.

    python benchmarks/bench_savos.py                      # paper + small, batch 8 and 32
    python benchmarks/bench_savos.py --configs small --batches 8 --iters 3

One step = forward (both directions), the self-supervised loss, backward and an Adam
update, on clips of ``--frames`` frames. "loop" runs the same clips one object at a time
(gradients accumulated, one update), which is how a per-object implementation trains.
Data loading (``ObjectClips`` on a generated savos2022 shard) is timed separately.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from amodalkit.data.clips import ClipConfig, ObjectClips
from amodalkit.datasets.chewing_gum import generate_dataset, make_config
from amodalkit.models.base import count_parameters
from amodalkit.models.savos.config import SavosConfig
from amodalkit.models.savos.loss import savos_loss
from amodalkit.models.savos.net import SavosNet

CONFIGS = {
    "paper": SavosConfig.paper,
    "small": SavosConfig.small,
}


def synthetic_batch(cfg: SavosConfig, b: int, t: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random clips with the layout of :mod:`amodalkit.data.clips`: (B, ..., T, h, w)."""
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.crop_size
    return {"image": torch.rand(b, 3, t, h, w, generator=g),
            "visible": (torch.rand(b, t, h, w, generator=g) > 0.5).float(),
            "flow": torch.randn(b, 2, t, h, w, generator=g),
            "flow_backward": torch.randn(b, 2, t, h, w, generator=g),
            "weight": torch.ones(b, t, h, w), "valid": torch.ones(b, t, dtype=torch.bool)}


def step_batched(net: SavosNet, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> None:
    """One training step on the whole batch."""
    loss = savos_loss(net(batch), batch, net.config)["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def step_bf16(net: SavosNet, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> None:
    """One training step with bfloat16 autocast (losses in float32)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(batch)
    out = {k: v.float() if v.is_floating_point() else v for k, v in out.items()}
    loss = savos_loss(out, batch, net.config)["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def step_loop(net: SavosNet, opt: torch.optim.Optimizer, batch: dict[str, torch.Tensor]) -> None:
    """The same step, one object clip at a time."""
    opt.zero_grad(set_to_none=True)
    n = batch["valid"].shape[0]
    for i in range(n):
        one = {k: v[i:i + 1] for k, v in batch.items()}
        (savos_loss(net(one), one, net.config)["loss"] / n).backward()
    opt.step()


def clips_per_second(step: object, net: SavosNet, batch: dict[str, torch.Tensor], iters: int) -> float:
    """Median-free simple timing: one warm-up step, then `iters` timed steps."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    step(net, opt, batch)
    t0 = time.perf_counter()
    for _ in range(iters):
        step(net, opt, batch)
    return iters * batch["valid"].shape[0] / (time.perf_counter() - t0)


def loading_rate(crop: tuple[int, int], frames: int, n: int = 200) -> float:
    """ObjectClips items/s (single process) on a freshly generated savos2022 shard."""
    with tempfile.TemporaryDirectory() as tmp:
        generate_dataset(Path(tmp), make_config("savos2022"), {"train": 25, "val": 0, "test": 0}, seed=0,
                         quiet=True)
        ds = ObjectClips(str(Path(tmp) / "train-*.h5"), ClipConfig(clip_len=frames, crop_size=crop))
        n = min(n, len(ds))
        t0 = time.perf_counter()
        for i in range(n):
            ds[i]
        return n / (time.perf_counter() - t0)


def main() -> None:
    """Print a markdown table of throughputs."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="paper,small")
    p.add_argument("--batches", default="8,32")
    p.add_argument("--frames", type=int, default=10)
    p.add_argument("--iters", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--bf16", action="store_true", help="Also time bfloat16 autocast (batched).")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {a.threads} threads, clips of {a.frames} frames\n")
    print("| config | crop | params | batch | batched clips/s | object-frames/s | loop clips/s | speed-up |"
          + (" bf16 clips/s |" if a.bf16 else ""))
    print("|---|---|---|---|---|---|---|---|" + ("---|" if a.bf16 else ""))
    for name in a.configs.split(","):
        cfg = CONFIGS[name](clip_len=a.frames)
        net = SavosNet(cfg)
        for b in (int(x) for x in a.batches.split(",")):
            batch = synthetic_batch(cfg, b, a.frames)
            batched = clips_per_second(step_batched, net, batch, a.iters)
            loop = clips_per_second(step_loop, net, batch, max(1, a.iters // 2))
            crop = "x".join(map(str, cfg.crop_size))
            bf16 = f" {clips_per_second(step_bf16, net, batch, a.iters):.1f} |" if a.bf16 else ""
            print(f"| {name} | {crop} | {count_parameters(net) / 1e6:.2f} M | {b} | {batched:.1f} | "
                  f"{batched * a.frames:.0f} | {loop:.1f} | {batched / loop:.2f}x |{bf16}", flush=True)
    print()
    for name in a.configs.split(","):
        cfg = CONFIGS[name]()
        rate = loading_rate(cfg.crop_size, a.frames)
        print(f"data loading, {name} crops {cfg.crop_size}: {rate:.0f} clips/s")


if __name__ == "__main__":
    main()
