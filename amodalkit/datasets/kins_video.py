"""KINS-Video-Car: KINS car annotations matched back to KITTI raw videos, written as shards.

Inputs (layouts drawn in :mod:`amodalkit.datasets.kitti` and :mod:`amodalkit.datasets.kins`)::

    RAW/DATE/DATE_drive_NNNN_sync/image_02/data/0000000000.png     --kitti-raw
    DEVKIT/mapping/{train_rand.txt, train_mapping.txt}              --kitti-devkit
    OBJECT/training/image_2/000000.png                              --kitti-object
    instances_train.json | update_train_2020.json                   --kins-json
    TRACKS/2011_09_26_drive_0005_sync.txt                           --tracks pointtrack:TRACKS
                                                                    or builtin:TRACKS

A tracks file holds one line per object and frame, ``frame id class_id height width rle``,
the frame column being the raw frame number of that drive: PointTrack's exported results
(per-drive track counters, class 1 = car) for ``pointtrack:``; per-frame instance masks with
arbitrary ids, linked here by the built-in tracker, for ``builtin:``.

The build, per drive (one joblib task, or one Dask task with ``scheduler``; with ``--jobs N``
and GPUs, worker i computes flow on GPU ``i % GPUs`` in a process of its own, see
:func:`amodalkit.execution.worker_device`):

1. every KINS image whose raw frame is pixel-verified (see the match report) and that has
   at least one car annotation becomes an *annotated frame*; its clip is the `context` raw
   frames before and after it (cut at the drive's ends);
2. overlapping clips are read together (segments of at most ``MAX_SEGMENT`` frames):
   frames, forward + backward flow of the chosen backend (in one pass), car tracks;
3. each clip is one shard video: visible masks and tracks of the tracked cars; on the
   annotated frame, tracked cars and KINS cars are paired by Hungarian assignment on
   visible-mask IoU (tracked mask vs KINS inmodal mask), pairs below 0.5 dropped; a paired
   car gets the KINS amodal mask as ground truth there (``amodal_annotated`` true only
   there). Cars whose KINS inmodal and amodal masks are equal (IoU exactly 1: not
   occluded) are flagged and, like the official SaVos evaluation, not scored unless
   `keep_unoccluded`;
4. the drive's videos go to ``OUT/{split}-{drive}.h5``; drives are split train/val/test
   (no drive in two splits; ``OUT/splits.json``).

``OUT/match_report.json``, ``OUT/splits.json``, ``OUT/summary.json`` and per-drive
statistics in ``OUT/stats/`` sit beside the shards; a re-run skips every drive whose shard
and statistics are complete for the same settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from amodalkit.datasets.kins import CAR, KinsFile, load_kins
from amodalkit.datasets.kins_video_drive import _done_stats, build_drive, build_drive_on
from amodalkit.datasets.kins_video_plan import (
    SPLIT_FRACTIONS,
    SPLITS,
    AnnotatedFrame,
    BuildConfig,
    DriveTask,
    assign_splits,
)
from amodalkit.datasets.kitti import match_images, object_image_index
from amodalkit.errors import AmodalkitError
from amodalkit.execution import run_on_devices, run_tasks, worker_devices
from amodalkit.io.atomic import claim_output_dir, remove_stale_temps, write_json
from amodalkit.io.paths import check_relative

RECORD_FILE = "kins_video.json"


REPORT_FILE = "match_report.json"


SPLIT_FILE = "splits.json"


SUMMARY_FILE = "summary.json"


STATS_DIR = "stats"


HIST_BINS = 10


def _histogram(rates: Sequence[float]) -> dict[str, int]:
    counts, edges = np.histogram(np.asarray(rates, np.float64), bins=HIST_BINS, range=(0.0, 1.0))
    return {f"{edges[i]:.1f}-{edges[i + 1]:.1f}": int(c) for i, c in enumerate(counts)}


def summarize(stats: Sequence[dict], report: dict, splits: dict[str, list[str]]) -> dict:
    """Totals per split and overall, with the occlusion-rate histogram of the paired cars."""
    def total(rows: Sequence[dict]) -> dict:
        keys = ("clips", "frames", "tracked_objects", "kins_cars", "paired", "scored", "unoccluded")
        out = {k: int(sum(r[k] for r in rows)) for k in keys}
        out["drives"] = len(rows)
        return out

    rates = [x for r in stats for x in r["occlusion_rates"]]
    return {
        "images": report["summary"],
        "splits": {s: total([r for r in stats if r["split"] == s]) for s in SPLITS},
        "total": total(stats),
        "occlusion_rate_histogram": _histogram(rates),
        "drives": {s: list(v) for s, v in splits.items()},
    }


def format_build_summary(summary: dict) -> str:
    """A few lines for the terminal."""
    im = summary["images"]
    lines = [f"KINS images: {im['images']}, verified {im['verified']}, mismatched {im['mismatched']} "
             f"({im['mismatched_recovered_by_search']} recovered by search), unmatched {im['unmatched']}, "
             f"unverified {im['unverified']}"]
    lines.append(f"{'split':<6} {'drives':>6} {'clips':>6} {'frames':>7} {'objects':>8} {'paired':>7} "
                 f"{'scored':>7} {'unoccl.':>8}")
    for s, t in [*summary["splits"].items(), ("total", summary["total"])]:
        lines.append(f"{s:<6} {t['drives']:>6} {t['clips']:>6} {t['frames']:>7} {t['tracked_objects']:>8} "
                     f"{t['paired']:>7} {t['scored']:>7} {t['unoccluded']:>8}")
    hist = " ".join(f"{k}:{v}" for k, v in summary["occlusion_rate_histogram"].items())
    lines.append(f"occlusion rate of paired cars (KINS inmodal vs amodal): {hist}")
    return "\n".join(lines)


def _index_images(kins_files: Sequence[KinsFile]) -> dict[tuple[str, str], tuple[KinsFile, int]]:
    images: dict[tuple[str, str], tuple[KinsFile, int]] = {}
    for kf in kins_files:
        for img in kf.images.values():
            try:
                check_relative(img.file_name, None, "file_name")
                object_image_index(img.file_name)
            except AmodalkitError as exc:
                raise AmodalkitError(f"image {img.id}: {exc}", kf.path) from exc
            key = (kf.split, Path(img.file_name).name)
            if key in images:
                raise AmodalkitError(f"image {key[1]} ({key[0]}) is annotated in both "
                                     f"{images[key][0].path} and {kf.path}; pass one KINS release per split",
                                     kf.path)
            images[key] = (kf, img.id)
    return images


def build_kins_video(kitti_raw: str | Path, kitti_devkit: str | Path, kitti_object: str | Path,
                     kins_jsons: Sequence[str | Path], out: str | Path, config: BuildConfig, jobs: int = 1,
                     scheduler: str | None = None, quiet: bool = False) -> dict:
    """Match, split, preprocess, pair and write KINS-Video-Car shards to `out`; return the summary."""
    config.validate()
    if jobs < 1:
        raise AmodalkitError("--jobs must be at least 1")
    if not kins_jsons:
        raise AmodalkitError("give at least one --kins-json")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AmodalkitError("output path exists and is not a folder", out)
    kins_files = [load_kins(p) for p in kins_jsons]
    record = {"dataset": "kins_video_car", "config": config.content(),
              "kins_json": sorted(Path(p).name for p in kins_jsons)}
    out.mkdir(parents=True, exist_ok=True)
    claim_output_dir(out / RECORD_FILE, record,
                     "folder holds a KINS-Video-Car build made with other settings or inputs; "
                     "use a new --out")
    remove_stale_temps(out)
    images = _index_images(kins_files)
    report = match_images([(name, split) for split, name in images], kitti_raw, kitti_devkit, kitti_object,
                          config.match_tolerance, config.search_unmapped, jobs, quiet)
    report_json = report.to_json()
    write_json(out / REPORT_FILE, report_json)
    per_drive: dict[str, dict[int, AnnotatedFrame]] = {}
    cars_by_file = {id(kf): kf.by_image({CAR}) for kf in kins_files}
    for m in report.usable():
        kf, image_id = images[(m.split, m.image)]
        cars = cars_by_file[id(kf)][image_id]
        if cars and m.frame not in per_drive.setdefault(m.drive, {}):
            per_drive[m.drive][m.frame] = AnnotatedFrame(m.frame, m.image, image_id, kf.path.name, m.method,
                                                         cars)
    per_drive = {d: v for d, v in per_drive.items() if v}
    if not per_drive:
        raise AmodalkitError(f"no KINS car annotation was matched to a verified raw frame; see {REPORT_FILE}",
                             out / REPORT_FILE)
    splits = assign_splits({d: len(v) for d, v in per_drive.items()}, config.split_seed)
    write_json(out / SPLIT_FILE, {"seed": config.split_seed, "fractions": SPLIT_FRACTIONS, **splits})
    split_of = {d: s for s, ds in splits.items() for d in ds}
    tasks = []
    for drive in sorted(per_drive):
        frames = [per_drive[drive][f] for f in sorted(per_drive[drive])]
        key_src = {"record": record, "split": split_of[drive],
                   "frames": [(f.frame, f.image, f.kins_json, [a.id for a in f.annotations]) for f in frames]}
        key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]
        split = split_of[drive]
        tasks.append(DriveTask(drive, split, str(Path(kitti_raw)), str(out / f"{split}-{drive}.h5"),
                               str(out / STATS_DIR / f"{drive}.json"), frames, config, key,
                               quiet or jobs > 1 or scheduler is not None))
    done = {t.drive: _done_stats(t) for t in tasks}
    todo = [t for t in tasks if done[t.drive] is None]
    for t in tasks:
        if done[t.drive] is None:
            for stale in out.glob(f"*-{t.drive}.h5"):
                stale.unlink()
    devices = worker_devices(config.device, jobs) if scheduler is None else [config.device]
    if len(set(devices)) > 1 and len(todo) > 1:
        done_now = run_on_devices(build_drive_on, todo, devices[:len(todo)], quiet, unit="drive")
    else:
        done_now = run_tasks(build_drive, todo, jobs, scheduler, quiet, unit="drive")
    results = {r["drive"]: r for r in done_now}
    stats = [done[t.drive] or results[t.drive] for t in tasks]
    summary = summarize(stats, report_json, splits)
    summary["skipped_drives"] = sorted(d for d, s in done.items() if s is not None)
    write_json(out / SUMMARY_FILE, summary)
    return summary
