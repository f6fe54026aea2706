"""Score a method on shards with the paper's metrics (frame- and object-level, full and occluded mIoU)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import closing
from functools import partial
from pathlib import Path

import numpy as np
from tqdm import tqdm

from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.metrics import MetricAccumulator
from amodalkit.evaluation.prefetch import PrefetchedVideos, open_readers, read_videos
from amodalkit.evaluation.protocols import DEFAULT_PROTOCOL, Protocol, get_protocol
from amodalkit.execution import run_on_devices, run_tasks, worker_devices
from amodalkit.io.remote import ShardLocation, as_shard_location
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shards import Video
from amodalkit.models.base import AmodalMethod

GT_FIELDS = ("amodal", "amodal_annotated")
#: videos the prefetching reader reads beyond one batch
READ_AHEAD = 2


def scored_object_frames(video: Video) -> np.ndarray:
    """Object-frames that count: annotated, present, with a non-empty amodal mask: (K, T) bool."""
    return video.amodal_annotated & video.presence & video.amodal.any(axis=(-2, -1))


def predict_binary(method: AmodalMethod, video: Video) -> np.ndarray:
    """Thresholded prediction at 0.5, with visible pixels always part of it: (K, T, H, W) bool."""
    return predict_binaries(method, [video])[0]


def checked_predictions(method: AmodalMethod, videos: Sequence[Video]) -> list[np.ndarray]:
    """``method.predict_videos(videos)``, each checked to be (K, T, H, W) for its video."""
    out = []
    for video, pred in zip(videos, method.predict_videos(videos), strict=True):
        pred = np.asarray(pred)
        expected = (video.num_objects, video.num_frames, *video.size)
        if pred.shape != expected:
            raise AmodalkitError(f"method {method.name!r} returned shape {pred.shape} for video "
                                 f"{video.name!r}, expected {expected}")
        out.append(pred)
    return out


def predict_binaries(method: AmodalMethod, videos: Sequence[Video]) -> list[np.ndarray]:
    """:func:`predict_binary` of several videos, predicted together (:meth:`AmodalMethod.predict_videos`)."""
    preds = checked_predictions(method, videos)
    return [(pred > 0.5) | video.visible_masks() for video, pred in zip(videos, preds, strict=True)]


def unique_paths(paths: Sequence[ShardLocation]) -> list[ShardLocation]:
    """`paths` in order without repeats of the same file (compared by resolved path or URL)."""
    seen: dict[object, ShardLocation] = {}
    for p in paths:
        p = as_shard_location(p)
        seen.setdefault(p.resolve() if isinstance(p, Path) else p, p)
    return list(seen.values())


def score_readers(method: AmodalMethod, readers: Sequence[ShardReader], rules: Protocol,
                  object_filter: Callable[[Video], np.ndarray] | None = None, prefetch: bool = True,
                  quiet: bool = True) -> tuple[MetricAccumulator, set[str]]:
    """Scores of every video of `readers` in order, and the flow backends their videos hold."""
    total = sum(len(r) for r in readers)
    batch = max(1, method.videos_per_batch)
    acc = MetricAccumulator()
    fields = tuple(method.fields) + GT_FIELDS
    pending: list[tuple[Video, np.ndarray]] = []
    flows: set[str] = set()

    def score_pending() -> None:
        preds = predict_binaries(method, [v for v, _ in pending])
        for (video, scored), pred in zip(pending, preds):
            acc.add(rules.score(pred, video, scored))
        pending.clear()

    reading = (PrefetchedVideos(readers, fields, ahead=batch + READ_AHEAD) if prefetch
               else closing(read_videos(readers, fields)))
    with reading as videos:
        for video in tqdm(videos, total=total, desc=f"evaluate {method.name}", unit="video", disable=quiet):
            flows.add(video.flow_backend or "none")
            scored = rules.object_frames(video, scored_object_frames(video))
            if object_filter is not None:
                scored = scored & np.asarray(object_filter(video), bool)
            if not scored.any():
                acc.n_videos += 1
                continue
            pending.append((video, scored))
            if len(pending) >= batch:
                score_pending()
    if pending:
        score_pending()
    return acc, flows


def score_shard_task(method: AmodalMethod, rules: Protocol,
                     object_filter: Callable[[Video], np.ndarray] | None, path: str) -> dict:
    """The map step of a distributed evaluation: one shard's accumulator and flow backends."""
    acc, flows = score_readers(method, [ShardReader(as_shard_location(path))], rules, object_filter)
    return {"shard": path, "accumulator": acc, "flows": sorted(flows)}


def evaluate_method(method: AmodalMethod, paths: Sequence[ShardLocation], quiet: bool = False,
                    data: str | None = None,
                    object_filter: Callable[[Video], np.ndarray] | None = None,
                    prefetch: bool = True, protocol: Protocol | str = DEFAULT_PROTOCOL,
                    jobs: int = 1, scheduler: str | None = None) -> dict:
    """Frame- and object-level full/occluded mIoU of `method` over every video of `paths`.

    `object_filter(video)` -> (K, T) bool, when given, further restricts the scored
    object-frames (e.g. FISHBOWL's occlusion-rate range). A shard given twice (the same file
    by resolved path, e.g. through a glob and by name) is scored once. Every shard is
    validated once, up front; with `prefetch` a background thread reads the next batch of
    videos (plus :data:`READ_AHEAD`) while the method predicts the current one, so at most
    about two batches are in memory. The scores are the same with and without it.
    `protocol` (:mod:`amodalkit.evaluation.protocols`) decides the paste rule, the occluded
    region and the dataset filters; the result names it and the flow the shards hold.
    With `jobs` > 1 or a Dask `scheduler` each shard is scored as its own task (map) and
    the per-shard accumulators are joined in shard order (reduce): the same numbers, bit
    for bit, as one process.
    """
    rules = get_protocol(protocol) if isinstance(protocol, str) else protocol
    paths = unique_paths(paths)
    readers = open_readers(paths)
    if jobs < 1:
        raise AmodalkitError(f"--jobs must be at least 1, got {jobs}")
    if jobs == 1 and scheduler is None:
        acc, flows = score_readers(method, readers, rules, object_filter, prefetch, quiet)
    else:
        shards = [str(p) for p in paths]
        devices = gpu_workers(method, jobs) if scheduler is None else []
        if len(set(devices)) > 1 and len(shards) > 1:  # one worker per GPU, each scoring on its own
            parts = score_on_devices(method, rules, object_filter, shards, devices[:len(shards)], quiet)
        else:
            task = partial(score_shard_task, method, rules, object_filter)
            parts = run_tasks(task, shards, jobs, scheduler, quiet, unit="shard",
                              resources=method_resources(method))
        acc, flows = MetricAccumulator(), set()
        for part in parts:
            acc.merge(part["accumulator"])
            flows.update(part["flows"])
    result = acc.result()
    if result["n_object_frames"] == 0:
        raise AmodalkitError("the shards hold no amodal ground truth to score against",
                             paths[0] if len(paths) == 1 else None)
    settings = {json.dumps(r.provenance["flow"], sort_keys=True) for r in readers if "flow" in r.provenance}
    return {**method.describe(), "data": data or " ".join(str(p) for p in paths),
            "shards": [str(p) for p in paths], "protocol": rules.name, "flow": ", ".join(sorted(flows)),
            "flow_settings": [json.loads(f) for f in sorted(settings)],
            **result}


def gpu_workers(method: AmodalMethod, jobs: int) -> list[str]:
    """The devices of `jobs` local workers for a trained method on CUDA: one per visible GPU (else none)."""
    device = getattr(method, "device", None)
    if not hasattr(method, "to_device") or getattr(device, "type", "cpu") != "cuda":
        return []
    return worker_devices("cuda", jobs)


def score_shard_on(method: AmodalMethod, rules: Protocol, object_filter: Callable[[Video], np.ndarray] | None,
                   path: str, device: str) -> dict:
    """:func:`score_shard_task` with the method moved to this worker's `device` first."""
    method.to_device(device)
    return score_shard_task(method, rules, object_filter, path)


def score_on_devices(method: AmodalMethod, rules: Protocol,
                     object_filter: Callable[[Video], np.ndarray] | None, shards: list[str],
                     devices: list[str], quiet: bool) -> list[dict]:
    """Every shard's scores from one worker per device, in shard order.

    The method travels to the workers on the CPU, so no GPU holds a copy it will not use; the
    caller's method is back on its own device afterwards.
    """
    home = method.device
    method.to_device("cpu")
    try:
        parts = run_on_devices(partial(score_shard_on, method, rules, object_filter), shards, devices, quiet,
                               unit="shard")
    finally:
        method.to_device(home)
    order = {s: i for i, s in enumerate(shards)}
    return sorted(parts, key=lambda part: order[part["shard"]])


def method_resources(method: AmodalMethod) -> dict[str, float] | None:
    """Dask worker resources a task of `method` needs: one GPU when it runs on CUDA, else none."""
    device = str(getattr(method, "device", "cpu"))
    return {"GPU": 1} if device.startswith("cuda") else None


def format_table(result: dict) -> str:
    """A small text table of one evaluation result."""
    rows = [
        ("", "full", "occluded"),
        ("frame-level mIoU", f"{result['frame_miou_full']:.4f}", f"{result['frame_miou_occluded']:.4f}"),
        ("object-level mIoU", f"{result['object_miou_full']:.4f}", f"{result['object_miou_occluded']:.4f}"),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [f"method: {result['method']}  videos: {result['n_videos']}  object-frames: "
             f"{result['n_object_frames']} ({result['n_occluded_object_frames']} occluded)"]
    if "protocol" in result:
        lines.append(f"protocol: {result['protocol']}  flow: {result.get('flow') or 'none'}")
    lines += [f"{a:<{width}}  {b:>8}  {c:>8}" for a, b, c in rows]
    return "\n".join(lines)
