"""Chewing Gum generator CPU and wall time per video, against the first release and the official layout.

    python benchmarks/bench_generator.py                     # 200 savos2022 videos, 3 repeats
    python benchmarks/bench_generator.py --videos 400 --repeats 5 --no-layouts

Rows, all on the same savos2022 videos (seed 0, train split), in one process with one compute
thread (``cv2.setNumThreads(1)``), interleaved (the order rotates every repeat) so that load
from other jobs hits each alike:

* "render, new": ``generate_video`` as shipped (vectorised palette and flow lookups).
* "render, first release": the renderer before issue 17, copied below; its arrays must equal
  the new ones to the last bit (checked on every video).
* "generate + write, --jobs 1": ``generate_dataset(..., jobs=1)``, what ``gen-chewing-gum
  --jobs 1`` does (50 videos per shard).
* "official layout": the stand-in for the official generator: the first release's renderer
  and the official release's files (one PNG and one pickle of the object dict per frame).
  Its ~43 videos/s matched the official generator's own ~45 videos/s on one core.
* "former layout": the new renderer and the shard layout before the chunk encoder (h5py's gzip
  level 3 + shuffle, one frame per chunk), the reference for the shipped ``write_shard``.

CPU time is the process's, from ``time.process_time``; min and median over the repeats.
Then a cProfile of "generate + write" and, unless ``--no-layouts``, the HDF5 write of the same
videos under other chunk layouts and filters (h5py directly, read back and compared).
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import os
import pickle
import platform
import pstats
import resource
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import h5py
import numpy as np

from amodalkit.datasets import chewing_gum as cg
from amodalkit.io.shard_write import write_shard
from amodalkit.io.shards import SCHEMA_NAME, SCHEMA_VERSION, Video, validate_video
from amodalkit.ops.masks import never_visible_pixels

FIELDS = ("frames", "visible_ids", "amodal", "flow", "flow_backward")


def _first_release_paste(template: np.ndarray, centre: np.ndarray, radius: int,
                         size: tuple[int, int]) -> np.ndarray:
    """The first release's template placement: one fresh (H, W) canvas per object-frame."""
    h, w = size
    out = np.zeros(size, bool)
    x0, y0 = int(centre[0]) - radius, int(centre[1]) - radius
    ys, xs = max(0, -y0), max(0, -x0)
    ye, xe = min(template.shape[0], h - y0), min(template.shape[1], w - x0)
    if ye > ys and xe > xs:
        out[y0 + ys:y0 + ye, x0 + xs:x0 + xe] = template[ys:ye, xs:xe]
    return out


def _first_release_render(scene: cg.Scene, cfg: cg.ChewingGumConfig) -> tuple[np.ndarray, ...]:
    """The first release's renderer: frames, visible ids, amodal masks, forward and backward flow."""
    size = (cfg.height, cfg.width)
    k, t = scene.paths.shape[:2]
    amodal = np.zeros((k, t, *size), bool)
    for i in range(k):
        for f in range(t):
            amodal[i, f] = _first_release_paste(scene.templates[i], scene.paths[i, f], scene.radii[i], size)
    frames = np.empty((t, *size, 3), np.uint8)
    frames[:] = scene.background.astype(np.uint8)
    visible_ids = np.zeros((t, *size), np.uint16)
    owner = np.full((t, *size), -1, np.int64)
    for depth, i in enumerate(scene.order):
        frames[amodal[i]] = scene.colours[i].astype(np.uint8)
        visible_ids[amodal[i]] = i + 1
        owner[amodal[i]] = i
        if depth == 0 and scene.texture is not None:
            offset, colour = scene.texture
            for f in range(t):
                x0, y0 = scene.paths[i, f] + offset
                ys, xs = slice(max(y0, 0), max(y0 + 9, 0)), slice(max(x0, 0), max(x0 + 9, 0))
                frames[f, ys, xs] = colour.astype(np.uint8)
                owner[f, ys, xs] = i
    motion = np.concatenate([np.diff(scene.paths, axis=1), np.zeros((1, t - 1, 2), np.int64)], axis=0)
    fwd = motion[owner[:-1], np.arange(t - 1)[:, None, None]].astype(np.float16)
    bwd = (-motion[owner[1:], np.arange(t - 1)[:, None, None]]).astype(np.float16)
    return frames, visible_ids, amodal, fwd, bwd


def first_release_video(cfg: cg.ChewingGumConfig, seed: np.random.SeedSequence) -> tuple[dict, list[int]]:
    """One video as the first release drew it: its arrays by field name and the depth order."""
    rng = np.random.default_rng(seed)
    sample = cg._sample_savos2022 if cfg.preset == "savos2022" else cg._sample_default
    while True:
        scene = sample(rng, cfg)
        arrays = dict(zip(FIELDS, _first_release_render(scene, cfg)))
        amodal, ids = arrays["amodal"], arrays["visible_ids"]
        visible = ids[None] == np.arange(1, len(amodal) + 1, dtype=np.uint16)[:, None, None, None]
        if all(never_visible_pixels(amodal[i], visible[i])[0] == 0 for i in range(len(amodal))):
            return arrays, [int(i) for i in scene.order]


def first_release_as_video(cfg: cg.ChewingGumConfig, seed: np.random.SeedSequence, name: str) -> Video:
    """The first release's video with the fields ``generate_video`` fills (provenance shortened)."""
    a, order = first_release_video(cfg, seed)
    k, t = a["amodal"].shape[:2]
    return Video(name=name, frames=a["frames"], visible_ids=a["visible_ids"], amodal=a["amodal"],
                 amodal_annotated=np.ones((k, t), bool), presence=np.ones((k, t), bool),
                 track_ids=np.arange(1, k + 1, dtype=np.int64),
                 source_frame_ids=np.array([f"{name}/{f:05d}" for f in range(t)], dtype=object),
                 flow=a["flow"], flow_backward=a["flow_backward"],
                 provenance={"generator": "chewing_gum", "depth_order": order}, flow_backend="exact")


def write_layout(path: Path, videos: Iterable[Video], writer: Callable[[h5py.Group, Video], None]) -> None:
    """A shard (validated videos, one group each, the root attributes ShardReader reads) in another layout."""
    with h5py.File(path, "w", libver=("earliest", "v110"), rdcc_nbytes=0) as f:
        f.attrs.update({"schema": SCHEMA_NAME, "schema_version": SCHEMA_VERSION, "provenance": "{}"})
        root = f.create_group("videos")
        for v in videos:
            validate_video(v)
            writer(root.create_group(v.name), v)
        f.attrs["n_videos"] = len(root)


def digest(arrays: dict | Video) -> str:
    """sha256 over dtype, shape and bytes of every array field."""
    h = hashlib.sha256()
    for name in FIELDS:
        a = arrays[name] if isinstance(arrays, dict) else getattr(arrays, name)
        h.update(f"{name}{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_official_files(out: Path, index: int, frames: np.ndarray, amodal: np.ndarray,
                         order: list[int]) -> None:
    """The official release's files for one video: a PNG and a pickle of the object dict per frame."""
    d = out / f"{index:05d}"
    d.mkdir(parents=True)
    for t in range(len(frames)):
        cv2.imwrite(str(d / f"{t:05d}.png"), frames[t][..., ::-1])
        record = {"order": np.array(order), "full_mask": amodal[:, t].astype(np.int64),
                  "img_obj": [frames[t, :16, :16] for _ in range(len(amodal))]}
        with open(d / f"{t:05d}.pkl", "wb") as f:
            pickle.dump(record, f)


class Runs:
    """User, system and wall seconds per video of each row, over the repeats."""

    def __init__(self) -> None:
        self.user: dict[str, list[float]] = {}
        self.sys: dict[str, list[float]] = {}
        self.wall: dict[str, list[float]] = {}

    def time(self, name: str, n: int, fn: Callable[[], object]) -> None:
        r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        fn()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        self.user.setdefault(name, []).append((r1.ru_utime - r0.ru_utime) / n)
        self.sys.setdefault(name, []).append((r1.ru_stime - r0.ru_stime) / n)
        self.wall.setdefault(name, []).append((time.perf_counter() - w0) / n)

    def cpu(self, name: str) -> list[float]:
        return [u + s for u, s in zip(self.user[name], self.sys[name])]

    def line(self, name: str) -> str:
        c, u, s, w = self.cpu(name), self.user[name], self.sys[name], self.wall[name]
        return (f"{name:40s} CPU {min(c) * 1e3:6.2f} / {statistics.median(c) * 1e3:6.2f} "
                f"(user {min(u) * 1e3:6.2f} / {statistics.median(u) * 1e3:6.2f}, "
                f"sys {min(s) * 1e3:5.2f} / {statistics.median(s) * 1e3:5.2f})  "
                f"wall {min(w) * 1e3:6.2f} / {statistics.median(w) * 1e3:6.2f}")


def main_rows(n: int, repeats: int, tmp: Path) -> dict[str, float]:
    """Time the rows interleaved; check the new arrays equal the first release's."""
    cfg = cg.make_config("savos2022")
    former = _layout_writer("gzip", 3, "frame")  # the layout write_shard had before issue 17's chunk encoder
    seeds = [cg.video_seed(0, "train", i) for i in range(n)]

    def render_new() -> None:
        for s in seeds:
            cg.generate_video(cfg, s)

    def render_old() -> None:
        for s in seeds:
            first_release_video(cfg, s)

    def ours(r: int) -> Callable[[], object]:
        return lambda: cg.generate_dataset(tmp / f"ours{r}", cfg, {"train": n}, seed=0, videos_per_shard=50,
                                           jobs=1, quiet=True)

    def ours_jobs2(r: int) -> Callable[[], object]:
        return lambda: cg.generate_dataset(tmp / f"jobs2-{r}", cfg, {"train": n}, seed=0,
                                           videos_per_shard=50, jobs=2, quiet=True)

    def shards(r: int, kind: str) -> Callable[[], None]:
        def run() -> None:
            (tmp / f"{kind}{r}").mkdir()
            for start in range(0, n, 50):
                path = tmp / f"{kind}{r}" / f"train-{start // 50:05d}.h5"
                names = [(i, f"{i:06d}") for i in range(start, min(start + 50, n))]
                if kind == "old-write":
                    write_shard(path, (first_release_as_video(cfg, seeds[i], name) for i, name in names))
                else:
                    videos = (cg.generate_video(cfg, seeds[i], name) for i, name in names)
                    write_layout(path, videos, former)
        return run

    def official(r: int) -> Callable[[], None]:
        def run() -> None:
            for i, s in enumerate(seeds):
                arrays, order = first_release_video(cfg, s)
                write_official_files(tmp / f"official{r}", i, arrays["frames"], arrays["amodal"], order)
        return run

    new = [digest(cg.generate_video(cfg, s)) for s in seeds]
    assert new == [digest(first_release_video(cfg, s)[0]) for s in seeds], "new renderer differs"
    print(f"bit-identical arrays (5 fields) on all {n} videos: new renderer == first release")

    runs = Runs()
    rows: list[tuple[str, Callable[[int], Callable[[], object]]]] = [
        ("render, new", lambda r: render_new),
        ("render, first release", lambda r: render_old),
        ("generate + write, --jobs 1", ours),
        ("official layout (first-release render)", official),
        ("generate + write, first-release render", lambda r: shards(r, "old-write")),
        ("generate + write, former layout", lambda r: shards(r, "former")),
    ]
    sizes: dict[str, tuple[int, int]] = {}
    for r in range(repeats):
        for j in range(len(rows)):
            name, make = rows[(j + r) % len(rows)]
            runs.time(name, n, make(r))
        runs.time("generate + write, --jobs 2", n, ours_jobs2(r))
        for kind in ("ours", "official", "jobs2-", "old-write", "former"):
            out = tmp / f"{kind}{r}"
            files = [p for p in out.rglob("*") if p.is_file() and p.name != "chewing_gum.json"]
            sizes[kind] = (sum(p.stat().st_size for p in files), len(files))
            shutil.rmtree(out)
    print("ms/video, min / median over the repeats; CPU = user + sys (getrusage of this process)")
    for name, _ in rows:
        print(runs.line(name))
    print(runs.line("generate + write, --jobs 2") + "  (CPU: parent process only)")
    print(f"bytes/video: amodalkit shard {sizes['ours'][0] / n / 1e3:.1f} kB (former layout "
          f"{sizes['former'][0] / n / 1e3:.1f} kB), official layout "
          f"{sizes['official'][0] / n / 1e3:.1f} kB ({sizes['official'][1] // n} files/video)")
    ours, official = "generate + write, --jobs 1", "official layout (first-release render)"
    render, old = "render, new", "render, first release"
    before, former = "generate + write, first-release render", "generate + write, former layout"
    print(f"CPU split (min): ours render {min(runs.cpu(render)) * 1e3:.2f} + shard write "
          f"{(min(runs.cpu(ours)) - min(runs.cpu(render))) * 1e3:.2f}; official render "
          f"{min(runs.cpu(old)) * 1e3:.2f} + PNG/pickle files "
          f"{(min(runs.cpu(official)) - min(runs.cpu(old))) * 1e3:.2f}")
    ratios = {
        "render, first release / new (CPU)": min(runs.cpu(old)) / min(runs.cpu(render)),
        "generate+write / official (CPU, min)": min(runs.cpu(ours)) / min(runs.cpu(official)),
        "generate+write / official (CPU, median)": (statistics.median(runs.cpu(ours))
                                                    / statistics.median(runs.cpu(official))),
        "generate+write / official (user CPU only, min)": min(runs.user[ours]) / min(runs.user[official]),
        "generate+write / official (wall, min)": min(runs.wall[ours]) / min(runs.wall[official]),
        "generate+write, first-release render / shipped (CPU)": min(runs.cpu(before)) / min(runs.cpu(ours)),
        "former layout / official (CPU, min)": min(runs.cpu(former)) / min(runs.cpu(official)),
        "former layout / shipped (CPU, min)": min(runs.cpu(former)) / min(runs.cpu(ours)),
    }
    for name, value in ratios.items():
        print(f"ratio {name}: {value:.2f}")
    print(f"target: generate+write CPU <= 1/3 of official ({1 / 3:.2f}) at <= 55 kB/video")
    return ratios


def profile_ours(n: int, tmp: Path) -> None:
    """cProfile of generate + write: where the CPU time goes."""
    cfg = cg.make_config("savos2022")
    prof = cProfile.Profile()
    prof.enable()
    cg.generate_dataset(tmp / "profiled", cfg, {"train": n}, seed=0, videos_per_shard=50, jobs=1, quiet=True)
    prof.disable()
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    cum = {fn: ct for (file, _, fn), (_, _, _, ct, _) in stats.stats.items()  # type: ignore[attr-defined]
           if "amodalkit" in file}
    print(f"\ncProfile, generate + write of {n} videos ({total / n * 1e3:.2f} ms/video under the profiler):")
    draw, shard = cum["generate_video"], cum["write_shard"]
    rows = [("draw: generate_video", draw)]
    parts = ("_sample_savos2022", "scene_layers", "_all_seen", "paint_scene")
    rows += [(f"  {name}", cum[name]) for name in parts]
    rows += [("shard write: write_shard minus the drawing it pulls", shard - draw),
             ("  _write_video (datasets, chunk encoding)", cum["_write_video"]),
             ("  validate_video", cum["validate_video"]),
             ("rest (shard checks, joblib, file open/rename)", total - shard)]
    for label, seconds in rows:
        print(f"  {label:52s} {seconds / n * 1e3:6.2f} ms/video  {seconds / total * 100:5.1f}%")
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(8)
    print("\n".join(line for line in buf.getvalue().splitlines()[-12:] if line.strip()))


def _layout_writer(compression: str | None, level: int | None, amodal_chunk: str = "object-frame",
                   frames_per_chunk: int | None = 1) -> Callable[[h5py.Group, Video], None]:
    """A video writer with the shard's datasets and attributes but another chunk layout / filter.

    amodal_chunk: "object-frame" (1, 1, H, W) as shipped, or "frame" (K, 1, H, W): all objects of
    one frame. frames_per_chunk None: contiguous datasets, no filter.
    """

    def write(group: h5py.Group, v: Video) -> None:
        h, w = v.size
        n = frames_per_chunk

        def put(name: str, data: np.ndarray, chunks: tuple[int, ...] | None) -> None:
            opts: dict = {}
            if chunks is not None and compression is not None:
                opts = {"compression": compression, "compression_opts": level, "shuffle": True}
            group.create_dataset(name, data=data, chunks=chunks, **opts)

        put("frames", v.frames, (n, h, w, 3) if n else None)
        put("visible_ids", v.visible_ids, (n, h, w) if n else None)
        objects = 1 if amodal_chunk == "object-frame" else v.num_objects
        put("amodal", v.amodal, (objects, n, h, w) if n else None)
        put("amodal_annotated", v.amodal_annotated, None)
        put("presence", v.presence, None)
        put("track_ids", v.track_ids, None)
        group.create_dataset("source_frame_ids", data=np.asarray([str(s) for s in v.source_frame_ids],
                                                                 dtype=object), dtype=h5py.string_dtype())
        put("flow", v.flow, (n, h, w, 2) if n else None)
        put("flow_backward", v.flow_backward, (n, h, w, 2) if n else None)
        group.attrs["provenance"] = json.dumps(v.provenance, sort_keys=True)
        group.attrs["flow_backend"] = v.flow_backend

    return write


def _read_back(path: Path, videos: list[Video]) -> tuple[float, float]:
    """CPU seconds per video to read the 5 per-frame fields whole, and frame by frame as the loaders do."""
    c0 = time.process_time()
    with h5py.File(path, "r") as f:
        for v in videos:
            g = f["videos"][v.name]
            assert all(np.array_equal(g[k][()], getattr(v, k)) for k in FIELDS), path
    c1 = time.process_time()
    with h5py.File(path, "r") as f:
        for v in videos:
            g = f["videos"][v.name]
            for t in range(v.num_frames - 1):  # each read reopens the dataset, like ShardReader.read_field
                for name in ("frames", "visible_ids", "flow", "flow_backward"):
                    g[name][t]
                g["amodal"][:, t]
    return (c1 - c0) / len(videos), (time.process_time() - c1) / len(videos)


def layouts(n: int, repeats: int, tmp: Path) -> None:
    """HDF5 write CPU time and size of the same videos under other layouts, interleaved; read back."""
    cfg = cg.make_config("savos2022")
    videos = [cg.generate_video(cfg, cg.video_seed(0, "train", i), f"{i:06d}") for i in range(n)]
    variants: dict[str, Callable[[h5py.Group, Video], None] | None] = {
        "write_shard (shipped: zlib-ng 1, exact flow zlib-ng 2, 4 frames/chunk)": None,
        "same via h5py: gzip-4 + shuffle": _layout_writer("gzip", 4),
        "gzip-3 + shuffle": _layout_writer("gzip", 3),
        "gzip-4 + shuffle, amodal (K,1,H,W)": _layout_writer("gzip", 4, "frame"),
        "gzip-3 + shuffle, amodal (K,1,H,W)": _layout_writer("gzip", 3, "frame"),
        "gzip-1 + shuffle, amodal (K,1,H,W)": _layout_writer("gzip", 1, "frame"),
        "lzf + shuffle, amodal (K,1,H,W)": _layout_writer("lzf", None, "frame"),
        "gzip-3 + shuffle, 2 frames/chunk": _layout_writer("gzip", 3, "frame", 2),
        "gzip-3 + shuffle, 4 frames/chunk": _layout_writer("gzip", 3, "frame", 4),
        "gzip-3 + shuffle, 8 frames/chunk": _layout_writer("gzip", 3, "frame", 8),
        "gzip-1 + shuffle, 8 frames/chunk": _layout_writer("gzip", 1, "frame", 8),
        "lzf + shuffle, 8 frames/chunk": _layout_writer("lzf", None, "frame", 8),
        "no filter, one frame per chunk": _layout_writer(None, None),
        "no filter, contiguous": _layout_writer(None, None, frames_per_chunk=None),
    }
    validate_cpu: list[float] = []
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    size: dict[str, int] = {}
    reads: dict[str, tuple[float, float]] = {}
    names = list(variants)
    for r in range(repeats):
        c0 = time.process_time()
        for v in videos:
            validate_video(v)
        validate_cpu.append((time.process_time() - c0) / n)
        for j in range(len(names)):
            name = names[(j + r) % len(names)]
            path = tmp / f"layout-{r}-{j}.h5"
            writer = variants[name]
            c0 = time.process_time()
            if writer is None:
                write_shard(path, videos)
            else:
                write_layout(path, videos, writer)
            cpu[name].append((time.process_time() - c0) / n)
            size[name] = path.stat().st_size
            if r == 0:
                reads[name] = _read_back(path, videos)
            path.unlink()
    print(f"\nHDF5 write (validate_video included) of the same {n} videos; CPU ms/video, min / median of "
          f"{repeats}; kB/video; read-back CPU ms/video (5 fields whole | frame by frame, first repeat):")
    print(f"  validate_video alone: {min(validate_cpu) * 1e3:.2f} ms/video")
    base = min(cpu[names[0]])
    for name in names:
        c, (whole, by_frame) = cpu[name], reads[name]
        print(f"  {name:40s} {min(c) * 1e3:5.2f} / {statistics.median(c) * 1e3:5.2f}  x{min(c) / base:.2f}  "
              f"{size[name] / n / 1e3:6.1f} kB  read {whole * 1e3:5.2f} | {by_frame * 1e3:6.2f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-layouts", action="store_true", help="skip the HDF5 layout comparison")
    ap.add_argument("--dir", default=None, help="where to write (default: the system temp folder)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU cores "
          f"({len(os.sched_getaffinity(0))} usable); "
          f"cv2 threads {cv2.getNumThreads()}, Python threads {threading.active_count()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; numpy {np.__version__}, "
          f"h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}), opencv {cv2.__version__}")
    print(f"{args.videos} savos2022 videos, {args.repeats} repeats, interleaved\n")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        print(f"writing under {tmp}")
        main_rows(args.videos, args.repeats, Path(tmp))
        profile_ours(args.videos, Path(tmp))
        if not args.no_layouts:
            layouts(args.videos, args.repeats, Path(tmp))


if __name__ == "__main__":
    main()
