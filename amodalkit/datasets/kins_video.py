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
:func:`worker_device`):

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from joblib import Parallel, delayed, parallel_config
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from amodalkit.datasets.kins import CAR, CATEGORIES, KinsAnnotation, KinsFile, load_kins
from amodalkit.datasets.kitti import KittiRaw, match_images, object_image_index
from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import claim_output_dir, remove_stale_temps, write_json
from amodalkit.io.images import header_size
from amodalkit.io.paths import check_relative
from amodalkit.io.shards import ShardReader, Video, flow_for_storage, write_shard

if TYPE_CHECKING:
    from amodalkit.preprocess.flow.backends import FlowBackend

DEFAULT_CONTEXT = 10
MAX_SEGMENT = 64
PAIR_IOU = 0.5
MOTS_CAR = 1
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}
TRACK_KINDS = ("pointtrack", "builtin")
RECORD_FILE = "kins_video.json"
REPORT_FILE = "match_report.json"
SPLIT_FILE = "splits.json"
SUMMARY_FILE = "summary.json"
STATS_DIR = "stats"
HIST_BINS = 10
FLOW_CHUNK = 8
FLOW_BATCH = 2


@dataclass(frozen=True)
class TracksSpec:
    """``pointtrack:DIR`` or ``builtin:DIR``: one ``DRIVE.txt`` per raw drive."""

    kind: str
    folder: Path

    def file_for(self, drive: str) -> Path:
        """The tracks file of one drive."""
        return self.folder / f"{drive}.txt"


def parse_tracks_spec(spec: str) -> TracksSpec:
    """Parse ``pointtrack:DIR`` / ``builtin:DIR`` and check that DIR exists."""
    kind, sep, folder = spec.partition(":")
    if not sep or kind not in TRACK_KINDS or not folder:
        raise AmodalkitError(f"--tracks must be pointtrack:DIR or builtin:DIR, got {spec!r}")
    path = Path(folder)
    if not path.is_dir():
        raise AmodalkitError("tracks folder does not exist (expected one DRIVE.txt per raw drive)", path)
    return TracksSpec(kind, path)


@dataclass(frozen=True)
class BuildConfig:
    """Settings that decide the content of the shards (recorded in ``kins_video.json``)."""

    tracks: str
    context: int = DEFAULT_CONTEXT
    flow: str = "dis"
    checkpoint: str | None = None
    device: str = "cpu"
    split_seed: int = 0
    match_tolerance: int = 0
    keep_unoccluded: bool = False
    search_unmapped: bool = False

    def validate(self) -> TracksSpec:
        """Check the settings; return the parsed tracks spec."""
        if self.context < 0:
            raise AmodalkitError("--context must be >= 0")
        if self.match_tolerance < 0:
            raise AmodalkitError("--match-tolerance must be >= 0")
        if self.device not in ("auto", "cpu"):
            from amodalkit.device import check_device_name

            check_device_name(self.device)
        return parse_tracks_spec(self.tracks)

    def content(self) -> dict:
        """The settings that change shard content (device and paths excluded)."""
        d = asdict(self)
        d.pop("device")
        d["tracks"] = parse_tracks_spec(self.tracks).kind
        d["checkpoint"] = Path(self.checkpoint).name if self.checkpoint else None
        return d


@dataclass
class AnnotatedFrame:
    """One raw frame with KINS car annotations, and how its match was made."""

    frame: int
    image: str
    kins_image_id: int
    kins_json: str
    match_method: str
    annotations: list[KinsAnnotation]


@dataclass
class DriveTask:
    """Everything one worker needs to write one drive's shard."""

    drive: str
    split: str
    raw_root: str
    out_path: str
    stats_path: str
    frames: list[AnnotatedFrame]
    config: BuildConfig
    key: str
    quiet: bool = True


@dataclass
class DriveStats:
    """What a drive contributed (also written to ``OUT/stats/DRIVE.json``)."""

    drive: str
    split: str
    key: str
    clips: int = 0
    frames: int = 0
    tracked_objects: int = 0
    kins_cars: int = 0
    paired: int = 0
    scored: int = 0
    unoccluded: int = 0
    occlusion_rates: list[float] = field(default_factory=list)


def clip_window(frame: int, available: set[int], context: int) -> list[int]:
    """Raw frames [frame - context, frame + context], cut at the drive's ends or a missing frame."""
    lo = hi = frame
    while lo - 1 in available and frame - (lo - 1) <= context:
        lo -= 1
    while hi + 1 in available and (hi + 1) - frame <= context:
        hi += 1
    return list(range(lo, hi + 1))


def group_windows(windows: Sequence[list[int]], max_len: int = MAX_SEGMENT) -> list[list[int]]:
    """Indices of windows read together: overlapping or touching, at most `max_len` frames each."""
    order = sorted(range(len(windows)), key=lambda i: (windows[i][0], windows[i][-1]))
    groups: list[list[int]] = []
    lo = hi = None
    for i in order:
        w0, w1 = windows[i][0], windows[i][-1]
        if groups and w0 <= hi + 1 and max(hi, w1) - lo + 1 <= max_len:
            groups[-1].append(i)
            hi = max(hi, w1)
        else:
            groups.append([i])
            lo, hi = w0, w1
    return groups


def mask_ious(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> np.ndarray:
    """Pairwise IoU of two lists of (H, W) bool masks: (len(a), len(b)), 0 where both are empty."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    fa = np.stack([m.ravel() for m in a]).astype(np.float32)
    fb = np.stack([m.ravel() for m in b]).astype(np.float32)
    inter = (fa @ fb.T).astype(np.float64)
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def pair_objects(tracked: Sequence[np.ndarray], annotated: Sequence[np.ndarray],
                 threshold: float = PAIR_IOU) -> list[tuple[int, int, float]]:
    """Hungarian pairing on mask IoU: (tracked index, annotation index, IoU) with IoU >= threshold."""
    iou = mask_ious(tracked, annotated)
    if not iou.size:
        return []
    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols) if iou[r, c] >= threshold]


def assign_splits(weights: dict[str, int], seed: int,
                  fractions: dict[str, float] | None = None) -> dict[str, list[str]]:
    """Split drives into train/val/test, balancing clip counts (`weights`) to `fractions`.

    The drives are shuffled with `seed`; with three drives or more, the first three go one to
    each split (test, val, train), then each next drive goes to the split furthest below its
    share of clips. Deterministic in (drives, weights, seed).
    """
    fractions = fractions or SPLIT_FRACTIONS
    drives = sorted(weights)
    rng = np.random.default_rng(seed)
    order = [drives[i] for i in rng.permutation(len(drives))]
    total = sum(weights.values())
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    load = dict.fromkeys(SPLITS, 0)
    for i, d in enumerate(order):
        if len(order) >= len(SPLITS) and i < len(SPLITS):
            s = SPLITS[::-1][i]
        else:
            s = max(SPLITS, key=lambda x: (fractions[x] * total - load[x], -SPLITS.index(x)))
        out[s].append(d)
        load[s] += weights[d]
    return {s: sorted(v) for s, v in out.items()}


def _flow16(backend: FlowBackend, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward and backward flow of a segment's (T, H, W, 3) frames as float16, both (T-1, H, W, 2).

    One pass in chunks of ``FLOW_CHUNK`` frame pairs (so the float32 flow in memory stays
    small), ``FLOW_BATCH`` pairs per network call: one frame pair in both directions.
    """
    n, h, w = max(len(frames) - 1, 0), *frames.shape[1:3]
    fwd, bwd = np.zeros((n, h, w, 2), np.float16), np.zeros((n, h, w, 2), np.float16)
    for a in range(0, n, FLOW_CHUNK):
        b = min(a + FLOW_CHUNK, n)
        f, bk = backend.compute_both(frames[a:b + 1], FLOW_BATCH)
        fwd[a:b], bwd[a:b] = flow_for_storage(f), flow_for_storage(bk)
    return fwd, bwd


def _read_drive_tracks(spec: TracksSpec, drive: str, frames: set[int],
                       size: tuple[int, int] | None = None) -> list:
    from amodalkit.preprocess.tracks.formats import read_tracks

    path = spec.file_for(drive)
    if not path.is_file():
        raise AmodalkitError(f"no tracks file for drive {drive} (the tracks folder needs one DRIVE.txt per "
                             "drive with KINS annotations)", path)
    instances, _ = read_tracks(path, "pointtrack", [MOTS_CAR], frames=frames, size=size)
    return instances


def _segment_instances(spec: TracksSpec, instances: list, seg: list[int], flow: np.ndarray) -> list:
    """Instances per segment position: read tracks, or per-frame masks linked by the built-in tracker."""
    from amodalkit.preprocess.tracks.tracker import TrackerConfig, link_tracks

    per_frame = [instances[n] if n < len(instances) else [] for n in seg]
    if spec.kind == "pointtrack":
        return per_frame
    cfg = TrackerConfig()
    return link_tracks(per_frame, flows=flow, iou_threshold=cfg.iou_threshold, max_gap=cfg.max_gap,
                       memory=cfg.memory, precision_threshold=cfg.precision_threshold)


def _label_clip(video: Video, t0: int, af: AnnotatedFrame, cfg: BuildConfig,
                stats: DriveStats) -> Video:
    """Pair the clip's tracked cars with the KINS cars of frame t0 and store their amodal masks."""
    h, w = video.size
    visible = [video.visible_ids[t0] == k + 1 for k in range(video.num_objects)]
    kins_vis = [a.inmodal_mask(h, w) for a in af.annotations]
    kins_amodal = [a.amodal_mask(h, w) for a in af.annotations]
    amodal = np.array(video.amodal, copy=True)
    annotated = np.array(video.amodal_annotated, copy=True)
    objects: list[dict] = [{"track_id": int(t), "kins_annotation_id": None, "pair_iou": None,
                            "unoccluded": None} for t in video.track_ids]
    for k, j, iou in pair_objects(visible, kins_vis):
        a_mask, i_mask = kins_amodal[j], kins_vis[j]
        unoccluded = bool(a_mask.any() and np.array_equal(a_mask, i_mask))
        objects[k].update(kins_annotation_id=af.annotations[j].id, pair_iou=round(iou, 6),
                          unoccluded=unoccluded)
        stats.paired += 1
        stats.unoccluded += unoccluded
        area = int(a_mask.sum())
        if area:
            stats.occlusion_rates.append(1.0 - float((a_mask & i_mask).sum()) / area)
        if cfg.keep_unoccluded or not unoccluded:
            amodal[k, t0] = a_mask
            annotated[k, t0] = True
            stats.scored += 1
    stats.kins_cars += len(af.annotations)
    prov = dict(video.provenance)
    prov.update(annotated_frame={"t": t0, "raw_frame": af.frame, "kins_image": af.image,
                                 "kins_image_id": af.kins_image_id, "kins_json": af.kins_json,
                                 "match": af.match_method,
                                 "kins_car_annotation_ids": [a.id for a in af.annotations]},
                objects=objects)
    return video.evolve(amodal=amodal, amodal_annotated=annotated, provenance=prov,
                        object_class=np.full(video.num_objects, CAR, np.int32))


def _drive_videos(task: DriveTask, stats: DriveStats) -> Iterator[Video]:
    """Read, track, flow and label every clip of one drive, one video at a time."""
    from amodalkit.preprocess.flow.backends import get_flow_backend
    from amodalkit.preprocess.tracks.build import tracks_to_video

    cfg = task.config
    spec = parse_tracks_spec(cfg.tracks)
    raw = KittiRaw(task.raw_root)
    available = set(raw.frame_numbers(task.drive))
    windows = [clip_window(af.frame, available, cfg.context) for af in task.frames]
    backend = get_flow_backend(cfg.flow, cfg.checkpoint, cfg.device)
    wanted = {f for w in windows for f in w}
    size = header_size(raw.frame_path(task.drive, min(wanted))) if wanted else None
    instances = _read_drive_tracks(spec, task.drive, wanted, size)
    groups = group_windows(windows)
    bar = tqdm(total=len(windows), desc=task.drive, unit="clip", leave=False, disable=task.quiet)
    for group in groups:
        seg = list(range(min(windows[i][0] for i in group), max(windows[i][-1] for i in group) + 1))
        frames = raw.read_frames(task.drive, seg)
        fwd, bwd = _flow16(backend, frames)
        seg_instances = _segment_instances(spec, instances, seg, fwd)
        for i in sorted(group, key=lambda i: task.frames[i].frame):
            af, win = task.frames[i], windows[i]
            a, b = win[0] - seg[0], win[-1] - seg[0] + 1
            prov = {"dataset": "kins_video_car", "drive": task.drive, "split": task.split,
                    "raw_frames": [win[0], win[-1]], "tracks": spec.kind, "flow": backend.provenance,
                    "context": cfg.context}
            video = tracks_to_video(f"{task.drive}_{af.frame:010d}", frames[a:b], seg_instances,
                                    list(range(a, b)), [f"{task.drive}/{n:010d}" for n in win], prov)
            video = video.evolve(flow=fwd[a:b - 1], flow_backward=bwd[a:b - 1], flow_backend=backend.name)
            video = _label_clip(video, af.frame - win[0], af, cfg, stats)
            stats.clips += 1
            stats.frames += video.num_frames
            stats.tracked_objects += video.num_objects
            bar.update()
            yield video
    bar.close()


def worker_device(device: str, worker_index: int, n_gpus: int) -> str:
    """The device of local worker `worker_index`: ``auto`` and ``cuda`` go round-robin over `n_gpus` GPUs.

    Worker i gets ``cuda:{i % n_gpus}``; ``cpu``, an explicit ``cuda:N`` and any device when no
    GPU is visible stay as given (so ``cuda`` without a GPU still fails where it is resolved).
    """
    if device in ("auto", "cuda") and n_gpus > 0:
        return f"cuda:{worker_index % n_gpus}"
    return device


def worker_devices(device: str, jobs: int) -> list[str]:
    """:func:`worker_device` of each of `jobs` local workers, over the GPUs torch sees."""
    if device == "cpu" or jobs == 1:
        return [device] * jobs
    import torch

    n_gpus = torch.cuda.device_count()
    return [worker_device(device, i, n_gpus) for i in range(jobs)]


def build_drive(task: DriveTask) -> dict:
    """Write one drive's shard and its statistics; return the statistics (a joblib/Dask task)."""
    stats = DriveStats(task.drive, task.split, task.key)
    provenance = {"writer": "amodalkit build-kins-video", "dataset": "kins_video_car", "drive": task.drive,
                  "split": task.split, "build_key": task.key, "config": task.config.content(),
                  "categories": {str(CAR): CATEGORIES[CAR]}}
    write_shard(task.out_path, _drive_videos(task, stats), provenance)
    write_json(task.stats_path, asdict(stats))
    return asdict(stats)


def build_drive_on(task: DriveTask, device: str) -> dict:
    """:func:`build_drive` with the flow network on `device` (the device decides no content)."""
    return build_drive(replace(task, config=replace(task.config, device=device)))


def _done_stats(task: DriveTask) -> dict | None:
    """The statistics of a drive already written with the same key, else None."""
    stats_path, shard = Path(task.stats_path), Path(task.out_path)
    if not stats_path.is_file() or not shard.is_file():
        return None
    try:
        stats = json.loads(stats_path.read_text())
        with ShardReader(shard) as r:
            ok = r.provenance.get("build_key") == task.key and len(r) == stats.get("clips")
    except (AmodalkitError, OSError, ValueError):
        return None
    return stats if ok and stats.get("key") == task.key else None


def run_tasks(func: Callable[[DriveTask], dict], tasks: Sequence[DriveTask], jobs: int = 1,
              scheduler: str | None = None, quiet: bool = False) -> list[dict]:
    """Run per-drive tasks with joblib (`jobs` processes) or on a Dask cluster (`scheduler`)."""
    if not tasks:
        return []
    work = [delayed(func)(t) for t in tasks]
    bar = dict(total=len(tasks), desc="drives", unit="drive", disable=quiet)
    if scheduler is None:
        if jobs == 1:
            return [func(t) for t in tqdm(tasks, **bar)]
        return list(tqdm(Parallel(n_jobs=jobs, return_as="generator")(work), **bar))
    try:
        from dask.distributed import Client
    except ImportError as exc:
        raise AmodalkitError("--scheduler needs the optional Dask extra: pip install 'dask[distributed]'") \
            from exc
    try:
        client = Client(scheduler, timeout=10)
    except (OSError, TimeoutError, ValueError) as exc:
        raise AmodalkitError(f"cannot reach the Dask scheduler ({exc})", scheduler) from exc
    try:
        with parallel_config(backend="dask"):
            return list(tqdm(Parallel(return_as="generator")(work), **bar))
    finally:
        client.close()


def run_on_devices(func: Callable[[DriveTask, str], dict], tasks: Sequence[DriveTask], devices: Sequence[str],
                   quiet: bool = False) -> list[dict]:
    """Run ``func(task, devices[i])`` in one worker process per device, worker i always on ``devices[i]``.

    Each worker takes the next task as it becomes free (balanced like joblib); results come
    in the order they finish. The first failure stops the others from taking new tasks and
    is raised. Workers are spawned, never forked (CUDA does not survive ``fork``).
    """
    import multiprocessing
    import threading
    from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

    pending = list(reversed(tasks))
    lock = threading.Lock()
    stop = threading.Event()
    results: list[dict] = []
    context = multiprocessing.get_context("spawn")

    def lane(device: str, bar: tqdm) -> None:
        with ProcessPoolExecutor(1, mp_context=context) as worker:
            while not stop.is_set():
                with lock:
                    if not pending:
                        return
                    task = pending.pop()
                try:
                    result = worker.submit(func, task, device).result()
                except BaseException:
                    stop.set()
                    raise
                with lock:
                    results.append(result)
                    bar.update()

    with tqdm(total=len(tasks), desc="drives", unit="drive", disable=quiet) as bar, \
            ThreadPoolExecutor(len(devices)) as lanes:
        futures = [lanes.submit(lane, d, bar) for d in devices]
        try:
            for f in futures:
                f.result()
        except BaseException:
            stop.set()
            raise
    return results


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


def format_summary(summary: dict) -> str:
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
        done_now = run_on_devices(build_drive_on, todo, devices[:len(todo)], quiet)
    else:
        done_now = run_tasks(build_drive, todo, jobs, scheduler, quiet)
    results = {r["drive"]: r for r in done_now}
    stats = [done[t.drive] or results[t.drive] for t in tasks]
    summary = summarize(stats, report_json, splits)
    summary["skipped_drives"] = sorted(d for d, s in done.items() if s is not None)
    write_json(out / SUMMARY_FILE, summary)
    return summary
