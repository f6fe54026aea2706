"""Writers of datasets in the real on-disk formats: a miniature KITTI raw / object / devkit / KINS /
PointTrack world (three drives, 40x120 frames) and a miniature FISHBOWL release."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from amodalkit.ops.masks import rle_encode

H, W, N_FRAMES = 40, 120, 12
DRIVES = [
    ("2011_09_26", "2011_09_26_drive_0001_sync"),
    ("2011_09_26", "2011_09_26_drive_0002_sync"),
    ("2011_09_28", "2011_09_28_drive_0003_sync"),
]
# object training images: (drive index, true raw frame)
OBJECT_IMAGES = [(1, 7), (2, 9), (0, 6), (2, 5), (0, 2), (1, 3)]
WRONG_RECOVERABLE = "000001.png"  # mapping line points to frame 10 of the right drive
WRONG_OTHER_DRIVE = "000004.png"  # mapping line points into another drive
UNMAPPED = "000005.png"  # no train_rand.txt entry


def rect(x0: float, y0: float, w: float, h: float) -> list[float]:
    """A rectangle as one COCO polygon."""
    return [x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]


def poly_mask(poly: list[float]) -> np.ndarray:
    """Rasterize like the KINS reader (pycocotools)."""
    return coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects([poly], H, W))).astype(bool)


def car_boxes(t: int) -> dict[str, list[float]]:
    """Cars of frame t: A (back) moves right, B (front, taller) moves left, C far and alone."""
    return {"A": rect(20 + 2 * t, 14, 34, 16), "B": rect(70 - 2 * t, 10, 24, 24),
            "C": rect(100 - t, 1, 14, 8)}


def scene_masks(t: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, list[float]]]:
    """(amodal, visible, visible polygon) per car of frame t; B occludes A."""
    boxes = car_boxes(t)
    amodal = {k: poly_mask(p) for k, p in boxes.items()}
    visible = dict(amodal)
    visible["A"] = amodal["A"] & ~amodal["B"]
    a, b = boxes["A"], boxes["B"]
    vis_poly = dict(boxes)
    right = min(a[2], b[0]) if b[0] > a[0] else a[2]
    vis_poly["A"] = rect(a[0], a[1], max(right - a[0], 0), a[5] - a[1])
    return amodal, visible, vis_poly


def render(drive: int, t: int) -> np.ndarray:
    """One RGB frame: textured background (different per frame), three coloured cars."""
    rng = np.random.default_rng([drive, t])
    img = rng.integers(0, 90, (H, W, 3), dtype=np.uint8)
    amodal, _, _ = scene_masks(t)
    colors = {"A": (200, 40, 40), "C": (40, 200, 40), "B": (40, 40, 220)}
    for k in ("A", "C", "B"):
        img[amodal[k]] = np.array(colors[k], np.uint8) + rng.integers(0, 20, 3, dtype=np.uint8)
    return img


def write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@dataclass
class KittiWorld:
    """Paths of the miniature KITTI/KINS world."""

    root: Path
    raw: Path
    devkit: Path
    object: Path
    kins_2020: Path
    kins_original: Path
    pointtrack: Path
    builtin: Path
    drives: list[str] = field(default_factory=lambda: [d for _, d in DRIVES])


def _kins_annotations(version: str) -> tuple[list[dict], list[dict]]:
    images, anns = [], []
    for n, (_, t) in enumerate(OBJECT_IMAGES):
        images.append({"id": 100 + n, "file_name": f"{n:06d}.png", "width": W, "height": H})
        _, _, vis_poly = scene_masks(t)
        boxes = car_boxes(t)
        for j, k in enumerate(("A", "B", "C")):
            box = [boxes[k][0], boxes[k][1], boxes[k][2] - boxes[k][0], boxes[k][5] - boxes[k][1]]
            vp = vis_poly[k]
            ibox = [vp[0], vp[1], vp[2] - vp[0], vp[5] - vp[1]]
            ann = {"id": 1000 + 10 * n + j, "image_id": 100 + n, "category_id": 4, "iscrowd": 0}
            if version == "2020":
                ann.update(a_segm=[boxes[k]], i_segm=[vp], a_bbox=box, i_bbox=ibox,
                           a_area=float(box[2] * box[3]), i_area=float(ibox[2] * ibox[3]),
                           oco_id=1 if k in "AB" else 2, ico_id={"A": 2, "B": 1, "C": 0}[k])
            else:
                ann.update(segmentation=[boxes[k]], inmodal_seg=rle_encode(poly_mask(vp)), bbox=box,
                           inmodal_bbox=ibox, area=float(box[2] * box[3]))
            anns.append(ann)
        ped = rect(2, 20, 6, 12)
        ped_box = [2.0, 20.0, 6.0, 12.0]
        if version == "2020":
            anns.append({"id": 9000 + n, "image_id": 100 + n, "category_id": 2, "a_segm": [ped],
                         "i_segm": [ped], "a_bbox": ped_box, "i_bbox": ped_box, "oco_id": 0, "ico_id": 0})
        else:
            anns.append({"id": 9000 + n, "image_id": 100 + n, "category_id": 2, "segmentation": [ped],
                         "inmodal_seg": rle_encode(poly_mask(ped)), "bbox": ped_box, "inmodal_bbox": ped_box})
    return images, anns


def write_kitti_world(root: Path) -> KittiWorld:
    """Write the miniature world in the real KITTI / devkit / KINS / PointTrack formats."""
    raw, devkit, obj = root / "raw", root / "devkit_object", root / "data_object_image_2"
    for d, (date, drive) in enumerate(DRIVES):
        for t in range(N_FRAMES):
            write_png(raw / date / drive / "image_02" / "data" / f"{t:010d}.png", render(d, t))
    for n, (d, t) in enumerate(OBJECT_IMAGES):
        write_png(obj / "training" / "image_2" / f"{n:06d}.png", render(d, t))
    lines = []
    for n, (d, t) in enumerate(OBJECT_IMAGES[:5]):
        date, drive = DRIVES[d]
        if f"{n:06d}.png" == WRONG_RECOVERABLE:
            t = 10
        if f"{n:06d}.png" == WRONG_OTHER_DRIVE:
            date, drive = DRIVES[1]
        lines.append((date, drive, t, n))
    lines.sort()
    rand = [0] * len(lines)
    for line_no, (_, _, _, n) in enumerate(lines, 1):
        rand[n] = line_no
    (devkit / "mapping").mkdir(parents=True)
    (devkit / "mapping" / "train_mapping.txt").write_text(
        "".join(f"{date} {drive} {t:010d}\n" for date, drive, t, _ in lines))
    (devkit / "mapping" / "train_rand.txt").write_text(",".join(str(r) for r in rand) + "\n")
    for version, name in (("2020", "update_train_2020.json"), ("original", "instances_train.json")):
        images, anns = _kins_annotations(version)
        cats = [{"id": i, "name": n} for i, n in enumerate(
            ["cyclist", "pedestrian", "rider", "car", "tram", "truck", "van", "misc"], 1)]
        (root / name).write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    pointtrack, builtin = root / "pointtrack", root / "builtin"
    pointtrack.mkdir()
    builtin.mkdir()
    ids = {"A": 1, "B": 2, "C": 3}
    for d, (_, drive) in enumerate(DRIVES):
        pt, bi = [], []
        rng = np.random.default_rng(d)
        for t in range(N_FRAMES):
            _, visible, _ = scene_masks(t)
            arbitrary = rng.permutation(50)[:3] + 7
            for j, k in enumerate(("B", "A", "C")):
                counts = rle_encode(visible[k])["counts"]
                pt.append(f"{t} {ids[k]} 1 {H} {W} {counts}")
                bi.append(f"{t} {int(arbitrary[j])} 1 {H} {W} {counts}")
            ped = np.zeros((H, W), bool)
            ped[20:32, 2:8] = True
            pt.append(f"{t} 1 2 {H} {W} {rle_encode(ped)['counts']}")
        (pointtrack / f"{drive}.txt").write_text("\n".join(pt) + "\n")
        (builtin / f"{drive}.txt").write_text("\n".join(bi) + "\n")
    return KittiWorld(root, raw, devkit, obj, root / "update_train_2020.json", root / "instances_train.json",
                      pointtrack, builtin)


FB_H, FB_W, FB_T = 48, 64, 8


def fish_masks(sample: int) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Fish descriptions, amodal masks (K, T, H, W) and visible masks; fish 0 swims over the others."""
    yy, xx = np.mgrid[:FB_H, :FB_W]
    fishes = [{"id": 5 + sample, "type_id": 1, "type_name": "clownfish", "speed": 1.0, "scale": 1.0},
              {"id": 2, "type_id": 3, "type_name": "shark", "speed": 0.5, "scale": 2.0},
              {"id": 9, "type_id": 1, "type_name": "clownfish", "speed": 1.0, "scale": 1.0}]
    amodal = np.zeros((3, FB_T, FB_H, FB_W), bool)
    for t in range(FB_T):
        amodal[0, t] = ((xx - (10 + 5 * t)) / 9.0) ** 2 + ((yy - 24) / 6.0) ** 2 <= 1
        amodal[1, t] = ((xx - 36) / 14.0) ** 2 + ((yy - 22 - sample) / 9.0) ** 2 <= 1
        amodal[2, t] = ((xx - 52) / 5.0) ** 2 + ((yy - 8) / 4.0) ** 2 <= 1
    visible = amodal.copy()
    visible[1] &= ~amodal[0]
    return fishes, amodal, visible


def _objects_json(fishes: list[dict], masks: np.ndarray) -> list[dict]:
    return [{**f, "masks": [rle_encode(m) for m in masks[k]]} for k, f in enumerate(fishes)]


def fish_frames(sample: int) -> np.ndarray:
    """RGB frames of a sample (T, H, W, 3)."""
    rng = np.random.default_rng(sample)
    _, amodal, _ = fish_masks(sample)
    frames = np.zeros((FB_T, FB_H, FB_W, 3), np.uint8)
    frames[:] = (20, 60, 120)
    for k, color in ((2, (250, 250, 0)), (1, (120, 120, 120)), (0, (255, 120, 0))):
        frames[amodal[k]] = color
    return np.clip(frames.astype(int) + rng.integers(0, 10, frames.shape), 0, 255).astype(np.uint8)


def write_mp4(path: Path, frames: np.ndarray) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (FB_W, FB_H))
    assert writer.isOpened()
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


@dataclass
class FishbowlRelease:
    """Two copies of the same two samples: the generator's layout and the SaVos authors' layout."""

    final: Path
    savos_split: Path


def write_fishbowl(root: Path) -> FishbowlRelease:
    """Write samples 00000 and 00001 in both FISHBOWL layouts."""
    final = root / "final"
    savos = root / "test_data"
    for s in range(2):
        name = f"{s:05d}"
        fishes, amodal, visible = fish_masks(s)
        frames = fish_frames(s)
        sample = final / name
        sample.mkdir(parents=True)
        write_mp4(sample / "video.mp4", frames)
        (sample / "objects.json").write_text(json.dumps(_objects_json(fishes, visible)))
        (sample / "recording.json").write_text(json.dumps({"seed": s}))
        for k, f in enumerate(fishes):
            (sample / f"object{k:03d}").mkdir()
            (sample / f"object{k:03d}" / "objects.json").write_text(
                json.dumps(_objects_json([f], amodal[k:k + 1])))
        copy = savos / "test" / name
        copy.mkdir(parents=True)
        (copy / "objects.json").write_text(json.dumps(_objects_json(fishes, visible)))
        for k, f in enumerate(fishes[:2]):
            render = savos / "test_objects" / f"{name}_object{f['id']}"
            render.mkdir(parents=True)
            (render / "objects.json").write_text(json.dumps(_objects_json([f], amodal[k:k + 1])))
        for t, img in enumerate(frames):
            write_png(savos / "test_frames" / name / f"{t:05d}.png", img)
    return FishbowlRelease(final, savos / "test")
