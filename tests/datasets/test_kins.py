from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import H, KittiWorld, W, car_boxes, poly_mask, scene_masks

from amodalkit.datasets.kins import CAR, decode_polygons, load_kins, object_split
from amodalkit.errors import AmodalkitError


def test_both_releases_detected_and_equal(kitti_world: KittiWorld) -> None:
    new = load_kins(kitti_world.kins_2020)
    old = load_kins(kitti_world.kins_original)
    assert (new.version, old.version) == ("2020", "original")
    assert new.split == old.split == "training"
    assert len(new.images) == 6 and new.images[100].file_name == "000000.png"
    assert len(new.annotations) == len(old.annotations) == 6 * 4
    by_id = {a.id: a for a in old.annotations}
    for a in new.annotations:
        b = by_id[a.id]
        assert np.array_equal(a.amodal_mask(H, W), b.amodal_mask(H, W))
        assert np.array_equal(a.inmodal_mask(H, W), b.inmodal_mask(H, W))
        assert a.amodal_bbox == b.amodal_bbox and a.inmodal_bbox == b.inmodal_bbox
    assert isinstance(by_id[1000].inmodal, dict)
    a_car = next(a for a in new.annotations if a.id == 1000)
    assert (a_car.occlusion_cluster, a_car.occlusion_order) == (1, 2)


def test_masks_match_the_scene(kitti_world: KittiWorld) -> None:
    kf = load_kins(kitti_world.kins_2020, categories={CAR})
    assert {a.category_id for a in kf.annotations} == {CAR}
    cars = kf.by_image({CAR})[100]  # image 000000 is frame 7
    amodal, visible, _ = scene_masks(7)
    for ann, key in zip(cars, "ABC"):
        assert np.array_equal(ann.amodal_mask(H, W), amodal[key])
        vis = ann.inmodal_mask(H, W)
        assert (vis & visible[key]).sum() / (vis | visible[key]).sum() > 0.9
    assert np.array_equal(decode_polygons([car_boxes(7)["B"]], H, W), poly_mask(car_boxes(7)["B"]))


def _write(tmp_path: Path, anns: list[dict], name: str = "update_train_2020.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "000000.png"}], "annotations": anns}))
    return path


GOOD = {"id": 7, "image_id": 1, "category_id": 4, "a_segm": [[0, 0, 10, 0, 10, 10, 0, 10]],
        "i_segm": [[0, 0, 5, 0, 5, 10, 0, 10]], "a_bbox": [0, 0, 10, 10], "i_bbox": [0, 0, 5, 10]}


@pytest.mark.parametrize(("change", "needle"), [
    ({"a_segm": [[0, 0, 10, 0, 10]]}, "odd number"),
    ({"a_segm": "nope"}, "list of polygons"),
    ({"i_segm": [[0, 0, "x", 1, 2, 3]]}, "not a list of numbers"),
    ({"a_bbox": [1, 2, 3]}, r"\[x, y, w, h\]"),
    ({"image_id": 99}, "image_id 99"),
    ({"category_id": "car"}, "category_id must be an integer"),
])
def test_malformed_annotation_names_id_and_file(tmp_path: Path, change: dict, needle: str) -> None:
    path = _write(tmp_path, [{**GOOD, **change}])
    with pytest.raises(AmodalkitError, match=needle) as info:
        load_kins(path)
    assert "annotation 7" in str(info.value) and str(path) in str(info.value)


def test_missing_key_and_bad_rle(tmp_path: Path) -> None:
    bad = {k: v for k, v in GOOD.items() if k != "a_bbox"}
    with pytest.raises(AmodalkitError, match="annotation 7: missing 'a_bbox'"):
        load_kins(_write(tmp_path, [bad]))
    orig = {"id": 8, "image_id": 1, "category_id": 4, "segmentation": [[0, 0, 10, 0, 10, 10]],
            "inmodal_seg": {"size": [5, 5], "counts": "0"}, "bbox": [0, 0, 10, 10]}
    kf = load_kins(_write(tmp_path, [orig], "instances_train.json"))
    with pytest.raises(AmodalkitError, match="annotation 8") as info:
        kf.annotations[0].inmodal_mask(40, 120)
    assert "does not match the image size" in str(info.value)
    with pytest.raises(AmodalkitError, match="mixes KINS releases"):
        load_kins(_write(tmp_path, [GOOD, orig]))
    with pytest.raises(AmodalkitError, match="neither a KINS original"):
        load_kins(_write(tmp_path, [{"id": 3, "image_id": 1, "category_id": 4}]))


def test_object_split_and_degenerate_polygons(tmp_path: Path) -> None:
    assert object_split("instances_val.json") == "testing"
    assert object_split("update_test_2020.json") == "testing"
    assert object_split("instances_train.json") == "training"
    assert not decode_polygons([[1, 1, 5, 5]], 10, 10).any()
    with pytest.raises(AmodalkitError, match="not a readable JSON"):
        load_kins(tmp_path)
