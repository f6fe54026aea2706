"""``import-chewing-gum``: the official SaVos generator's output (``utils/gen_chewgum.py``) into shards.

The official generator writes ``NAME/{train,val,test}/VVVVV/FFFFF.png`` and, per frame, a
``FFFFF.pkl`` dict with ``order`` (drawing order, bottom first), ``shape`` (each object's
polygon vertices around the canvas centre (28, 25)), ``color``, ``st`` (each object's 16x16
box corner, x y), ``end``, ``img_obj`` and ``full_mask`` (K, 50, 56). From these the importer
rebuilds the scene this package's generator draws (:class:`~amodalkit.datasets.chewing_gum.Scene`):
the templates from ``shape``, the motion from ``st``, the background colour from the frames,
and the texture square's quadrant (the generator does not store it) by trying the four and
keeping the one whose drawing equals the PNG frames to the last pixel. Visible masks follow
from the order (the top object whole, the bottom one minus the top), the exact flow from the
``st`` differences, both as our generator computes them, so an imported video scores
exactly what the same video drawn by ``gen-chewing-gum`` scores. A video whose frames no
quadrant reproduces, or whose ``full_mask`` disagrees with its polygons, is refused by name.

The ``.pkl`` files are read with an unpickler that accepts only numpy arrays and plain
containers, so a crafted file cannot run code.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
from tqdm import tqdm

from amodalkit.datasets.chewing_gum import (
    TEXTURE_SIDE,
    Scene,
    make_config,
    paint_scene,
    scene_layers,
    scene_video,
)
from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import remove_stale_temps
from amodalkit.io.images import natural_key, read_rgb
from amodalkit.io.safe_pickle import load_arrays_pickle
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import write_shard
from amodalkit.io.shards import Video
from amodalkit.ops.masks import rasterize_polygon

OFFICIAL_CENTRE = np.array([28, 25])  # (x, y) the official polygons are drawn around
BOX = 16  # the official objects' box side; templates here are BOX + 1 with the centre at 8
SPLITS = ("train", "val", "test")
PKL_KEYS = ("order", "shape", "color", "st", "full_mask")


def read_frame_pkl(path: Path) -> dict:
    """One official per-frame annotation, checked for the keys the importer uses."""
    data = load_arrays_pickle(path, "official Chewing Gum annotation")
    if not isinstance(data, dict) or any(k not in data for k in PKL_KEYS):
        raise AmodalkitError(f"official Chewing Gum annotation lacks {', '.join(PKL_KEYS)}", path)
    return data


def video_folders(src: Path, split: str) -> list[Path]:
    """The numbered video folders of one split, in order."""
    folder = src / split
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"\d+", p.name)),
                  key=lambda p: int(p.name))


def _frame_files(folder: Path) -> list[tuple[Path, Path]]:
    pngs = sorted(folder.glob("*.png"), key=natural_key)
    if len(pngs) < 2:
        raise AmodalkitError("an official Chewing Gum video needs at least two FFFFF.png frames", folder)
    pairs = [(p, p.with_suffix(".pkl")) for p in pngs]
    for png, pkl in pairs:
        if not pkl.is_file():
            raise AmodalkitError(f"frame {png.name} has no annotation {pkl.name} beside it", folder)
    return pairs


def _scene_candidates(notes: list[dict], frames: np.ndarray, folder: Path) -> list[Scene]:
    """The scenes the annotation allows: one per texture quadrant, all else fixed by the notes."""
    first = notes[0]
    order = np.asarray(first["order"], np.int64)
    k = len(order)
    templates = []
    for verts in first["shape"]:
        local = np.asarray(verts, np.int64) - OFFICIAL_CENTRE + BOX // 2
        templates.append(rasterize_polygon(local, (BOX + 1, BOX + 1)))
    corners = np.stack([np.asarray(n["st"], np.int64).reshape(k, 2) for n in notes], axis=1)  # (K, T, 2)
    paths = corners + BOX // 2
    full = np.stack([np.asarray(n["full_mask"]).astype(bool) for n in notes], axis=1)  # (K, T, H, W)
    if full.shape[0] != k or full.shape[2:] != frames.shape[1:3]:
        raise AmodalkitError(f"full_mask is {full.shape[2:]} for {full.shape[0]} objects, frames are "
                             f"{frames.shape[1:3]} with {k} objects", folder)
    outside = ~full[:, 0].any(axis=0)
    if not outside.any():
        raise AmodalkitError("no background pixel in the first frame to read the canvas colour from", folder)
    colours_seen, counts = np.unique(frames[0][outside], axis=0, return_counts=True)
    background = colours_seen[np.argmax(counts)].astype(np.int64)
    colours = np.array([np.asarray(c, np.int64).reshape(3) for c in first["color"]])
    bottom = int(order[0])
    scenes = []
    for shift in ((0, 0), (8, 0), (0, 8), (8, 8)):
        x, y = corners[bottom, 0] + shift
        square = frames[0][y:y + TEXTURE_SIDE, x:x + TEXTURE_SIDE]
        top_cover = full[order[1:], 0, y:y + TEXTURE_SIDE, x:x + TEXTURE_SIDE].any(axis=0)
        if square.size == 0 or top_cover.all():
            continue
        colour = square[~top_cover][0].astype(np.int64)
        scenes.append(Scene(templates, [BOX // 2] * k, paths, colours, background, order,
                            (np.array(shift) - BOX // 2, colour)))
    return scenes


def read_official_video(folder: str | Path, name: str | None = None) -> Video:
    """One official video folder (FFFFF.png + FFFFF.pkl) as a Video with exact flow."""
    folder = Path(folder)
    pairs = _frame_files(folder)
    frames = np.stack([read_rgb(png) for png, _ in pairs])
    notes = [read_frame_pkl(pkl) for _, pkl in pairs]
    cfg = make_config("savos2022")
    if frames.shape[1:3] != (cfg.height, cfg.width):
        raise AmodalkitError(f"frames are {frames.shape[2]}x{frames.shape[1]}, the official generator "
                             f"draws {cfg.width}x{cfg.height}", folder)
    full = np.stack([np.asarray(n["full_mask"]).astype(bool) for n in notes], axis=1)
    for scene in _scene_candidates(notes, frames, folder):
        amodal, labels, _ = scene_layers(scene, cfg)
        if not np.array_equal(amodal, full):
            raise AmodalkitError("full_mask differs from the polygons of 'shape' placed at 'st'", folder)
        if np.array_equal(paint_scene(scene, labels)[0], frames):
            provenance = {"dataset": "chewing_gum", "imported_from": "official generator",
                          "folder": folder.name, "texture_offset": [int(v) for v in scene.texture[0]]}
            return scene_video(scene, amodal, labels, name or folder.name, provenance)
    raise AmodalkitError("the frames are not the official generator's drawing of its annotations "
                         "(no texture quadrant reproduces them)", folder)


def _complete(path: Path, names: list[str]) -> bool:
    if not path.is_file():
        return False
    with contextlib.suppress(AmodalkitError, OSError):
        with ShardReader(path) as r:
            return r.provenance.get("videos") == names
    return False


def import_chewing_gum(src: str | Path, out: str | Path, videos_per_shard: int = 100,
                       quiet: bool = False) -> list[Path]:
    """Every split of an official Chewing Gum dataset folder as shards ``OUT/{split}-{index:05d}.h5``."""
    src, out = Path(src), Path(out)
    if videos_per_shard < 1:
        raise AmodalkitError("--videos-per-shard must be at least 1")
    if not src.is_dir():
        raise AmodalkitError("no such folder (the official generator writes data/datasets/NAME)", src)
    splits = {s: video_folders(src, s) for s in SPLITS}
    if not any(splits.values()):
        raise AmodalkitError("no official Chewing Gum videos: expected train/, val/ or test/ with "
                             "numbered video folders of FFFFF.png + FFFFF.pkl", src)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    paths = []
    total = sum(len(v) for v in splits.values())
    with tqdm(total=total, desc="import-chewing-gum", unit="video", disable=quiet) as bar:
        for split, folders in splits.items():
            for i in range(0, len(folders), videos_per_shard):
                group = folders[i:i + videos_per_shard]
                path = out / f"{split}-{i // videos_per_shard:05d}.h5"
                names = [f.name for f in group]
                paths.append(path)
                if _complete(path, names):
                    bar.update(len(group))
                    continue
                provenance = {"writer": "amodalkit import-chewing-gum", "dataset": "chewing_gum",
                              "source": str(src.resolve()), "split": split, "videos": names}

                def videos(group: list[Path] = group):
                    for folder in group:
                        yield read_official_video(folder)
                        bar.update(1)

                write_shard(path, videos(), provenance)
    return paths
