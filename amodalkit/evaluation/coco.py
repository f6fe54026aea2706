"""Shards' scored ground truth (and a method's predictions) as KINS-style COCO JSON."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask
from tqdm import tqdm

from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import predict_binary, scored_object_frames
from amodalkit.io.atomic import write_json
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shards import Video
from amodalkit.models.base import AmodalMethod


def _rle_json(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    box = [float(v) for v in coco_mask.toBbox(rle)]
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii"),
            "bbox": box, "area": int(mask.sum())}


def _category_names(reader_provenance: dict, video: Video) -> dict[int, str]:
    names = {int(k): str(v) for k, v in reader_provenance.get("categories", {}).items()}
    for obj in video.provenance.get("objects", []):
        if isinstance(obj, dict) and obj.get("type_id") is not None and obj.get("type_name"):
            names.setdefault(int(obj["type_id"]), str(obj["type_name"]))
    return names


def export_coco(paths: Sequence[Path], out: str | Path, method: AmodalMethod | None = None,
                pred_out: str | Path | None = None, quiet: bool = True) -> dict:
    """Write the scored ground truth of shards as KINS-style COCO JSON (+ a method's predictions).

    One image per (video, frame) with a scored object; one annotation per scored object-frame
    (annotated, present, non-empty amodal mask), with KINS' original field names:
    ``segmentation`` (amodal, COCO RLE), ``bbox``, ``area``, ``inmodal_seg`` (visible RLE),
    ``inmodal_bbox``, ``inmodal_area``, plus ``track_id``/``video``/``frame_index``. With
    `method`, `pred_out` receives a COCO results list (``segmentation`` = thresholded
    prediction united with the visible mask, ``score`` 1) for the same object-frames, each
    carrying the ``annotation_id`` it predicts. Videos without amodal ground truth (e.g. from
    ``amodalkit tracks``) still get images and predictions, for every present object-frame
    with visible pixels (``annotation_id`` null). Returns counts.
    """
    images: list[dict] = []
    annotations: list[dict] = []
    results: list[dict] = []
    categories: dict[int, str] = {}
    for path in tqdm(paths, desc="export", unit="shard", disable=quiet):
        with ShardReader(path) as reader:
            for i in range(len(reader)):
                video = reader.read_video(i)
                for c, n in _category_names(reader.provenance, video).items():
                    categories.setdefault(c, n)
                scored = scored_object_frames(video)
                labelled = bool(scored.any())
                if not labelled and method is None:
                    continue
                visible = video.visible_masks()
                if not labelled:
                    scored = video.presence & visible.any(axis=(-2, -1))
                pred = predict_binary(method, video) if method is not None else None
                classes = video.object_class if video.object_class is not None else np.ones(video.num_objects)
                h, w = video.size
                for t in np.flatnonzero(scored.any(axis=0)):
                    image_id = len(images) + 1
                    images.append({"id": image_id, "file_name": str(video.source_frame_ids[t]), "width": w,
                                   "height": h, "video": video.name, "frame_index": int(t),
                                   "shard": Path(path).name})
                    for k in np.flatnonzero(scored[:, t]):
                        cat = int(classes[k])
                        categories.setdefault(cat, "object")
                        v = _rle_json(visible[k, t])
                        inmodal = {"size": v["size"], "counts": v["counts"]}
                        ann_id = None
                        if labelled:
                            a = _rle_json(video.amodal[k, t])
                            ann_id = len(annotations) + 1
                            annotations.append({
                                "id": ann_id, "image_id": image_id, "category_id": cat,
                                "segmentation": {"size": a["size"], "counts": a["counts"]}, "bbox": a["bbox"],
                                "area": a["area"], "inmodal_seg": inmodal, "inmodal_bbox": v["bbox"],
                                "inmodal_area": v["area"], "iscrowd": 0, "track_id": int(video.track_ids[k]),
                                "video": video.name, "frame_index": int(t)})
                        if pred is not None:
                            p = _rle_json(pred[k, t])
                            results.append({"image_id": image_id, "category_id": cat, "score": 1.0,
                                            "segmentation": {"size": p["size"], "counts": p["counts"]},
                                            "bbox": p["bbox"], "inmodal_seg": inmodal,
                                            "annotation_id": ann_id, "track_id": int(video.track_ids[k])})
    if not annotations and not results:
        raise AmodalkitError("the shards hold no scored amodal ground truth to export (give --model to "
                             "export predictions for shards without it)",
                             paths[0] if len(paths) == 1 else None)
    gt = {"info": {"description": "amodalkit export-coco (KINS-style amodal annotations)",
                   "shards": [str(p) for p in paths]},
          "images": images, "annotations": annotations,
          "categories": [{"id": c, "name": n} for c, n in sorted(categories.items())]}
    write_json(out, gt)
    if method is not None:
        if pred_out is None:
            raise AmodalkitError("a method's predictions need an output file")
        write_json(pred_out, results)
    return {"images": len(images), "annotations": len(annotations), "predictions": len(results)}
