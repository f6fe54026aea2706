"""KINS amodal annotations (COCO-style JSON over KITTI object benchmark images), both releases.

Files and where their images are::

    instances_train.json     original release (2019), images in OBJECT/training/image_2
    instances_val.json       original release, images in OBJECT/testing/image_2
    update_train_2020.json   2020 update with occlusion order, OBJECT/training/image_2
    update_test_2020.json    2020 update, OBJECT/testing/image_2

Common to both: ``images`` (``id``, ``file_name`` = bare object image name such as
``000123.png``, usually ``width``/``height``), ``categories`` and ``annotations`` with ``id``,
``image_id``, ``category_id`` (1 cyclist, 2 pedestrian, 3 rider, 4 car, 5 tram, 6 truck,
7 van, 8 misc). Per annotation:

=================  ===============================  =====================================
                   original (``instances_*``)       2020 update (``update_*_2020``)
=================  ===============================  =====================================
amodal mask        ``segmentation``: polygons       ``a_segm``: polygons
inmodal mask       ``inmodal_seg``: COCO RLE dict   ``i_segm``: polygons
amodal box         ``bbox`` [x, y, w, h]            ``a_bbox`` [x, y, w, h]
inmodal box        ``inmodal_bbox`` [x, y, w, h]    ``i_bbox`` [x, y, w, h]
occlusion order    (``ico_id`` in some copies)      ``oco_id`` cluster, ``ico_id`` order
=================  ===============================  =====================================

The release is detected from the annotation keys. Polygons are decoded with
``pycocotools.mask.frPyObjects`` and merged; polygons with fewer than three points are
skipped (they have no area, and pycocotools would read a 4-number polygon as a box).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pycocotools import mask as coco_mask
from tqdm import tqdm

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import read_json, write_json
from amodalkit.io.shards import Video
from amodalkit.ops.masks import rle_decode

if TYPE_CHECKING:
    from amodalkit.models.base import AmodalMethod

CATEGORIES = {1: "cyclist", 2: "pedestrian", 3: "rider", 4: "car", 5: "tram", 6: "truck", 7: "van", 8: "misc"}
CAR = 4
VERSIONS = {
    "original": {"amodal": "segmentation", "inmodal": "inmodal_seg", "amodal_bbox": "bbox",
                 "inmodal_bbox": "inmodal_bbox"},
    "2020": {"amodal": "a_segm", "inmodal": "i_segm", "amodal_bbox": "a_bbox", "inmodal_bbox": "i_bbox"},
}

Polygons = list[list[float]]
MAX_POLYGON_POINTS = 10_000


@dataclass(frozen=True)
class KinsImage:
    """One annotated object benchmark image."""

    id: int
    file_name: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class KinsAnnotation:
    """One KINS instance: amodal polygons, inmodal polygons or RLE, boxes [x, y, w, h]."""

    id: int
    image_id: int
    category_id: int
    amodal: Polygons
    inmodal: Polygons | dict
    amodal_bbox: tuple[float, float, float, float]
    inmodal_bbox: tuple[float, float, float, float] | None
    source: str
    occlusion_cluster: int | None = None
    occlusion_order: int | None = None

    def where(self) -> str:
        """'FILE: annotation ID' for error messages."""
        return f"{self.source}: annotation {self.id}"

    def amodal_mask(self, height: int, width: int) -> np.ndarray:
        """Amodal mask (H, W) bool."""
        return decode_polygons(self.amodal, height, width, self.where())

    def inmodal_mask(self, height: int, width: int) -> np.ndarray:
        """Inmodal (visible) mask (H, W) bool."""
        if isinstance(self.inmodal, dict):
            return decode_rle(self.inmodal, height, width, self.where())
        return decode_polygons(self.inmodal, height, width, self.where())


@dataclass
class KinsFile:
    """A loaded KINS JSON: version, object split, images by id and annotations."""

    path: Path
    version: str
    split: str
    images: dict[int, KinsImage]
    annotations: list[KinsAnnotation]
    categories: dict[int, str] = field(default_factory=dict)

    def by_image(self, categories: Collection[int] | None = None) -> dict[int, list[KinsAnnotation]]:
        """Annotations grouped by image id, only `categories` when given (every image listed)."""
        out: dict[int, list[KinsAnnotation]] = {i: [] for i in self.images}
        for a in self.annotations:
            if categories is None or a.category_id in categories:
                out[a.image_id].append(a)
        return out


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _polygons(value: object, where: str, key: str) -> Polygons:
    if isinstance(value, list) and value and all(_is_number(v) for v in value):
        value = [value]
    if not isinstance(value, list):
        raise AmodalkitError(f"{key} must be a list of polygons [[x1, y1, x2, y2, ...], ...], got "
                             f"{type(value).__name__}", where)
    out = []
    for poly in value:
        if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
            raise AmodalkitError(f"{key} holds a polygon that is not a list of numbers", where)
        if len(poly) % 2:
            raise AmodalkitError(f"{key} holds a polygon with an odd number of coordinates ({len(poly)})",
                                 where)
        out.append([float(v) for v in poly])
    return out


def _rle(value: object, where: str, key: str) -> dict:
    if not isinstance(value, dict) or "size" not in value or "counts" not in value:
        raise AmodalkitError(f"{key} must be a COCO RLE dict with 'size' and 'counts'", where)
    size = value["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise AmodalkitError(f"{key} has an invalid size {size!r} (expected [height, width])", where)
    if not isinstance(value["counts"], (str, list)):
        raise AmodalkitError(f"{key} counts must be a string or a list", where)
    return {"size": list(size), "counts": value["counts"]}


def _bbox(value: object, where: str, key: str, required: bool = True) -> tuple[float, ...] | None:
    if value is None and not required:
        return None
    if not (isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)):
        raise AmodalkitError(f"{key} must be [x, y, w, h], got {value!r}", where)
    return tuple(float(v) for v in value)


def decode_polygons(polygons: Polygons, height: int, width: int, where: str = "") -> np.ndarray:
    """Rasterize COCO polygons with pycocotools (frPyObjects + merge): (H, W) bool.

    pycocotools allocates memory in proportion to the polygon's perimeter, so vertices must
    be finite and lie within one image size of the image, at most ``MAX_POLYGON_POINTS`` each.
    """
    polys = [p for p in polygons if len(p) >= 6]
    if not polys:
        return np.zeros((height, width), bool)
    for p in polys:
        xy = np.asarray(p, np.float64).reshape(-1, 2)
        if len(xy) > MAX_POLYGON_POINTS or not np.isfinite(xy).all() \
                or not ((-width <= xy[:, 0]) & (xy[:, 0] <= 2 * width)
                        & (-height <= xy[:, 1]) & (xy[:, 1] <= 2 * height)).all():
            raise AmodalkitError(f"a polygon has non-finite vertices, more than {MAX_POLYGON_POINTS} of "
                                 f"them, or vertices far outside the {width}x{height} image", where or None)
    try:
        rle = coco_mask.merge(coco_mask.frPyObjects(polys, height, width))
    except Exception as exc:
        raise AmodalkitError(f"cannot rasterize the polygons ({exc})", where or None) from exc
    return coco_mask.decode(rle).astype(bool)


def decode_rle(rle: dict, height: int, width: int, where: str = "") -> np.ndarray:
    """A COCO RLE of an image of the given size as (H, W) bool (:func:`amodalkit.ops.masks.rle_decode`)."""
    try:
        return rle_decode(rle, (height, width))
    except AmodalkitError as exc:
        raise AmodalkitError(str(exc), where or None) from exc


def detect_version(annotation: dict, where: str) -> str:
    """'2020' when the annotation has a_segm/i_segm, 'original' for segmentation/inmodal_seg."""
    if "a_segm" in annotation or "i_segm" in annotation:
        return "2020"
    if "segmentation" in annotation or "inmodal_seg" in annotation:
        return "original"
    raise AmodalkitError("neither a KINS original (segmentation/inmodal_seg) nor a 2020 (a_segm/i_segm) "
                         "annotation", where)


def object_split(path: str | Path) -> str:
    """Object benchmark split of a KINS file from its name: *test*/*val* -> testing, else training."""
    name = Path(path).name.lower()
    return "testing" if ("test" in name or "val" in name) else "training"


def _optional_int(value: object) -> int | None:
    return int(value) if _is_number(value) else None


def parse_annotation(raw: dict, version: str, source: str) -> KinsAnnotation:
    """Validate one annotation dict of the given release; AmodalkitError names its id and file."""
    ann_id = raw.get("id") if isinstance(raw, dict) else None
    where = f"{source}: annotation {ann_id}"
    if not isinstance(raw, dict):
        raise AmodalkitError("annotation is not an object", where)
    keys = VERSIONS[version]
    for k in ("id", "image_id", "category_id", keys["amodal"], keys["inmodal"], keys["amodal_bbox"]):
        if k not in raw:
            raise AmodalkitError(f"missing {k!r} (a KINS {version} annotation has it)", where)
    for k in ("id", "image_id", "category_id"):
        if not isinstance(raw[k], int):
            raise AmodalkitError(f"{k} must be an integer, got {raw[k]!r}", where)
    amodal = _polygons(raw[keys["amodal"]], where, keys["amodal"])
    inm = raw[keys["inmodal"]]
    inmodal = _rle(inm, where, keys["inmodal"]) if isinstance(inm, dict) else _polygons(inm, where,
                                                                                         keys["inmodal"])
    return KinsAnnotation(
        id=raw["id"], image_id=raw["image_id"], category_id=raw["category_id"], amodal=amodal,
        inmodal=inmodal,
        amodal_bbox=_bbox(raw[keys["amodal_bbox"]], where, keys["amodal_bbox"]),
        inmodal_bbox=_bbox(raw.get(keys["inmodal_bbox"]), where, keys["inmodal_bbox"], required=False),
        source=source, occlusion_cluster=_optional_int(raw.get("oco_id")),
        occlusion_order=_optional_int(raw.get("ico_id")),
    )


def load_kins(path: str | Path, categories: Collection[int] | None = None) -> KinsFile:
    """Load and validate a KINS JSON of either release (auto-detected); keep only `categories`."""
    path = Path(path)
    data = read_json(path, "JSON file", missing="KINS JSON does not exist")
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise AmodalkitError("not a COCO-style KINS file (needs 'images' and 'annotations' lists)", path)
    images: dict[int, KinsImage] = {}
    for img in data["images"]:
        if not isinstance(img, dict) or not isinstance(img.get("id"), int) \
                or not isinstance(img.get("file_name"), str):
            raise AmodalkitError(f"image entry {img!r:.80} needs an integer 'id' and a 'file_name'", path)
        images[img["id"]] = KinsImage(img["id"], img["file_name"], _optional_int(img.get("width")),
                                      _optional_int(img.get("height")))
    version = None
    anns = []
    for raw in data["annotations"]:
        where = f"{path}: annotation {raw.get('id') if isinstance(raw, dict) else None}"
        v = detect_version(raw if isinstance(raw, dict) else {}, where)
        if version is None:
            version = v
        elif v != version:
            raise AmodalkitError(f"mixes KINS releases ({version} and {v} annotations)", where)
        ann = parse_annotation(raw, v, str(path))
        if ann.image_id not in images:
            raise AmodalkitError(f"image_id {ann.image_id} is not in 'images'", where)
        if categories is None or ann.category_id in categories:
            anns.append(ann)
    cats = {c["id"]: c.get("name", "") for c in data.get("categories", [])
            if isinstance(c, dict) and "id" in c}
    return KinsFile(path, version or "original", object_split(path), images, anns, cats or dict(CATEGORIES))


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
    carrying the ``annotation_id`` it predicts. Returns counts.
    """
    from amodalkit.evaluation.evaluate import predict_binary, scored_object_frames
    from amodalkit.io.shards import ShardReader

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
                if not scored.any():
                    continue
                visible = video.visible_masks()
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
                        a, v = _rle_json(video.amodal[k, t]), _rle_json(visible[k, t])
                        ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                               "segmentation": {"size": a["size"], "counts": a["counts"]}, "bbox": a["bbox"],
                               "area": a["area"], "inmodal_seg": {"size": v["size"], "counts": v["counts"]},
                               "inmodal_bbox": v["bbox"], "inmodal_area": v["area"], "iscrowd": 0,
                               "track_id": int(video.track_ids[k]), "video": video.name,
                               "frame_index": int(t)}
                        annotations.append(ann)
                        if pred is not None:
                            p = _rle_json(pred[k, t])
                            results.append({"image_id": image_id, "category_id": cat, "score": 1.0,
                                            "segmentation": {"size": p["size"], "counts": p["counts"]},
                                            "bbox": p["bbox"], "inmodal_seg": ann["inmodal_seg"],
                                            "annotation_id": ann["id"], "track_id": ann["track_id"]})
    if not annotations:
        raise AmodalkitError("the shards hold no scored amodal ground truth to export",
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
