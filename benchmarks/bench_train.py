"""Training throughput of the one engine against a reference checkout, interleaved in one run.

Each repeat trains the same short run with this tree and with the reference tree (an older
commit checked out with ``git worktree add REF COMMIT``), alternating which goes first, in
fresh processes with one torch thread, and reads the items per second of every epoch from
the runs' ``log.jsonl`` (the loop's own clock: data loading + forward + backward + step).
Prints the median and best of both and their ratio, per model.

    git worktree add /tmp/ref 387508f
    python benchmarks/bench_train.py --reference /tmp/ref [--repeats 3] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
#: model -> (items-per-second key of the log, extra train flags)
MODELS = {
    "savos": ("train_clips_per_s", ["--preset", "cpu", "--batch-size", "8", "--lr", "1e-3"]),
    "unet": ("train_items_per_s", ["--batch-size", "64", "--lr", "1e-3"]),
}


def train_rates(tree: Path, data: Path, out: Path, model: str, epochs: int) -> list[float]:
    """Items per second of each epoch of one run trained by the code in `tree`."""
    key, flags = MODELS[model]
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "amodalkit", "train", "--model", model, "--data", str(data / "train-*.h5"),
           "--out", str(out), "--epochs", str(epochs), "--seed", "0", "--device", "cpu", "--threads", "1",
           "--quiet", *flags]
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=tree)
    lines = (out / "log.jsonl").read_text().splitlines()
    records = [json.loads(x) for x in lines if x.strip()]
    rates = [r[key] if key in r else r["train_clips_per_s"] for r in records]
    return rates[1:] or rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, type=Path, help="Checkout of the reference commit.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="Epochs per run (the first is not timed).")
    parser.add_argument("--videos", type=int, default=24)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from amodalkit.datasets.chewing_gum import generate_dataset, make_config

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate_dataset(data, make_config("savos2022"), {"train": args.videos, "val": 0, "test": 0}, seed=0,
                         videos_per_shard=args.videos, quiet=True)
        print(f"{args.videos} savos2022 training videos, {args.epochs} epochs per run (first untimed), "
              f"1 torch thread, {args.repeats} interleaved repeats; reference {args.reference}")
        print("| model | reference items/s (median, best) | this tree items/s (median, best) | ratio |")
        print("|---|---|---|---|")
        for model in MODELS:
            rates: dict[str, list[float]] = {"ref": [], "new": []}
            for rep in range(args.repeats):
                order = [("ref", args.reference), ("new", HERE)]
                for label, tree in order if rep % 2 == 0 else order[::-1]:
                    out = Path(tmp) / f"{model}-{label}-{rep}"
                    rates[label] += train_rates(tree.resolve(), data, out, model, args.epochs)
            ref, new = statistics.median(rates["ref"]), statistics.median(rates["new"])
            print(f"| {model} | {ref:.1f}, {max(rates['ref']):.1f} | {new:.1f}, {max(rates['new']):.1f} | "
                  f"{new / ref:.2f}x |")


if __name__ == "__main__":
    main()
