"""Chewing Gum: synthetic videos of random polygons occluding each other (SaVos §4).

Two presets:

* ``savos2022`` reproduces the release geometry of the paper's official generator: a
  50x56 (H x W) canvas, 2 objects of 7-11 vertices picked from the 44 pixels of a radius-8
  circle, one object static at the centre and one travelling a square path at 2 px/frame,
  40 frames, a random depth order, and the 9x9 square of one random colour painted over a
  random quadrant of the bottom object's 16x16 box. That square is *texture* of the bottom
  object (it moves with it), not an occluder: visible masks are amodal masks minus the
  objects drawn above (SPEC section 11).
* ``default``: richer videos: 2-4 objects of 7-12 nodes on circles of radius 8-14, every
  object moving at an integer velocity and bouncing off the canvas edges, 64x96 canvas,
  24 frames.

Both guarantee that every pixel of every object is visible in at least one frame of its
video (a sampled video that breaks it is redrawn from the same per-video random stream).
The exact forward and backward flow of the drawn motion is stored with every video.

Frames and flow are lookups of one uint8 label map (a palette; per-frame motion tables) and the
"every pixel seen" check runs in template coordinates; a seed gives the first release's arrays
to the bit (the tests pin them).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, replace
from functools import partial
from itertools import pairwise
from pathlib import Path

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from amodalkit.errors import AmodalkitError
from amodalkit.execution import run_tasks
from amodalkit.io.atomic import claim_output_dir, remove_stale_temps
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import write_shard
from amodalkit.io.shards import Video
from amodalkit.ops.masks import circle_polygon, never_visible_pixels, rasterize_polygon

SPLITS = ("train", "val", "test")
SPLIT_KEYS = {name: i for i, name in enumerate(SPLITS)}
MAX_ATTEMPTS = 1000
TEXTURE_SIDE = 9  # the official generator's square painted on the bottom object


MAX_FRAMES = 10_000
MAX_SIDE = 2048
MAX_VIDEO_PIXELS = 1 << 26
MAX_SEED = 2**128 - 1
MAX_VIDEOS = 10_000_000


@dataclass(frozen=True)
class ChewingGumConfig:
    """Everything that determines the generated videos (besides the seed)."""

    preset: str = "default"
    frames: int = 24
    min_objects: int = 2
    max_objects: int = 4
    height: int = 64
    width: int = 96
    min_radius: int = 8
    max_radius: int = 14
    min_nodes: int = 7
    max_nodes: int = 12
    max_speed: int = 2
    texture_square: bool = False

    def validate(self) -> None:
        """Raise AmodalkitError on values the generator cannot honour."""
        if self.preset not in PRESETS:
            raise AmodalkitError(f"unknown preset {self.preset!r}; choose from {sorted(PRESETS)}")
        checks = [
            (2 <= self.frames <= MAX_FRAMES, f"--frames must be between 2 and {MAX_FRAMES}"),
            (self.height <= MAX_SIDE and self.width <= MAX_SIDE,
             f"--height/--width must be at most {MAX_SIDE}"),
            (self.frames * self.height * self.width <= MAX_VIDEO_PIXELS,
             f"--frames x --height x --width must be at most {MAX_VIDEO_PIXELS} pixels per video"),
            (self.max_radius <= MAX_SIDE and self.max_nodes <= 1000 and self.max_speed <= MAX_SIDE,
             "radius, node count and speed are out of range"),
            (1 <= self.min_objects <= self.max_objects, "--objects must be at least 1"),
            (self.max_objects <= 255, "--objects must be at most 255"),
            (3 <= self.min_nodes <= self.max_nodes, "polygons need at least 3 nodes"),
            (1 <= self.min_radius <= self.max_radius, "radius must be positive"),
            (self.height >= 2 * self.max_radius + 3 and self.width >= 2 * self.max_radius + 3,
             f"--height/--width must be at least {2 * self.max_radius + 3} for radius {self.max_radius}"),
        ]
        if self.preset == "savos2022":
            checks.append(((self.min_objects, self.max_objects) == (2, 2),
                           "preset savos2022 has exactly 2 objects"))
            checks.append((self.height >= 50 and self.width >= 56,
                           "preset savos2022 needs a canvas of at least 50x56"))
        for ok, msg in checks:
            if not ok:
                raise AmodalkitError(msg)


PRESETS: dict[str, ChewingGumConfig] = {
    "default": ChewingGumConfig(),
    "savos2022": ChewingGumConfig(
        preset="savos2022", frames=40, min_objects=2, max_objects=2, height=50, width=56,
        min_radius=8, max_radius=8, min_nodes=7, max_nodes=11, max_speed=2, texture_square=True,
    ),
}
PRESET_SPLITS = {"default": (1000, 100, 200), "savos2022": (10000, 500, 1000)}


def make_config(preset: str = "default", **overrides: int | None) -> ChewingGumConfig:
    """A preset with CLI overrides applied (None means keep the preset's value)."""
    if preset not in PRESETS:
        raise AmodalkitError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[preset]
    changes = {k: v for k, v in overrides.items() if v is not None}
    if "objects" in changes:
        n = changes.pop("objects")
        changes["min_objects"] = changes["max_objects"] = n
    cfg = replace(cfg, **changes)
    cfg.validate()
    return cfg


def _circle_pixels(radius: int) -> np.ndarray:
    """The pixels cv2 draws for a circle of `radius` around (0, 0), ordered by angle: (N, 2) xy.

    For radius 8 these are the 44 vertex candidates of the official generator.
    """
    size = 2 * radius + 1
    canvas = np.zeros((size, size), np.uint8)
    cv2.circle(canvas, (radius, radius), radius, 1, 1)
    ys, xs = np.nonzero(canvas)
    pts = np.stack([xs - radius, ys - radius], axis=1)
    order = np.argsort(np.arctan2(pts[:, 1], pts[:, 0]), kind="stable")
    return pts[order]


def _square_path(start: tuple[int, int], n: int, centre: tuple[int, int], half: int, step: int) -> np.ndarray:
    """Positions of the official generator's mover: a square of side 2*half around `centre`."""
    cx, cy = centre
    pos = np.array(start, np.int64)
    d = np.array([-step, 0], np.int64)
    out = np.zeros((n, 2), np.int64)
    for t in range(n):
        out[t] = pos
        if not cx - half <= pos[0] + d[0] <= cx + half:
            d = np.array([0, step if cy > pos[1] else -step])
        if not cy - half <= pos[1] + d[1] <= cy + half:
            d = np.array([step if cx > pos[0] else -step, 0])
        pos = pos + d
    return out


def _bounce_path(rng: np.random.Generator, n: int, radius: int, start: np.ndarray,
                 size: tuple[int, int], max_speed: int) -> np.ndarray:
    """Integer positions moving at a constant non-zero velocity, reflected at the canvas edges."""
    h, w = size
    while True:
        vel = rng.integers(-max_speed, max_speed + 1, size=2)
        if vel.any():
            break
    lo = np.array([radius, radius])
    hi = np.array([w - 1 - radius, h - 1 - radius])
    pos = start.astype(np.int64).copy()
    out = np.zeros((n, 2), np.int64)
    for t in range(n):
        out[t] = pos
        nxt = pos + vel
        flip = (nxt < lo) | (nxt > hi)
        vel = np.where(flip, -vel, vel)
        pos = np.clip(pos + vel, lo, hi)
    return out


@dataclass
class Scene:
    templates: list[np.ndarray]
    radii: list[int]
    paths: np.ndarray  # (K, T, 2) object centres (x, y)
    colours: np.ndarray  # (K, 3)
    background: np.ndarray  # (3,)
    order: np.ndarray  # depth order, bottom first
    texture: tuple[np.ndarray, np.ndarray] | None  # (offset xy from bottom centre, colour)


def _sample_savos2022(rng: np.random.Generator, cfg: ChewingGumConfig) -> Scene:
    pool = _circle_pixels(8)
    shift = rng.integers(0, 2, size=2) * 8
    background = rng.integers(0, 128, size=3)
    texture_colour = rng.integers(0, 256, size=3)
    templates, colours = [], []
    for _ in range(2):
        n = int(rng.integers(cfg.min_nodes, cfg.max_nodes + 1))
        idx = np.sort(rng.choice(len(pool), size=n, replace=False))
        templates.append(rasterize_polygon(pool[idx] + 8, (17, 17)))
        colours.append(rng.integers(0, 256, size=3))
    order = rng.permutation(2)
    cx, cy = cfg.width // 2, cfg.height // 2
    start = (int(rng.choice([cx - 8, cx + 8])), int(rng.choice([cy - 8, cy + 8])))
    static = np.tile(np.array([cx, cy]), (cfg.frames, 1))
    mover = _square_path(start, cfg.frames, (cx, cy), 8, cfg.max_speed)
    return Scene(templates, [8, 8], np.stack([static, mover]), np.array(colours), background, order,
                  (shift - 8, texture_colour))


def _sample_default(rng: np.random.Generator, cfg: ChewingGumConfig) -> Scene:
    k = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
    size = (cfg.height, cfg.width)
    background = rng.integers(0, 128, size=3)
    templates, radii, colours, paths = [], [], [], []
    centre = np.array([cfg.width // 2, cfg.height // 2])
    for _ in range(k):
        r = int(rng.integers(cfg.min_radius, cfg.max_radius + 1))
        n = int(rng.integers(cfg.min_nodes, cfg.max_nodes + 1))
        verts = np.rint(circle_polygon(rng, n, r)).astype(np.int64) + r
        templates.append(rasterize_polygon(verts, (2 * r + 1, 2 * r + 1)))
        radii.append(r)
        colours.append(rng.integers(0, 256, size=3))
        spread = np.array([min(2 * r, cfg.width // 2 - r - 1), min(2 * r, cfg.height // 2 - r - 1)])
        start = centre + rng.integers(-spread, spread + 1)
        paths.append(_bounce_path(rng, cfg.frames, r, start, size, cfg.max_speed))
    return Scene(templates, radii, np.stack(paths), np.array(colours), background, rng.permutation(k), None)


def _place(canvas: np.ndarray, template: np.ndarray, centre: np.ndarray, radius: int) -> None:
    """Draw a (2r+1, 2r+1) template centred at (x, y) into an (H, W) canvas, clipped at its edges."""
    h, w = canvas.shape
    x0, y0 = int(centre[0]) - radius, int(centre[1]) - radius
    ys, xs = max(0, -y0), max(0, -x0)
    ye, xe = min(template.shape[0], h - y0), min(template.shape[1], w - x0)
    if ye > ys and xe > xs:
        canvas[y0 + ys:y0 + ye, x0 + xs:x0 + xe] = template[ys:ye, xs:xe]


def scene_layers(scene: Scene, cfg: ChewingGumConfig) -> tuple[np.ndarray, np.ndarray, bool]:
    """Amodal masks (K, T, H, W) bool, visible labels (T, H, W) uint8 (k + 1: object k), whether unclipped."""
    k, t = scene.paths.shape[:2]
    h, w = cfg.height, cfg.width
    amodal = np.zeros((k, t, h, w), bool)
    frame_index = np.arange(t)
    whole = True
    for i, (template, radius) in enumerate(zip(scene.templates, scene.radii)):
        corner = scene.paths[i] - radius  # (T, 2) top-left (x, y) of the template
        if (corner >= 0).all() and (corner + template.shape[::-1] <= (w, h)).all():
            windows = sliding_window_view(amodal[i], template.shape, axis=(1, 2), writeable=True)
            windows[frame_index, corner[:, 1], corner[:, 0]] = template  # one window per frame
        else:
            whole = False
            for f in range(t):
                _place(amodal[i, f], template, scene.paths[i, f], radius)
    labels = np.zeros((t, h, w), np.uint8)  # at most 255 objects
    for i in scene.order:
        np.copyto(labels, int(i) + 1, where=amodal[i])
    return amodal, labels, whole


def _all_seen(scene: Scene, amodal: np.ndarray, labels: np.ndarray, whole: bool) -> bool:
    """Whether every object pixel is visible in some frame; in template coordinates unless clipped."""
    k, t = scene.paths.shape[:2]
    if not whole:
        return all(never_visible_pixels(amodal[i], labels == i + 1)[0] == 0 for i in range(k))
    frame_index = np.arange(t)
    for i, (template, radius) in enumerate(zip(scene.templates, scene.radii)):
        windows = sliding_window_view(labels, template.shape, axis=(1, 2))  # (T, H', W', s, s)
        corner = scene.paths[i] - radius  # (T, 2) top-left corners (x, y)
        seen = (windows[frame_index, corner[:, 1], corner[:, 0]] == i + 1).any(axis=0)
        if (template & ~seen).any():
            return False
    return True


def paint_scene(scene: Scene, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames (T, H, W, 3) uint8, exact flow forward and backward (T-1, H, W, 2) float16: label lookups."""
    k, t = scene.paths.shape[:2]
    h, w = labels.shape[1:]
    palette = np.zeros((256, 4), np.uint8)  # RGBA rows, looked up as one 32-bit word per pixel
    palette[0, :3], palette[1:k + 1, :3] = scene.background, scene.colours
    paint = owner = labels  # palette row of each pixel; whose motion each pixel shows
    if scene.texture is not None:  # savos2022 only (2 objects): palette row k + 1 is the square's colour
        offset, colour = scene.texture
        bottom = int(scene.order[0])
        corner = scene.paths[bottom] + offset  # (T, 2) top-left (x, y) of the square on the bottom object
        dy, dx = np.arange(h) - corner[:, 1:], np.arange(w) - corner[:, :1]  # (T, H), (T, W) into the square
        square = ((dy >= 0) & (dy < TEXTURE_SIDE))[:, :, None] & ((dx >= 0) & (dx < TEXTURE_SIDE))[:, None, :]
        free = square & (labels == 0)  # the square shows where no object above the bottom one is
        palette[k + 1, :3] = colour
        paint = np.where(free | (square & (labels == bottom + 1)), np.uint8(k + 1), labels)
        owner = np.where(free, np.uint8(bottom + 1), labels)
    rgba = cv2.LUT(paint.reshape(t * h, w), palette.view(np.int32).reshape(1, 256))
    frames = cv2.cvtColor(rgba.view(np.uint8).reshape(t * h, w, 4), cv2.COLOR_RGBA2RGB).reshape(t, h, w, 3)
    table = np.zeros((t - 1, k + 1, 2), np.int64)  # row 0: the background's zero motion
    table[:, 1:] = np.diff(scene.paths, axis=1).transpose(1, 0, 2)  # object k from frame t to t+1
    # runs of frames in which no object changes its motion share one lookup
    bounds = [0, *(np.flatnonzero((table[1:] != table[:-1]).any(axis=(1, 2))) + 1), t - 1]
    flows = []
    for tab, src in ((table, owner[:-1]), (-table, owner[1:])):
        words = np.zeros((t - 1, 1, 256), np.int32)  # the (u, v) float16 pair of each label as one word
        words[:, 0, :k + 1] = tab.astype(np.float16).view(np.int32)[..., 0]
        out = np.empty((t - 1, h, w), np.int32)
        for a, b in pairwise(bounds):
            cv2.LUT(src[a:b].reshape(-1, w), words[a], dst=out[a:b].reshape(-1, w))
        flows.append(out.view(np.float16).reshape(t - 1, h, w, 2))
    return frames, flows[0], flows[1]


def generate_video(cfg: ChewingGumConfig, seed: np.random.SeedSequence, name: str = "00000") -> Video:
    """Draw one video from its own random stream, redrawing until every pixel is seen once."""
    rng = np.random.default_rng(seed)
    sample = _sample_savos2022 if cfg.preset == "savos2022" else _sample_default
    attempt = 0
    while True:
        attempt += 1
        scene = sample(rng, cfg)
        amodal, labels, whole = scene_layers(scene, cfg)
        if _all_seen(scene, amodal, labels, whole):
            break
        if attempt >= MAX_ATTEMPTS:
            raise AmodalkitError(f"could not draw a video whose objects are all fully seen in "
                                 f"{MAX_ATTEMPTS} attempts; use fewer objects or a larger canvas")
    provenance = {"generator": "chewing_gum", "entropy": int(seed.entropy), "spawn_key": list(seed.spawn_key),
                  "attempts": attempt}
    return scene_video(scene, amodal, labels, name, provenance)


def scene_video(scene: Scene, amodal: np.ndarray, labels: np.ndarray, name: str, provenance: dict) -> Video:
    """The Video of a drawn scene: painted frames, its layers and the exact flow of its motion."""
    frames, fwd, bwd = paint_scene(scene, labels)
    k, t = amodal.shape[:2]
    return Video(
        name=name,
        frames=frames,
        visible_ids=labels.astype(np.uint16),
        amodal=amodal,
        amodal_annotated=np.ones((k, t), bool),
        presence=np.ones((k, t), bool),
        track_ids=np.arange(1, k + 1, dtype=np.int64),
        source_frame_ids=np.array([f"{name}/{f:05d}" for f in range(t)], dtype=object),
        flow=fwd,
        flow_backward=bwd,
        provenance={**provenance, "depth_order": [int(i) for i in scene.order]},
        flow_backend="exact",
    )


def video_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The random stream of one video: depends on (seed, split, index) only, not on --jobs."""
    return np.random.SeedSequence(entropy=seed, spawn_key=(SPLIT_KEYS[split], index))


def shard_path(out_dir: Path, split: str, index: int) -> Path:
    """Where shard `index` of `split` lives."""
    return out_dir / f"{split}-{index:05d}.h5"


def write_chewing_gum_shard(path: Path, cfg: ChewingGumConfig, seed: int, split: str,
                            start: int, stop: int) -> Path:
    """Generate videos [start, stop) of a split into one shard (atomic)."""
    videos = (generate_video(cfg, video_seed(seed, split, i), f"{i:06d}") for i in range(start, stop))
    provenance = {"generator": "chewing_gum", "config": asdict(cfg), "seed": seed, "split": split,
                  "videos": [start, stop]}
    return write_shard(path, videos, provenance)


def _shard_is_complete(path: Path, expected: int) -> bool:
    if not path.exists():
        return False
    with contextlib.suppress(AmodalkitError):
        with ShardReader(path) as r:
            return len(r) == expected
    return False


def generate_dataset(out_dir: str | Path, cfg: ChewingGumConfig, splits: dict[str, int], seed: int = 0,
                     videos_per_shard: int = 100, jobs: int = 1, quiet: bool = False,
                     scheduler: str | None = None) -> list[Path]:
    """Write every shard of every split to `out_dir` (local processes or Dask), skipping done ones."""
    if videos_per_shard < 1:
        raise AmodalkitError("--videos-per-shard must be at least 1")
    if any(n < 0 for n in splits.values()):
        raise AmodalkitError("split sizes must not be negative")
    if any(n > MAX_VIDEOS for n in splits.values()) or videos_per_shard > MAX_VIDEOS or not 1 <= jobs <= 1024:
        raise AmodalkitError(f"split sizes and --videos-per-shard must be at most {MAX_VIDEOS}, "
                             "--jobs from 1 to 1024")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise AmodalkitError(f"--seed must be an integer from 0 to 2**128 - 1, got {seed!r}")
    cfg.validate()
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise AmodalkitError("output path exists and is not a folder", out_dir)
    record = {"generator": "chewing_gum", "config": asdict(cfg), "seed": seed, "splits": dict(splits),
              "videos_per_shard": videos_per_shard}
    claim_output_dir(out_dir / "chewing_gum.json", record,
                     "folder holds a dataset generated with other settings; use a new output folder")
    remove_stale_temps(out_dir)
    tasks = []
    for split in SPLITS:
        n = splits.get(split, 0)
        for s, start in enumerate(range(0, n, videos_per_shard)):
            stop = min(start + videos_per_shard, n)
            path = shard_path(out_dir, split, s)
            if not _shard_is_complete(path, stop - start):
                tasks.append((path, split, start, stop))
    all_paths = [shard_path(out_dir, sp, s) for sp in SPLITS
                 for s in range(-(-splits.get(sp, 0) // videos_per_shard))]
    run_tasks(partial(_write_task, cfg, seed), tasks, jobs, scheduler, quiet, unit="shard")
    return all_paths


def _write_task(cfg: ChewingGumConfig, seed: int, task: tuple[Path, str, int, int]) -> Path:
    """One shard as a unit of work: (path, split, start, stop)."""
    path, split, start, stop = task
    return write_chewing_gum_shard(path, cfg, seed, split, start, stop)
