from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from dataset_fixtures import DRIVES, UNMAPPED, WRONG_OTHER_DRIVE, WRONG_RECOVERABLE, KittiWorld, render

from amodalkit.datasets.kitti import (
    KittiRaw,
    RawFrame,
    drive_date,
    match_images,
    object_image_index,
    object_image_path,
    read_mapping,
)
from amodalkit.errors import AmodalkitError

TRAINING = [(f"{n:06d}.png", "training") for n in range(6)]


def test_raw_layout(kitti_world: KittiWorld) -> None:
    raw = KittiRaw(kitti_world.raw)
    assert raw.drives() == sorted(d for _, d in DRIVES)
    assert raw.frame_numbers(DRIVES[0][1]) == list(range(12))
    assert raw.frame_path(DRIVES[2][1], 7) == \
        kitti_world.raw / "2011_09_28" / "2011_09_28_drive_0003_sync" / "image_02" / "data" / "0000000007.png"
    frames = raw.read_frames(DRIVES[0][1], [3, 4])
    assert frames.shape == (2, 40, 120, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames[1], render(0, 4))
    assert drive_date("2011_09_26_drive_0005_sync") == "2011_09_26"
    with pytest.raises(AmodalkitError, match="DATE_drive_NNNN_sync"):
        drive_date("drive_5")
    with pytest.raises(AmodalkitError, match="does not exist"):
        KittiRaw(kitti_world.root / "nope")


def test_devkit_mapping(kitti_world: KittiWorld) -> None:
    mapping = read_mapping(kitti_world.devkit)
    assert len(mapping.rand) == 5 and sorted(mapping.rand) == [1, 2, 3, 4, 5]
    line, raw = mapping.line_for(2)
    assert raw == RawFrame("2011_09_26", "2011_09_26_drive_0001_sync", 6)
    assert mapping.lines[line - 1] == raw
    assert mapping.line_for(5) == (None, None)
    assert object_image_index("000123.png") == 123
    assert object_image_path("/o", "000123.png") == Path("/o/training/image_2/000123.png")


def test_mapping_errors(tmp_path: Path, kitti_world: KittiWorld) -> None:
    with pytest.raises(AmodalkitError, match=r"train_rand\.txt"):
        read_mapping(tmp_path)
    shutil.copytree(kitti_world.devkit, tmp_path / "dk")
    bad = tmp_path / "dk" / "mapping" / "train_mapping.txt"
    bad.write_text("2011_09_26 2011_09_26_drive_0001_sync 0000000001\n2011_09_26 oops\n")
    with pytest.raises(AmodalkitError, match=r"train_mapping.txt:2"):
        read_mapping(tmp_path / "dk")


def test_match_report(kitti_world: KittiWorld) -> None:
    report = match_images(TRAINING, kitti_world.raw, kitti_world.devkit, kitti_world.object)
    by = {m.image: m for m in report.matches}
    assert by["000000.png"].status == "verified" and by["000000.png"].method == "mapping"
    assert (by["000000.png"].drive, by["000000.png"].frame) == (DRIVES[1][1], 7)
    wrong = by[WRONG_RECOVERABLE]
    assert wrong.status == "mismatched" and wrong.method == "search" and wrong.frame == 9
    assert wrong.mapped_raw_frame.endswith("0000000010.png") and wrong.max_abs_diff > 0
    other = by[WRONG_OTHER_DRIVE]
    assert other.status == "mismatched" and not other.usable and DRIVES[1][1] in other.mapped_raw_frame
    assert by[UNMAPPED].status == "unmatched" and "train_rand" in by[UNMAPPED].reason
    js = report.to_json()
    assert js["summary"] == {"images": 6, "matched": 4, "verified": 4, "unverified": 0, "mismatched": 2,
                             "unmatched": 1, "mismatched_recovered_by_search": 1}
    assert {m["image"] for m in js["mismatched"]} == {WRONG_RECOVERABLE, WRONG_OTHER_DRIVE}
    assert [m["image"] for m in js["unmatched"]] == [UNMAPPED]
    assert sorted(js["verified"]) == ["000000.png", "000001.png", "000002.png", "000003.png"]
    assert all(Path(m["raw_frame"]).is_file() and Path(m["object_image"]).is_file() for m in js["matched"])


def test_search_unmapped_and_testing_split(kitti_world: KittiWorld) -> None:
    report = match_images([(UNMAPPED, "training"), ("000000.png", "testing")], kitti_world.raw,
                          kitti_world.devkit, kitti_world.object, search_unmapped=True)
    by = {(m.image, m.split): m for m in report.matches}
    found = by[(UNMAPPED, "training")]
    assert found.usable and found.method == "search" and (found.drive, found.frame) == (DRIVES[1][1], 3)
    test_img = by[("000000.png", "testing")]
    assert test_img.status == "unmatched" and "training" in test_img.reason


def test_tolerance_and_unverified(tmp_path: Path, kitti_world: KittiWorld) -> None:
    obj = tmp_path / "object"
    shutil.copytree(kitti_world.object, obj)
    img = cv2.imread(str(obj / "training" / "image_2" / "000002.png"))
    img[0, 0] = np.clip(img[0, 0].astype(int) + 2, 0, 255).astype(np.uint8)
    cv2.imwrite(str(obj / "training" / "image_2" / "000002.png"), img)
    (obj / "training" / "image_2" / "000003.png").unlink()
    report = match_images(TRAINING[2:4], kitti_world.raw, kitti_world.devkit, obj)
    strict = {m.image: m for m in report.matches}
    assert strict["000002.png"].status == "mismatched" and strict["000002.png"].max_abs_diff == 2
    assert strict["000003.png"].status == "unverified" and not strict["000003.png"].usable
    loose = match_images(TRAINING[2:3], kitti_world.raw, kitti_world.devkit, obj, tolerance=2).matches[0]
    assert loose.status == "verified" and loose.max_abs_diff == 2
