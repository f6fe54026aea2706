"""The flow stage: fill shards with forward and backward flow, or write flow files for a frame folder."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import output_lock, remove_stale_temps
from amodalkit.io.images import natural_key, read_rgb
from amodalkit.io.paths import refuse_overwrite
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import replace_flow
from amodalkit.io.shards import flow_for_storage
from amodalkit.preprocess.flow.backends import get_flow_backend
from amodalkit.preprocess.flow.base import FlowBackend, Progress

FRAME_FORMATS = {"flo": ".flo", "kitti-png": ".png"}


def count_flow_pairs(paths: Sequence[Path]) -> int:
    """How many frame pairs (forward + backward) filling these shards computes."""

    total = 0
    for p in paths:
        with ShardReader(p) as r:
            total += sum(2 * max(r.meta(i)["num_frames"] - 1, 0) for i in range(len(r)))
    return total


def shard_has_flow(path: Path, backend: FlowBackend) -> bool:
    """True when every video of the shard already holds both flows from this very backend."""

    with ShardReader(path) as r:
        done = all(r.meta(i)["flow_backend"] == backend.name
                   and {"flow", "flow_backward"} <= set(r.meta(i)["fields"]) for i in range(len(r)))
        return done and len(r) > 0 and r.provenance.get("flow") == backend.provenance


def fill_shard_flow(path: str | Path, backend: FlowBackend, batch_size: int = 1,
                    progress: Progress = None) -> Path:
    """Compute forward and backward flow (float16) of every video and replace the shard's flow atomically.

    Only the frames (and, for a backend that fits motion to the visible masks, the visible
    id map) are read and only the two flow datasets are written
    (:func:`amodalkit.io.shards.replace_flow`); the other datasets are copied as stored.
    """
    uses_visible = backend.uses_visible

    def flow_of(name: str, frames: np.ndarray, ids: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        if uses_visible:
            objects = int(ids.max(initial=0))
            fwd, bwd = backend.compute_both_visible(frames, ids, objects, batch_size, progress)
        else:
            fwd, bwd = backend.compute_both(frames, batch_size, progress)
        return flow_for_storage(fwd), flow_for_storage(bwd)

    return replace_flow(path, flow_of, backend.name, {"flow": backend.provenance}, with_visible=uses_visible)


def fill_shards_flow(paths: Sequence[Path], backend: FlowBackend, batch_size: int = 1,
                     quiet: bool = False) -> list[Path]:
    """Fill flow in every shard that lacks this backend's flow (a tqdm bar over frame pairs); return those.

    Each shard is locked while it is rewritten (a second run on it is refused) and the
    temporary files that killed runs left beside it are removed first.
    """
    from tqdm import tqdm

    todo = [Path(p) for p in paths if not shard_has_flow(Path(p), backend)]
    with tqdm(total=count_flow_pairs(todo), unit="pair", desc=backend.name, disable=quiet) as bar:
        for p in todo:
            with output_lock(p.parent, f".{p.name}.lock"):
                remove_stale_temps(p.parent)
                fill_shard_flow(p, backend, batch_size, bar.update)
    return todo


def fill_shard_task(task: tuple[Path, str, str | None, str, int]) -> str:
    """One shard as a unit of work for many processes or a Dask cluster: the backend is built in the worker.

    `task` is (shard, backend name, checkpoint, device, batch size); returns the shard's path.
    """
    path, name, checkpoint, device, batch_size = task
    backend = get_flow_backend(name, checkpoint, device)
    if not shard_has_flow(path, backend):
        with output_lock(path.parent, f".{path.name}.lock"):
            remove_stale_temps(path.parent)
            fill_shard_flow(path, backend, batch_size)
    return str(path)


def fill_shard_on(task: tuple[Path, str, str | None, str, int], device: str) -> str:
    """:func:`fill_shard_task` on `device`, for one worker per GPU (execution.run_on_devices)."""
    path, name, checkpoint, _, batch_size = task
    return fill_shard_task((path, name, checkpoint, device, batch_size))


def list_frames(pattern: str) -> list[Path]:
    """Frames matching a glob, in natural order (``frame2`` before ``frame10``); at least two."""
    found = sorted(glob.glob(pattern), key=natural_key)
    if len(found) < 2:
        raise AmodalkitError(f"optical flow needs at least two frames, {len(found)} match this pattern",
                             pattern)
    return [Path(p) for p in found]


def flow_file_names(frames: Sequence[Path], out_dir: Path, fmt: str) -> list[Path]:
    """One output per consecutive pair, named after the pair's first frame; never over an input."""
    if fmt not in FRAME_FORMATS:
        raise AmodalkitError(f"unknown flow file format {fmt!r}; choose {' or '.join(FRAME_FORMATS)}")
    outs = [out_dir / (p.stem + FRAME_FORMATS[fmt]) for p in frames[:-1]]
    if len({o.name for o in outs}) != len(outs):
        raise AmodalkitError("two frames share a file stem, so their flow files would collide", out_dir)
    refuse_overwrite([("--out", o) for o in outs], frames)
    return outs


def write_folder_flow(pattern: str, out_dir: str | Path, backend: FlowBackend, fmt: str = "flo",
                      batch_size: int = 1, quiet: bool = False) -> list[Path]:
    """Forward flow of consecutive frames matching `pattern`, one ``.flo`` / KITTI ``.png`` per pair."""
    from tqdm import tqdm

    frames = list_frames(pattern)
    outs = flow_file_names(frames, Path(out_dir), fmt)
    if batch_size < 1:
        raise AmodalkitError("--batch-size must be at least 1")
    with output_lock(out_dir), tqdm(total=len(outs), unit="pair", desc=backend.name, disable=quiet) as bar:
        remove_stale_temps(out_dir)
        _write_pairs(frames, outs, backend, fmt, batch_size, bar.update)
    return outs


def _write_pairs(frames: list[Path], outs: list[Path], backend: FlowBackend, fmt: str, batch_size: int,
                 progress: Progress) -> None:
    from amodalkit.io.flowio import write_flo, write_kitti_png

    writer = write_flo if fmt == "flo" else write_kitti_png
    cache: dict[Path, np.ndarray] = {}
    size: tuple[int, ...] | None = None
    for start in range(0, len(outs), batch_size):
        stop = min(start + batch_size, len(outs))
        images = []
        for p in frames[start:stop + 1]:
            img = cache.get(p)
            if img is None:
                img = read_rgb(p)
                size = size or img.shape
                if img.shape != size:
                    raise AmodalkitError(f"frame is {img.shape[1]}x{img.shape[0]}, the first frame is "
                                         f"{size[1]}x{size[0]}", p)
            images.append(img)
        cache = {frames[stop]: images[-1]}
        batch = np.stack(images)
        flows = backend.compute_pairs(batch[:-1], batch[1:], batch_size, progress)
        for out, flow in zip(outs[start:stop], flows, strict=True):
            writer(out, flow)


def describe_flow_file(path: str | Path) -> str:
    """One line about a ``.flo`` / KITTI ``.png`` flow file: size, valid share, magnitude."""
    from amodalkit.io.flowio import read_flow

    flow, valid = read_flow(path)
    mag = np.linalg.norm(flow[valid], axis=-1) if valid.any() else np.zeros(1)
    return (f"{path}: {flow.shape[1]}x{flow.shape[0]} flow, {100 * valid.mean():.1f}% valid, "
            f"|flow| mean {mag.mean():.3f} max {mag.max():.3f} px")
