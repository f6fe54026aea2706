"""Issue 12, class 1 for the dataset readers: FISHBOWL folders and KINS file names stay inside their root."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run


def test_fishbowl_sample_linked_outside_its_folder_is_refused(fishbowl_release, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    src = Path(shutil.copytree(fishbowl_release.final, tmp_path / "final"))
    outside = Path(shutil.move(src / "00001", tmp_path / "elsewhere"))
    (src / "00001").symlink_to(outside)
    code, _, err = run(capsys, "import-fishbowl", str(src), "--out", str(tmp_path / "out"), "--quiet")
    assert_one_line_error(code, err, "FISHBOWL path", "symbolic link")
    assert not (tmp_path / "out").exists()
    code, _, err = run(capsys, "import-fishbowl", str(fishbowl_release.final), "--out", str(tmp_path / "o2"),
                       "--split", "../../x", "--quiet")
    assert_one_line_error(code, err, "split name")
    assert not list(tmp_path.glob("x*"))


def test_kins_file_name_escaping_the_object_folder_is_refused(kitti_world, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(kitti_world.kins_2020.read_text())
    data["images"][0]["file_name"] = "../../../../etc/000000.png"
    bad = tmp_path / "update_train_2020.json"
    bad.write_text(json.dumps(data))
    before = bad.read_bytes()
    code, _, err = run(capsys, "build-kins-video", "--kitti-raw", str(kitti_world.raw), "--kitti-devkit",
                       str(kitti_world.devkit), "--kitti-object", str(kitti_world.object),
                       "--kins-json", str(bad), "--tracks", f"pointtrack:{kitti_world.pointtrack}",
                       "--out", str(tmp_path / "out"), "--quiet")
    assert_one_line_error(code, err, str(bad), "file_name", "'..'")
    assert bad.read_bytes() == before
