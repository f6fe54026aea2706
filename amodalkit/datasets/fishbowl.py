"""FISHBOWL (Tangemann et al., "Unsupervised Object Learning via Common Fate") read into shards.

The release is written by the generation code (amazon-science/common-fate-fishbowl:
``postprocess_recording.py``, ``postprocess_dataset.py``). Each sample is a folder::

    SRC/
      00000/
        video.mp4          480x320, 128 frames (ffmpeg, yuv420p)
        objects.json       [{"id": fish index, "type_id", "type_name", "speed", "scale",
                             "masks": [COCO RLE per frame, {"size": [320, 480], "counts": str}]}]
                           -- the *visible* masks of the fishes in the full scene; fishes with
                           at most 100 visible pixels over the video are left out
        recording.json     the aquarium configuration that was rendered
        background/        the scene rendered without fishes
        object000/         the scene rendered with a single fish (renderOnlySingleFish); its
          video.mp4        objects.json holds that fish alone, so its masks are the fish's
          objects.json     *amodal* masks. NNN is the fish's position in ../objects.json.
        object001/ ...

The SaVos authors' copy (their FISHBOWL test download, read by their ``Data_Preprocess``
notebook) keeps the single-fish renders beside the samples and the frames as images::

    test_data/
      test/00000/objects.json (+ video.mp4)
      test_objects/00000_object<ID>/objects.json      ID = the fish's "id"
      test_frames/00000/*.png                         the 128 frames, sorted by name

Both are read: SRC may be the folder holding the sample folders (``final/``,
``test_data/test``) or a folder with exactly one such split folder (``test_data``). Amodal
masks are matched to visible ones by the fish ``id``. A fish without a single-fish render
has no amodal ground truth (``amodal_annotated`` false). Each object's occlusion rate per
frame (1 - |visible & amodal| / |amodal|) is stored in the video provenance
(``occlusion_rate``, null where the amodal mask is empty), and
:func:`occlusion_range_filter` keeps the object-frames in an open range, as the official
evaluation does with (0.1, 0.7).

``--official-filters``, ``--subtest test_subtest.csv`` and ``--savos-pkl test_data.pkl``
annotate only the SaVos paper's test object set (:mod:`amodalkit.datasets.fishbowl_official`
says how each official rule maps to ``amodal_annotated``; fishes that fail are never scored
but stay in the video, so their visible pixels still occlude the others).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from amodalkit.datasets.fishbowl_official import OfficialSelection, make_selection
from amodalkit.errors import AmodalkitError
from amodalkit.execution import run_tasks
from amodalkit.io.atomic import claim_output_dir, remove_stale_temps
from amodalkit.io.images import check_size, imread
from amodalkit.io.paths import resolve_inside
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import write_shard
from amodalkit.io.shards import Video
from amodalkit.ops.masks import occlusion_rates, rle_decode

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
RECORD_FILE = "fishbowl.json"
OFFICIAL_OCCLUSION_RANGE = (0.1, 0.7)
SIDE_FOLDERS = re.compile(r"_(objects|frames|flow\w*)$")
MAX_ID = 2**63 - 1
MAX_TYPE_ID = 2**31 - 1


@dataclass
class FishbowlSample:
    """Where one sample's frames, visible masks and single-fish renders are."""

    name: str
    folder: Path
    video: Path | None
    frames_dir: Path | None
    renders: list[Path] = field(default_factory=list)

    @property
    def objects_json(self) -> Path:
        return self.folder / "objects.json"


def _natural(p: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def _sample_dirs(folder: Path) -> list[Path]:
    found = (p for p in folder.iterdir() if p.is_dir() and (p / "objects.json").is_file())
    return sorted(found, key=_natural)


def find_samples(src: str | Path) -> list[FishbowlSample]:
    """Locate the samples of a FISHBOWL folder in either layout of the module docstring."""
    src = Path(src)
    if not src.is_dir():
        raise AmodalkitError("FISHBOWL folder does not exist (expected SRC/00000/objects.json + "
                             "video.mp4)", src)
    dirs = _sample_dirs(src)
    if not dirs:
        splits = [p for p in sorted(src.iterdir())
                  if p.is_dir() and not SIDE_FOLDERS.search(p.name) and _sample_dirs(p)]
        if len(splits) != 1:
            found = ", ".join(p.name for p in splits) or "none"
            raise AmodalkitError(f"no FISHBOWL sample folders (NNNNN/objects.json) here; split folders "
                                 f"found: {found} (pass one of them)", src)
        src = splits[0]
        dirs = _sample_dirs(src)
    objects_root = src.parent / f"{src.name}_objects"
    frames_root = src.parent / f"{src.name}_frames"
    samples = []
    for d in dirs:
        renders = sorted((p / "objects.json" for p in d.glob("object*") if (p / "objects.json").is_file()),
                         key=lambda p: _natural(p.parent))
        if objects_root.is_dir():
            renders += sorted((p / "objects.json" for p in objects_root.glob(f"{d.name}_object*")
                               if (p / "objects.json").is_file()), key=lambda p: _natural(p.parent))
        video = d / "video.mp4"
        frames_dir = frames_root / d.name
        for path, root in [(d, src), (d / "objects.json", src), (video, src), (frames_dir, frames_root),
                           *((r, r.parents[1]) for r in renders)]:
            resolve_inside(root, path.relative_to(root).as_posix(), root, "FISHBOWL path")
        samples.append(FishbowlSample(d.name, d, video if video.is_file() else None,
                                      frames_dir if frames_dir.is_dir() else None, renders))
    return samples


def read_video_frames(path: Path) -> np.ndarray:
    """Decode an mp4 with OpenCV: (T, H, W, 3) uint8 RGB."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        check_size(int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) or 1, int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) or 1,
                   "video frame", path)
        while True:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise AmodalkitError("cannot decode any frame of this video (OpenCV without ffmpeg?)", path)
    return np.stack(frames)


def read_frame_images(folder: Path) -> np.ndarray:
    """Frames stored as images in a folder, in natural name order: (T, H, W, 3) uint8 RGB."""
    paths = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural)
    if not paths:
        raise AmodalkitError("frame folder holds no images", folder)
    frames = []
    for p in paths:
        img = imread(p, cv2.IMREAD_COLOR)
        if img is None:
            raise AmodalkitError("not a readable image", p)
        frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    if any(f.shape != frames[0].shape for f in frames):
        raise AmodalkitError("frames differ in size", folder)
    return np.stack(frames)


def _load_objects(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AmodalkitError(f"not a readable objects.json ({exc})", path) from exc
    if not isinstance(data, list):
        raise AmodalkitError("objects.json must hold a list of objects", path)
    for i, obj in enumerate(data):
        if not isinstance(obj, dict) or "id" not in obj or not isinstance(obj.get("masks"), list):
            raise AmodalkitError(f"object {i} needs an 'id' and a 'masks' list (one COCO RLE per frame)",
                                 path)
        if not _is_int(obj["id"]) or not 0 <= obj["id"] <= MAX_ID:
            raise AmodalkitError(f"object {i}: 'id' must be an integer from 0 to {MAX_ID}, got "
                                 f"{obj['id']!r:.40}", path)
        type_id = obj.get("type_id")
        if type_id is not None and (not _is_int(type_id) or not 0 <= type_id <= MAX_TYPE_ID):
            raise AmodalkitError(f"object {i}: 'type_id' must be an integer from 0 to {MAX_TYPE_ID} or null, "
                                 f"got {type_id!r:.40}", path)
        for key in ("type_name",):
            if obj.get(key) is not None and not isinstance(obj[key], str):
                raise AmodalkitError(f"object {i}: {key!r} must be a string", path)
    return data


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _decode_masks(obj: dict, size: tuple[int, int], n_frames: int, where: Path) -> np.ndarray:
    masks = obj["masks"]
    if len(masks) != n_frames:
        raise AmodalkitError(f"object {obj['id']} has {len(masks)} masks for {n_frames} frames", where)
    out = np.zeros((n_frames, *size), bool)
    for t, rle in enumerate(masks):
        if not isinstance(rle, dict):
            raise AmodalkitError(f"object {obj['id']} frame {t}: mask is not a COCO RLE of size "
                                 f"{list(size)}", where)
        try:
            out[t] = rle_decode(rle, size)
        except AmodalkitError as exc:
            raise AmodalkitError(f"object {obj['id']} frame {t}: {exc}", where) from exc
    return out


def _render_for(render: Path) -> tuple[int | None, str]:
    """The fish id a render folder names (``NNNNN_object<ID>``) or its index (``objectNNN``)."""
    m = re.fullmatch(r"(?:.+_)?object(\d+)", render.parent.name)
    if m is None:
        return None, ""
    return int(m.group(1)), "id" if "_object" in render.parent.name else "index"


def read_sample(sample: FishbowlSample, selection: OfficialSelection | None = None) -> Video:
    """One FISHBOWL sample as a shard Video (visible ids, amodal masks from the single-fish renders)."""
    if sample.video is not None:
        frames = read_video_frames(sample.video)
    elif sample.frames_dir is not None:
        frames = read_frame_images(sample.frames_dir)
    else:
        raise AmodalkitError("sample has neither video.mp4 nor a frame folder", sample.folder)
    objects = _load_objects(sample.objects_json)
    t_len, h, w = frames.shape[:3]
    if objects and len(objects[0]["masks"]) != t_len:
        raise AmodalkitError(f"{len(objects[0]['masks'])} masks per object but {t_len} frames in the video",
                             sample.objects_json)
    amodal_by_id: dict[int, np.ndarray] = {}
    for render in sample.renders:
        listed = _load_objects(render)
        for obj in listed:
            if int(obj["id"]) not in amodal_by_id:
                amodal_by_id[int(obj["id"])] = _decode_masks(obj, (h, w), t_len, render)
        number, kind = _render_for(render)
        if len(listed) == 1 and number is not None:
            by_index = int(objects[number]["id"]) if number < len(objects) else None
            target = number if kind == "id" else by_index
            if target is not None and target not in amodal_by_id:
                amodal_by_id[target] = _decode_masks(listed[0], (h, w), t_len, render)
    if selection is not None:
        selection.add_amodal(sample.name, amodal_by_id, (t_len, h, w), sample.folder)
    k_len = len(objects)
    visible_ids = np.zeros((t_len, h, w), np.uint16)
    amodal = np.zeros((k_len, t_len, h, w), bool)
    annotated = np.zeros((k_len, t_len), bool)
    presence = np.zeros((k_len, t_len), bool)
    visible_area = np.zeros((k_len, t_len), np.int64)
    info = []
    for k, obj in enumerate(objects):
        vis = _decode_masks(obj, (h, w), t_len, sample.objects_json)
        visible_ids[vis & (visible_ids == 0)] = k + 1
        visible_area[k] = vis.sum(axis=(1, 2))
        full = amodal_by_id.get(int(obj["id"]))
        if full is not None:
            amodal[k] = full
            annotated[k] = True
            rates = occlusion_rates(full, vis)
        else:
            rates = np.full(t_len, np.nan)
        presence[k] = vis.any(axis=(1, 2)) | amodal[k].any(axis=(1, 2))
        info.append({"id": obj["id"], "type_id": obj.get("type_id"), "type_name": obj.get("type_name"),
                     "has_amodal": full is not None,
                     "occlusion_rate": [None if np.isnan(r) else round(float(r), 4) for r in rates]})
    video = Video(
        name=sample.name, frames=frames, visible_ids=visible_ids, amodal=amodal, amodal_annotated=annotated,
        presence=presence, track_ids=np.array([int(o["id"]) for o in objects], np.int64),
        source_frame_ids=np.asarray([f"{sample.name}/{t:05d}" for t in range(t_len)], dtype=object),
        object_class=np.array([int(o.get("type_id") or 0) for o in objects], np.int32),
        provenance={"dataset": "fishbowl", "sample": sample.name, "objects": info,
                    "source": "video.mp4" if sample.video is not None else "frames"},
    )
    return video if selection is None or not selection.active else selection.apply(video, visible_area)


def occlusion_range_filter(low: float, high: float) -> Callable[[Video], np.ndarray]:
    """Object-frames whose occlusion rate lies in the open interval (low, high): a (K, T) bool filter.

    The rate is 1 - |visible & amodal| / |amodal| per object-frame, as in the official FISHBOWL
    evaluation (rows of its test CSV are object-frames filtered by 0.1 < OCC_R < 0.7).
    """
    if not 0.0 <= low < high <= 1.0:
        raise AmodalkitError(f"--occlusion-range needs 0 <= LOW < HIGH <= 1, got {low} {high}")

    def keep(video: Video) -> np.ndarray:
        rates = occlusion_rates(video.amodal, video.visible_masks())
        with np.errstate(invalid="ignore"):
            return (rates > low) & (rates < high)

    return keep


def _shard_path(out: Path, split: str, index: int) -> Path:
    return out / f"{split}-{index:05d}.h5"


def write_fishbowl_shard(path: Path, samples: list[FishbowlSample], src: str,
                         selection: OfficialSelection | None = None) -> Path:
    """Read samples and write them to one shard (atomic), annotating only `selection`'s object-frames."""
    provenance = {"writer": "amodalkit import-fishbowl", "dataset": "fishbowl", "source": src,
                  "samples": [s.name for s in samples]}
    if selection is not None and selection.active:
        provenance["official_selection"] = selection.settings
        selection = selection.for_videos([s.name for s in samples])
    return write_shard(path, (read_sample(s, selection) for s in samples), provenance)


def _write_task(src: str, task: tuple[Path, list[FishbowlSample], OfficialSelection]) -> dict:
    """One shard of an import, as a unit of the execution layer."""
    path, samples, selection = task
    write_fishbowl_shard(path, samples, src, selection)
    return {"path": str(path), "videos": len(samples)}


def _complete(path: Path, names: list[str], settings: dict | None) -> bool:
    if not path.is_file():
        return False
    with contextlib.suppress(AmodalkitError, OSError):
        with ShardReader(path) as r:
            prov = r.provenance
            return (r.video_names == sorted(names) and prov.get("samples") == names
                    and prov.get("official_selection") == settings)
    return False


def import_fishbowl(src: str | Path, out: str | Path, split: str | None = None, videos_per_shard: int = 20,
                    limit: int | None = None, jobs: int = 1, quiet: bool = False,
                    official_filters: bool = False, subtest: str | Path | None = None,
                    savos_pkl: str | Path | None = None, scheduler: str | None = None) -> list[Path]:
    """Write FISHBOWL samples of `src` as shards ``OUT/{split}-{index:05d}.h5``; skip complete ones.

    One task per shard, on `jobs` local processes or the Dask cluster at `scheduler`
    (:mod:`amodalkit.execution`); the shards are the same bytes either way.

    `official_filters`, `subtest` (test_subtest.csv) and `savos_pkl` (test_data.pkl) narrow the
    annotated object-frames to the SaVos test set (:mod:`amodalkit.datasets.fishbowl_official`).
    """
    if videos_per_shard < 1 or jobs < 1:
        raise AmodalkitError("--videos-per-shard and --jobs must be at least 1")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise AmodalkitError(f"--limit must be at least 1, got {limit!r}")
    samples = find_samples(src)
    selection = make_selection(official_filters, subtest, savos_pkl)
    selection.check_videos([s.name for s in samples])
    if limit is not None:
        samples = samples[:limit]
    split = split or samples[0].folder.parent.name
    if not re.fullmatch(r"[A-Za-z0-9_]+", split):
        raise AmodalkitError(f"split name {split!r} must be letters, digits or _ (pass --split)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AmodalkitError("output path exists and is not a folder", out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    groups = [samples[i:i + videos_per_shard] for i in range(0, len(samples), videos_per_shard)]
    paths = [_shard_path(out, split, i) for i in range(len(groups))]
    record = {"dataset": "fishbowl", "source": str(Path(src).resolve()), "split": split,
              "videos_per_shard": videos_per_shard, "samples": len(samples)}
    settings = selection.settings if selection.active else None
    if settings is not None:
        record["official_selection"] = settings
    claim_output_dir(out / f"{split}-{RECORD_FILE}", record,
                     f"folder holds a {split} import made with other settings; use a new --out "
                     "or another --split")
    todo = [(p, g, selection.for_videos([s.name for s in g])) for p, g in zip(paths, groups)
            if not _complete(p, [s.name for s in g], settings)]
    run_tasks(partial(_write_task, str(src)), todo, jobs, scheduler, quiet, unit="shard")
    return paths
