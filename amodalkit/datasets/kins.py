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

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import read_json
from amodalkit.ops.masks import rle_decode

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
