"""``--protocol official`` against the released SaVos evaluation code, run on the same arrays.

Needs a checkout of amazon-science/self-supervised-amodal-video-object-segmentation (its
``utils/evaluation.py`` is imported from there, never copied here); without one it says so
and exits 0. For every object-frame of the test videos it builds what the official test loop
hands to ``utils.evaluation.evaluation``: the prediction after the paste the official
``fish_loss_and_evaluation`` applies (``pred * (1 - loss_mask) + visible * loss_mask``, with
``loss_mask`` = 1 minus the other objects' visible union), the amodal label and the
loss mask, and compares the official per-entry ``IoU`` and ``invisible_IoU`` with
``amodalkit``'s ``official`` protocol entry by entry. Then it prints both means: the
official frame-level mean over every entry (metric1 of ``utils/test_subset_eval.py``; an
unoccluded entry's ``invisible_IoU`` is 1 through the IoU smoothing when the prediction stays
off the other objects' pixels and 0 when it does not) and over the occluded entries only
(what ``--protocol official`` reports on Chewing Gum).

    python benchmarks/bench_official_metrics.py --official PATH [--data 'DIR/test-*.h5']
        [--videos 200] [--methods convex,temporal]
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name

from amodalkit.datasets.chewing_gum import generate_dataset, make_config
from amodalkit.evaluation.evaluate import evaluate_method, predict_binaries, scored_object_frames
from amodalkit.evaluation.metrics import iou
from amodalkit.evaluation.protocols import get_protocol, others_visible
from amodalkit.io.shard_read import iter_videos
from amodalkit.io.shards import expand_shard_paths
from amodalkit.models.registry import build_method


def load_official(root: Path):
    """The official ``utils/evaluation.py`` module, imported from a checkout."""
    path = root / "utils" / "evaluation.py"
    spec = importlib.util.spec_from_file_location("savos_official_evaluation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def frame_mean(values: np.ndarray, keep: np.ndarray) -> float:
    """Mean over frames of the mean over kept objects (metric1), values and keep (K, T)."""
    counts = keep.sum(axis=0)
    sums = np.where(keep, values, 0).sum(axis=0)
    return float((sums[counts > 0] / counts[counts > 0]).mean())


def compare(official, method_name: str, paths: list[Path], videos: int) -> None:
    """Score one method both ways and print the per-entry agreement and the means."""
    method = build_method(method_name)
    rules = get_protocol("official")
    worst_full = worst_occ = 0.0
    entries = 0
    full_off, occ_off, keep_all, keep_occ = [], [], [], []
    fields = (*method.fields, "amodal", "amodal_annotated")
    for n, (_, video) in enumerate(iter_videos(paths, fields=fields)):
        if n == videos:
            break
        pred = predict_binaries(method, [video])[0]
        scored = scored_object_frames(video)
        visible = video.visible_masks()
        loss_mask = ~others_visible(video)  # 1 - the other objects' visible union
        # the official test loop's paste
        pasted = pred * (1 - loss_mask.astype(np.int64)) + visible * loss_mask
        label = torch.from_numpy(video.amodal.reshape(-1, *video.size))
        counts = torch.from_numpy(scored.reshape(-1).astype(np.int64))
        saved: dict = {}
        infos = {key: torch.zeros(1, 3) for key in ("video_ids", "object_ids", "frame_ids")}
        official.evaluation(torch.from_numpy(pasted.reshape(-1, *video.size).astype(np.float32)), label,
                            torch.from_numpy(loss_mask.reshape(-1, *video.size)), counts, infos, saved)
        off_full = np.asarray(saved["IoU"]).reshape(scored.shape)
        off_occ = np.asarray(saved["invisible_IoU"]).reshape(scored.shape)
        ours = rules.prepare(pred, video)
        hidden = rules.hidden_region(video)
        our_full = iou(ours, video.amodal)
        our_occ = iou(ours & hidden, video.amodal & hidden)
        has_occ = scored & (video.amodal & hidden).any(axis=(-2, -1))
        worst_full = max(worst_full, float(np.abs(off_full - our_full)[scored].max(initial=0)))
        worst_occ = max(worst_occ, float(np.abs(off_occ - our_occ)[has_occ].max(initial=0)))
        entries += int(scored.sum())
        full_off.append(off_full)
        occ_off.append(off_occ)
        keep_all.append(scored)
        keep_occ.append(has_occ)
    mean = evaluate_method(method, paths, quiet=True, protocol="official")
    print(f"{method_name}: {entries} object-frames; largest per-entry difference official vs ours: "
          f"IoU {worst_full:.2e}, invisible IoU {worst_occ:.2e} (over occluded entries)")
    full = np.concatenate(full_off, axis=1)
    occ = np.concatenate(occ_off, axis=1)
    keep, occluded = np.concatenate(keep_all, axis=1), np.concatenate(keep_occ, axis=1)
    print(f"  official code, metric1: full {frame_mean(full, keep):.4f}, invisible over every entry "
          f"{frame_mean(occ, keep):.4f}, over occluded entries {frame_mean(occ, occluded):.4f}")
    print(f"  amodalkit --protocol official: full {mean['frame_miou_full']:.4f}, "
          f"occluded {mean['frame_miou_occluded']:.4f} ({mean['n_videos']} videos)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, help="checkout of the official SaVos repository")
    parser.add_argument("--data", default=None,
                        help="test shards (default: 200 fresh savos2022 videos, seed 0)")
    parser.add_argument("--videos", type=int, default=200)
    parser.add_argument("--methods", default="convex,temporal")
    args = parser.parse_args()
    if args.official is None or not (args.official / "utils" / "evaluation.py").is_file():
        print("skipped: give --official PATH, a checkout of amazon-science/self-supervised-amodal-video-"
              "object-segmentation (utils/evaluation.py)")
        return
    torch.set_num_threads(1)
    official = load_official(args.official)
    print(f"machine: {cpu_name()}, one thread; official code from {args.official}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.data is None:
            generate_dataset(tmp, make_config("savos2022"), {"test": args.videos}, seed=0, quiet=True)
            paths = expand_shard_paths(str(Path(tmp) / "test-*.h5"))
        else:
            paths = expand_shard_paths(args.data)
        for name in args.methods.split(","):
            compare(official, name, paths, args.videos)


if __name__ == "__main__":
    sys.exit(main())
