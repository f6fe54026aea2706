"""PointTrack: amodalkit's reimplementation against the official classes, same random weights, same input.

Run from the repository root; the comparison needs a checkout of ``detectRecog/PointTrack``::

    POINTTRACK_REPO=/path/to/PointTrack OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pointtrack.py

The association check also needs the official ``munkres`` (``pip download munkres==1.1.2
--no-deps`` and put the wheel on ``PYTHONPATH``); it is skipped without it.

Without ``POINTTRACK_REPO`` (or when it holds no ``models/BranchedERFNet.py``) the comparison is
skipped with a line saying why, and the script still times our pipeline and exits 0.

What it does:

* fills our segmenter and tracker with seeded random weights (non-trivial BatchNorm
  statistics), saves them as the released files are laid out (``{'model_state_dict':
  {'module.' + key: ...}}``, torch 1.3's legacy format) and loads them back with
  ``load_segmenter`` / ``load_tracker``, and, unchanged, into the official ``BranchedERFNet``
  and ``TrackerOffsetEmb`` through ``DataParallel`` with ``strict=True``;
* segmenter: one textured 375x1242 RGB frame; the official path pads it with edge pixels to
  384x1248 as its ``LU_Pad`` does (``np.pad(mode='edge')``, what torchvision runs for PIL
  images), divides by 255 and crops the output; ours takes the frame as it is;
* clustering: a hand-made 375x1242 output with eight noisy car-like blobs (random weights
  give no meaningful seeds), through ``Cluster.cluster_mots_wo_points`` and our ``cluster``;
* points: the official ``MOTSTrackCarsValOffset.get_data_from_mots`` reads that instance map
  and the frame from a temporary folder after ``np.random.seed(0)``; ours samples with
  ``np.random.RandomState(0)``;
* tracker: both embed the official points and boxes;
* association: when the munkres package is importable, the official ``TrackHelper`` (car
  settings, ``alive_car=30``, mask IoU on) and our ``PointTrackTracker`` link a synthetic
  40-frame sequence of embeddings and masks (drift, gaps, clutter); agreeing ids are counted.

The official code hard-codes ``.cuda()`` (``Cluster``, ``LocationEmbedding``); without a GPU the
script makes ``Tensor.cuda`` return the tensor itself while the official code runs. Modules the
official files import but these steps never use (matplotlib, pandas, munkres) are stubbed when
missing. The largest absolute differences are printed against the 1e-4 target.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import pickle
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from amodalkit.preprocess.tracks.pointtrack import (  # noqa: E402
    PointTrackTracker,
    cluster,
    instance_points,
    load_segmenter,
    load_tracker,
)
from amodalkit.preprocess.tracks.pointtrack_nets import OFFICIAL_PAD, SegmenterNet, TrackerNet  # noqa: E402
from amodalkit.preprocess.tracks.pointtrack_track import embedding_grid  # noqa: E402

KITTI = (375, 1242)
TARGET = 1e-4


def randomized(module: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random values for every entry of `module`'s state dict (BatchNorm statistics included)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in module.state_dict().items():
        leaf = k.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            out[k] = torch.tensor(1000, dtype=torch.int64)
        elif leaf == "running_var":
            out[k] = 0.5 + torch.rand(v.shape, generator=gen)
        elif leaf == "running_mean" or leaf == "bias":
            out[k] = 0.1 * torch.randn(v.shape, generator=gen)
        elif v.ndim == 1:
            out[k] = 0.75 + 0.5 * torch.rand(v.shape, generator=gen)
        else:
            out[k] = torch.randn(v.shape, generator=gen) / math.sqrt(math.prod(v.shape[1:]))
    return out


def save_official(state: dict[str, torch.Tensor], path: Path) -> dict:
    """Write `state` as the released checkpoints are laid out; return the dict written."""
    ckpt = {"epoch": 0, "model_state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(ckpt, path, _use_new_zipfile_serialization=False)
    return ckpt


def textured_frame(seed: int = 0) -> np.ndarray:
    """A smooth random ``(375, 1242, 3)`` uint8 RGB frame."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, KITTI[0] // 8, KITTI[1] // 8, generator=gen)
    img = F.interpolate(coarse, size=KITTI, mode="bicubic", align_corners=False)[0].clamp(0, 1)
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def synthetic_output(n_cars: int = 8, seed: int = 0) -> torch.Tensor:
    """A ``(5, 375, 1242)`` output: noisy offsets to each car's centre, sigmas near 0.7, seeds 0.95-0.99."""
    rng = np.random.default_rng(seed)
    h, w = KITTI
    grid = embedding_grid(h, w).numpy().astype(np.float64)
    out = np.zeros((5, h, w))
    out[4] = -4.0 + 0.5 * rng.standard_normal((h, w))
    for _ in range(n_cars):
        bh, bw = int(rng.integers(30, 90)), int(rng.integers(40, 160))
        r, c = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        rows, cols = slice(r, r + bh), slice(c, c + bw)
        centre = grid[:, r + bh // 2, c + bw // 2]
        for ch in (0, 1):
            target = centre[ch] - grid[ch, rows, cols] + 0.002 * rng.standard_normal((bh, bw))
            out[ch, rows, cols] = np.arctanh(np.clip(target, -0.99, 0.99))
        out[2:4, rows, cols] = 0.7 + 0.05 * rng.standard_normal((2, bh, bw))
        out[4, rows, cols] = rng.uniform(2.9, 4.6, (bh, bw))
    return torch.from_numpy(out.astype(np.float32))


def label_map(masks: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Masks in order -> an int label map (k + 1 for mask k)."""
    out = np.zeros(size, np.int32)
    for k, m in enumerate(masks):
        out[m] = k + 1
    return out


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best process CPU time of `repeats` calls, in seconds (robust to other processes on the machine)."""
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


@contextlib.contextmanager
def official_imports(repo: Path) -> Iterator[None]:
    """The official checkout on ``sys.path``, unused heavy imports stubbed, ``.cuda()`` a no-op on CPU."""
    for name in ("matplotlib", "matplotlib.pyplot", "pandas", "munkres"):
        try:
            __import__(name)
        except ImportError:
            stub = types.ModuleType(name)
            stub.Munkres = object
            sys.modules[name] = stub
    if "matplotlib.pyplot" in sys.modules and not hasattr(sys.modules["matplotlib"], "pyplot"):
        sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]
    sys.path.insert(0, str(repo))
    original = torch.Tensor.cuda
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
    try:
        yield
    finally:
        torch.Tensor.cuda = original
        sys.path.remove(str(repo))


def time_ours(frame: np.ndarray, synth: torch.Tensor, seg_path: Path, trk_path: Path, repeats: int) -> None:
    """Print our CPU time per 375x1242 frame: segmenter forward, clustering, points + embedding."""
    seg, trk = load_segmenter(seg_path), load_tracker(trk_path)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float().div(255)
    with torch.inference_mode():
        t_seg = best_time(lambda: seg(x), repeats)
        t_cluster = best_time(lambda: cluster(synth), repeats)
        masks = [d.mask for d in cluster(synth)]
        t_track = best_time(lambda: trk(*map(torch.from_numpy, instance_points(
            frame, masks, np.random.RandomState(0)))), repeats)
    print(f"ours, CPU time, {torch.get_num_threads()} thread(s), 375x1242 frame (net at "
          f"{OFFICIAL_PAD[0]}x{OFFICIAL_PAD[1]}): segmenter {t_seg * 1e3:.0f} ms + clustering "
          f"{t_cluster * 1e3:.0f} ms ({len(masks)} instances) = {(t_seg + t_cluster) * 1e3:.0f} ms "
          f"per frame; points + tracker embedding {t_track * 1e3:.0f} ms")


def compare(repo: Path, frame: np.ndarray, synth: torch.Tensor, seg_state: dict, trk_state: dict,
            seg_path: Path, trk_path: Path, work: Path, repeats: int) -> None:
    """Run the official classes beside ours and print the largest differences."""
    with official_imports(repo):
        from models.BranchedERFNet import BranchedERFNet, TrackerOffsetEmb

        official_seg = nn.DataParallel(BranchedERFNet(num_classes=[4, 1], input_channel=3))
        official_seg.load_state_dict(save_official(seg_state, work / "s.pth")["model_state_dict"])
        official_trk = nn.DataParallel(TrackerOffsetEmb(num_points=1000, margin=0.2, border_ic=3,
                                                        env_points=500, outputD=32, category=True))
        official_trk.load_state_dict(save_official(trk_state, work / "t.pth")["model_state_dict"])
        official_seg.eval()
        official_trk.eval()
        ours_seg, ours_trk = load_segmenter(seg_path), load_tracker(trk_path)
        h, w = KITTI
        padded = np.pad(frame, ((0, OFFICIAL_PAD[0] - h), (0, OFFICIAL_PAD[1] - w), (0, 0)), mode="edge")
        with torch.inference_mode():
            theirs_x = torch.from_numpy(padded).permute(2, 0, 1)[None].float().div(255)
            t_official = best_time(lambda: official_seg(theirs_x), repeats)
            theirs = official_seg(theirs_x)[:, :, :h, :w]
            ours = ours_seg(torch.from_numpy(frame).permute(2, 0, 1)[None].float().div(255))
        d_seg = (theirs - ours).abs().max().item()
        print(f"segmenter: max |official - ours| = {d_seg:.2e} (outputs up to "
              f"{theirs.abs().max().item():.1f}; official forward {t_official * 1e3:.0f} ms CPU) "
              f"{'ok' if d_seg <= TARGET else 'OVER TARGET'}")

        from utils.utils import Cluster

        official_map = Cluster().cluster_mots_wo_points(synth, threshold=0.94, min_pixel=160, with_uv=True,
                                                        n_sigma=2).numpy().astype(np.int32)
        masks = [d.mask for d in cluster(synth)]
        ids = [i for i in np.unique(official_map).tolist() if i]
        relabelled = label_map([official_map == i for i in ids], official_map.shape)
        differ = int((relabelled != label_map(masks, (h, w))).sum())
        print(f"clustering: {len(ids)} official instances, {len(masks)} ours, label maps "
              f"{'identical' if not differ else f'DIFFER on {differ} px'}")

        from datasets.KittiMOTSDataset import MOTSTrackCarsValOffset

        (work / "images" / "0002").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(work / "images" / "0002" / "000005.png"), frame[..., ::-1])
        with open(work / "0002_5.pkl", "wb") as fh:
            pickle.dump(official_map.astype(np.uint8), fh, protocol=2)
        data = MOTSTrackCarsValOffset.__new__(MOTSTrackCarsValOffset)
        data.__dict__.update(mots_car_sequence=[str(work / "0002_5.pkl")], image_root=str(work / "images"),
                             expand_ratio=0.2, vMax=375.0, uMax=1242.0, num_points=1500, offsetMax=128.0,
                             category_embedding=np.array(__import__("config").category_embedding, np.float32))
        np.random.seed(0)
        sample = data.get_data_from_mots(0)
        points, boxes = instance_points(frame, [official_map == i for i in ids], np.random.RandomState(0))
        d_pts = float(np.abs(sample["points"] - points).max())
        d_box = float(np.abs(sample["xyxys"] - boxes).max())
        print(f"points: max |official - ours| = {d_pts:.2e}, boxes {d_box:.2e} "
              f"{'ok' if max(d_pts, d_box) <= TARGET else 'OVER TARGET'}")

        pts, bxs = torch.from_numpy(sample["points"]), torch.from_numpy(sample["xyxys"])
        with torch.inference_mode():
            theirs = official_trk(pts[None], None, bxs[None], infer=True)
            ours = ours_trk(pts, bxs)
        d_trk = (theirs - ours).abs().max().item()
        print(f"tracker: max |official - ours| = {d_trk:.2e} (embeddings up to "
              f"{theirs.abs().max().item():.2f}) {'ok' if d_trk <= TARGET else 'OVER TARGET'}")
        compare_association(work)


def toy_sequence(n_frames: int = 40, n_objects: int = 6,
                 seed: int = 0) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Frames of (embeddings (N, 32) float32, N masks): drifting boxes, noisy embeddings, gaps, clutter."""
    rng = np.random.default_rng(seed)
    h, w = KITTI
    base = rng.normal(0, 2.0, (n_objects, 32))
    pos = np.stack([rng.uniform(0, h - 80, n_objects), rng.uniform(0, w - 160, n_objects)], 1)
    hidden_from = rng.integers(5, n_frames, n_objects)
    hidden_for = rng.integers(1, 36, n_objects)
    frames = []
    for t in range(n_frames):
        pos += rng.normal(0, 4, pos.shape)
        pos = np.clip(pos, 0, [h - 80, w - 160])
        embs, masks = [], []
        for k in range(n_objects):
            if hidden_from[k] <= t < hidden_from[k] + hidden_for[k]:
                continue
            mask = np.zeros((h, w), bool)
            r, c = pos[k].astype(int)
            mask[r:r + 60, c:c + 120] = True
            embs.append(base[k] + rng.normal(0, rng.uniform(0.3, 1.5), 32))
            masks.append(mask)
        if rng.random() < 0.3:
            mask = np.zeros((h, w), bool)
            r, c = int(rng.integers(0, h - 40)), int(rng.integers(0, w - 40))
            mask[r:r + 40, c:c + 40] = True
            embs.append(rng.normal(0, 2.0, 32))
            masks.append(mask)
        order = rng.permutation(len(masks))
        frames.append((np.asarray([embs[i] for i in order], np.float32).reshape(-1, 32),
                       [masks[i] for i in order]))
    return frames


def compare_association(work: Path) -> None:
    """Official ``TrackHelper`` (car settings of test_tracking.py) against ``PointTrackTracker``."""
    if not getattr(sys.modules.get("munkres"), "__file__", None):
        print("association: skipped, the official TrackHelper needs the munkres package")
        return
    from utils.mots_util import TrackHelper

    helper = TrackHelper(str(work), 0.2, alive_car=30, car=True, mask_iou=True)
    ours = PointTrackTracker()
    agree = total = 0
    for t, (embs, masks) in enumerate(toy_sequence()):
        helper.tracking("0002", t, embs, np.asarray(masks, np.uint8).reshape(-1, *KITTI))
        official = {el.embed.tobytes(): el.track_id for el in helper.all_tracks if el.t == t}
        ids = ours.step(t, embs, masks)
        agree += sum(official[e.tobytes()] == i for e, i in zip(embs, ids))
        total += len(ids)
    print(f"association: {agree} of {total} detections get the official track id "
          f"({helper.next_inst_id - 1} official tracks, {ours._next_id - 1} ours)")


def main() -> int:
    """Time ours; compare with the official classes when ``POINTTRACK_REPO`` points at a checkout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    frame, synth = textured_frame(), synthetic_output()
    seg_state, trk_state = randomized(SegmenterNet(), 0), randomized(TrackerNet(), 1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seg_path, trk_path = work / "best_seed_model.pthCar", work / "PointTrack.pthCar"
        save_official(seg_state, seg_path)
        save_official(trk_state, trk_path)
        time_ours(frame, synth, seg_path, trk_path, args.repeats)
        repo = os.environ.get("POINTTRACK_REPO")
        if not repo:
            print("comparison skipped: POINTTRACK_REPO is not set (point it at a detectRecog/PointTrack "
                  "checkout)")
            return 0
        if not (Path(repo) / "models" / "BranchedERFNet.py").is_file():
            print(f"comparison skipped: {repo} holds no models/BranchedERFNet.py")
            return 0
        compare(Path(repo), frame, synth, seg_state, trk_state, seg_path, trk_path, work, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
