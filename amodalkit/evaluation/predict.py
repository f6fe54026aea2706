"""Amodal predictions of a model for shards with or without ground truth, written as files.

Formats (``amodalkit predict --format``)::

    png     OUT/SHARD/VIDEO/FFFFF_objKKK.png   one 8-bit PNG per object and frame: the amodal
                                              probability x 255 (visible pixels 255), so
                                              ``png > 127`` is the binary prediction;
                                              FFFFF is the frame index in the video, KKK the
                                              object index (track ids in OUT/SHARD/VIDEO/objects.json)
    coco    OUT/predictions.json              a KINS-style COCO file (images, categories,
                                              annotations) of RLE predictions, loadable with
                                              ``pycocotools.coco.COCO``; each annotation's
                                              ``score`` is the mean probability inside its mask
    shard   OUT/SHARD.h5                      a copy of each shard with the ``pred_amodal`` field
                                              (see :mod:`amodalkit.io.shards`), which ``show``
                                              and ``export-coco`` read

Only present object-frames with visible pixels get a prediction (elsewhere an object is not
in the video); a re-run skips the videos (png) or shards (shard) already written.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as coco_mask
from tqdm import tqdm

from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import checked_predictions
from amodalkit.io.atomic import temp_path_for, write_json
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import write_shard
from amodalkit.io.shards import Video
from amodalkit.models.base import AmodalMethod

FORMATS = ("png", "coco", "shard")


def predict_probabilities(method: AmodalMethod, video: Video) -> np.ndarray:
    """The method's amodal probabilities with visible pixels set to 1: (K, T, H, W) float32 in [0, 1]."""
    pred = checked_predictions(method, [video])[0].astype(np.float32)
    return np.where(video.visible_masks(), np.float32(1), np.clip(pred, 0, 1))


def predicted_object_frames(video: Video) -> np.ndarray:
    """Object-frames that get a prediction: present with visible pixels, (K, T) bool."""
    return video.presence & video.visible_masks().any(axis=(-2, -1))


def _videos(paths: Sequence[Path], quiet: bool) -> Iterator[tuple[Path, int, Video]]:
    total = 0
    readers = []
    for p in paths:
        readers.append(ShardReader(p))
        total += len(readers[-1])
    with tqdm(total=total, desc="predict", unit="video", disable=quiet) as bar:
        for path, reader in zip(paths, readers, strict=True):
            with reader:
                for i in range(len(reader)):
                    yield path, i, reader.read_video(i)
                    bar.update(1)


def write_png_video(folder: Path, video: Video, prob: np.ndarray) -> int:
    """One video's PNGs into `folder` (written in a temp folder, then renamed); returns files written."""
    tmp = temp_path_for(folder)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    written = 0
    try:
        keep = predicted_object_frames(video)
        for k, t in zip(*np.nonzero(keep)):
            img = np.rint(prob[k, t] * 255).astype(np.uint8)
            if not cv2.imwrite(str(tmp / f"{t:05d}_obj{k:03d}.png"), img):
                raise AmodalkitError("could not write a PNG", tmp)
            written += 1
        (tmp / "objects.json").write_text(json.dumps(
            {"video": video.name, "track_ids": [int(v) for v in video.track_ids],
             "frames": [str(v) for v in video.source_frame_ids]}, indent=1))
        tmp.replace(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def _rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def coco_records(video: Video, prob: np.ndarray, shard: str, image_id: int, ann_id: int,
                 ) -> tuple[list[dict], list[dict]]:
    """COCO images (one per frame with a prediction) and annotations of one video."""
    images, anns = [], []
    keep = predicted_object_frames(video)
    visible = video.visible_masks()
    classes = video.object_class if video.object_class is not None else np.ones(video.num_objects, int)
    h, w = video.size
    for t in np.flatnonzero(keep.any(axis=0)):
        image_id += 1
        images.append({"id": image_id, "file_name": str(video.source_frame_ids[t]), "width": w, "height": h,
                       "video": video.name, "frame_index": int(t), "shard": shard})
        for k in np.flatnonzero(keep[:, t]):
            mask = prob[k, t] > 0.5
            ann_id += 1
            rle = _rle(mask)
            box = [float(v) for v in coco_mask.toBbox({**rle, "counts": rle["counts"].encode("ascii")})]
            anns.append({"id": ann_id, "image_id": image_id, "category_id": int(classes[k]),
                         "segmentation": rle, "bbox": box, "area": int(mask.sum()), "iscrowd": 0,
                         "score": float(prob[k, t][mask].mean()) if mask.any() else 0.0,
                         "inmodal_seg": _rle(visible[k, t]), "track_id": int(video.track_ids[k]),
                         "video": video.name, "frame_index": int(t)})
    return images, anns


def predict_shards(method: AmodalMethod, paths: Sequence[Path], out: str | Path, fmt: str = "png",
                   quiet: bool = True) -> dict:
    """Write `method`'s amodal predictions for every video of `paths` into `out` in format `fmt`."""
    if fmt not in FORMATS:
        raise AmodalkitError(f"unknown prediction format {fmt!r}; choose from {', '.join(FORMATS)}")
    out = Path(out)
    if fmt == "shard":
        return _predict_into_shards(method, paths, out, quiet)
    counts = {"videos": 0, "object_frames": 0}
    images: list[dict] = []
    anns: list[dict] = []
    categories: set[int] = set()
    stems = [Path(p).name.removesuffix(".h5") for p in paths]
    if len(set(stems)) != len(stems):
        raise AmodalkitError("two shards share a file name; predict them into separate --out folders")
    for path, _, video in _videos(paths, quiet):
        if fmt == "png":
            folder = out / Path(path).name.removesuffix(".h5") / video.name
            if folder.is_dir():
                continue
            counts["object_frames"] += write_png_video(folder, video, predict_probabilities(method, video))
        else:
            imgs, new = coco_records(video, predict_probabilities(method, video), Path(path).name,
                                     len(images), len(anns))
            images += imgs
            anns += new
            categories |= {a["category_id"] for a in new}
            counts["object_frames"] += len(new)
        counts["videos"] += 1
    if fmt == "coco":
        target = out / "predictions.json"
        write_json(target, {"info": {"description": f"amodalkit predict ({method.name})",
                                     "method": method.describe(), "shards": [str(p) for p in paths]},
                            "images": images, "annotations": anns,
                            "categories": [{"id": c, "name": str(c)} for c in sorted(categories)]})
        counts["file"] = str(target)
    return counts



def _predict_into_shards(method: AmodalMethod, paths: Sequence[Path], out: Path, quiet: bool) -> dict:
    """Copies of the shards with ``pred_amodal``; a shard already written (and valid) is skipped."""
    counts = {"videos": 0, "object_frames": 0, "shards": 0}
    for path in tqdm(paths, desc="predict", unit="shard", disable=quiet):
        target = out / Path(path).name
        if target.is_file():
            with ShardReader(target) as done:
                if len(done) and "pred_amodal" in done.meta(0)["fields"]:
                    continue
        with ShardReader(path) as reader:
            videos = []
            for i in range(len(reader)):
                video = reader.read_video(i)
                prob = predict_probabilities(method, video)
                videos.append(video.evolve(pred_amodal=np.rint(prob * 255).astype(np.uint8)))
                counts["object_frames"] += int(predicted_object_frames(video).sum())
            prediction = {"method": method.describe(), "source": str(path)}
            provenance = {**reader.provenance, "prediction": prediction}
        write_shard(target, videos, provenance)
        counts["videos"] += len(videos)
        counts["shards"] += 1
    return counts
