"""Hostile and careless inputs on the command line: one `error:` line, exit 2, inputs untouched."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from bad_files import declared_shard, forged_png, raw_checkpoint, snapshot
from cli_helpers import assert_one_line_error, run

from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import write_shard

ZOO = "zoo:savos-chewing-gum"


@pytest.fixture()
def shard(cg_savos: Path, tmp_path: Path) -> Path:
    """A private copy of a valid Chewing Gum shard (3 videos) to damage."""
    return Path(shutil.copy(cg_savos / "test-00000.h5", tmp_path / "test-00000.h5"))


def _replace(f: h5py.File, name: str, group: bool) -> None:
    del f[name]
    if group:
        f.create_group(name)
    else:
        f.create_dataset(name, data=np.zeros(3))


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda f: f.attrs.__setitem__("schema_version", "1"), "'schema_version' must be an integer"),
        (lambda f: f.attrs.__setitem__("schema_version", np.array([1, 1])), "'schema_version' must be an"),
        (lambda f: f.attrs.__setitem__("provenance", "not json {"), "'provenance' is not valid JSON"),
        (lambda f: _replace(f, "videos", group=False), "'/videos' must be a group"),
        (lambda f: _replace(f, "videos/000000/frames", group=True), "'frames' must be a dataset"),
    ],
)
def test_shard_attributes_and_members_of_the_wrong_type(shard: Path, capsys: pytest.CaptureFixture[str],
                                                        damage, needle: str) -> None:
    with h5py.File(shard, "a") as f:
        damage(f)
    before = snapshot(shard)
    for args in (["info", str(shard)], ["evaluate", "--model", "convex", "--data", str(shard)],
                 ["show", str(shard), "--out", str(shard.with_suffix(".png"))]):
        code, _, err = run(capsys, *args)
        assert_one_line_error(code, err, str(shard), needle)
    assert snapshot(shard) == before


def test_tiny_shard_declaring_huge_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    huge = declared_shard(tmp_path / "huge.h5", 3, 40000, 40000)
    hollow = declared_shard(tmp_path / "hollow.h5", 3, 4000, 4000)
    assert huge.stat().st_size < 120_000 and hollow.stat().st_size < 120_000
    before = snapshot(tmp_path)
    code, _, err = run(capsys, "info", str(huge))
    assert_one_line_error(code, err, "huge.h5", "40000x40000", "over the limit")
    code, _, err = run(capsys, "info", str(hollow))
    assert_one_line_error(code, err, "hollow.h5", "the file holds 0 bytes")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("option", "needle"),
    [(["--seed", "-1"], "--seed must be an integer from 0"), (["--height", "100000"], "--height/--width"),
     (["--width", "100000"], "--height/--width"), (["--frames", "100000"], "--frames must be between"),
     (["--train", "100000000000"], "split sizes")],
)
def test_generator_options_are_bounded(tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str],
                                       needle: str) -> None:
    code, _, err = run(capsys, "gen-chewing-gum", str(tmp_path / "cg"), *option, "--quiet")
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "cg").exists()


def test_generator_rerun_over_a_shard_with_bad_provenance(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    args = ["gen-chewing-gum", str(tmp_path / "cg"), "--preset", "savos2022", "--train", "0", "--val", "0",
            "--test", "2", "--quiet"]
    assert run(capsys, *args)[0] == 0
    shard = tmp_path / "cg" / "test-00000.h5"
    good = shard.read_bytes()
    with h5py.File(shard, "a") as f:
        f.attrs["provenance"] = "{{{"
    code, _, err = run(capsys, *args)
    assert code == 0, err
    assert shard.read_bytes() == good


def test_show_scale_is_bounded(cg_savos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for out in ("a.png", "a.gif"):
        code, _, err = run(capsys, "show", str(cg_savos / "test-00000.h5"), "--scale", "100000",
                           "--out", str(tmp_path / out))
        assert_one_line_error(code, err, out, "lower --scale or --frames")
    assert not list(tmp_path.iterdir())


def test_flow_inspect_of_a_huge_png_header(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = forged_png(tmp_path / "bomb.png", 25000, 25000, bit_depth=16)
    before = snapshot(png)
    code, _, err = run(capsys, "flow", "--inspect", str(png))
    assert_one_line_error(code, err, "bomb.png", "over the limit")
    assert snapshot(png) == before


@pytest.mark.parametrize(
    ("options", "needle"),
    [(["--window", "-5"], "--window must be 0"), (["--tta", "--tta-lr", "nan"], "--tta-lr must be"),
     (["--tta", "--tta-max-iters", "-1"], "--tta-max-iters must be at least 1"),
     (["--tta", "--tta-max-iters", "0"], "--tta-max-iters must be at least 1")],
)
def test_evaluate_options_are_refused_before_scoring(cg_savos: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str], options: list[str],
                                                     needle: str) -> None:
    code, out, err = run(capsys, "evaluate", "--model", ZOO, "--data", str(cg_savos / "test-00000.h5"),
                         "--json", str(tmp_path / "r.json"), "--quiet", *options)
    assert_one_line_error(code, err, needle)
    assert "frame-level" not in out and not (tmp_path / "r.json").exists()


def test_the_same_shard_twice_is_scored_once(cg_savos: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    one, twice = tmp_path / "one.json", tmp_path / "twice.json"
    shard = cg_savos / "test-00000.h5"
    assert run(capsys, "evaluate", "--model", "convex", "--data", str(shard), "--json", str(one),
               "--quiet")[0] == 0
    link = tmp_path / "alias.h5"
    link.symlink_to(shard)
    assert run(capsys, "evaluate", "--model", "convex", "--data", str(shard), "--data", str(link),
               "--data", str(cg_savos / "test-0000[0].h5"), "--json", str(twice), "--quiet")[0] == 0
    a, b = json.loads(one.read_text()), json.loads(twice.read_text())
    assert a["n_videos"] == b["n_videos"] == 3 and a["n_object_frames"] == b["n_object_frames"]
    assert len(b["shards"]) == 1


def _savos_config(**change: object) -> dict:
    from amodalkit.models.savos.config import SavosConfig

    return {**asdict(SavosConfig(crop_size=(8, 8), channels=(4, 4, 4), hidden=8)), **change}


def _nan_checkpoint(path: Path) -> Path:
    from amodalkit.models.savos.config import SavosConfig
    from amodalkit.models.savos.net import SavosNet, save_savos

    net = SavosNet(SavosConfig(crop_size=(8, 8), channels=(4, 4, 4), hidden=8))
    with torch.no_grad():
        next(net.parameters()).fill_(float("nan"))
    return save_savos(path, net)


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda p: raw_checkpoint(p, {}, meta={"format_version": "abc"}), "'format_version' must be an"),
        (lambda p: raw_checkpoint(p, _savos_config(crop_size="abc")), "invalid SaVos config"),
        (lambda p: raw_checkpoint(p, _savos_config(hidden=4000, channels=[4000] * 3)),
         "config does not match the weights"),
        (lambda p: raw_checkpoint(p, _savos_config(hidden=100000)), "at most 4096"),
        (_nan_checkpoint, "holds NaN or infinite values"),
    ],
)
def test_bad_checkpoints(cg_savos: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make,
                         needle: str) -> None:
    ck = make(tmp_path / "m.safetensors")
    before = snapshot(ck)
    code, _, err = run(capsys, "evaluate", "--model", "savos", "--checkpoint", str(ck), "--data",
                       str(cg_savos / "test-00000.h5"), "--quiet")
    assert_one_line_error(code, err, str(ck), needle)
    assert snapshot(ck) == before


def test_info_counts_only_videos_with_flow_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from amodalkit.io.shards import Video

    t, h, w = 1, 6, 7
    video = Video(name="still", frames=np.zeros((t, h, w, 3), np.uint8),
                  visible_ids=np.zeros((t, h, w), np.uint16),
                  amodal=np.zeros((0, t, h, w), bool), amodal_annotated=np.zeros((0, t), bool),
                  presence=np.zeros((0, t), bool), track_ids=np.zeros(0, np.int64),
                  source_frame_ids=np.array(["0"], dtype=object), flow=np.zeros((0, h, w, 2), np.float16),
                  flow_backward=np.zeros((0, h, w, 2), np.float16), flow_backend="dis")
    path = write_shard(tmp_path / "still.h5", [video])
    code, out, err = run(capsys, "info", str(path))
    assert code == 0, err
    assert "flow                  0/1 videos (none), 1 single-frame" in out
    with ShardReader(path) as r:
        assert r.meta(0)["num_frames"] == 1
