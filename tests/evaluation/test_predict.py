"""`amodalkit predict`: amodal predictions written as PNGs, COCO JSON or shards, without ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run
from pycocotools.coco import COCO

from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import write_shard


def _predict(capsys: pytest.CaptureFixture[str], data: Path, out: Path, *flags: str) -> tuple[int, str, str]:
    return run(capsys, "predict", *flags, "--data", str(data), "--out", str(out), "--quiet")


@pytest.fixture(scope="module")
def unlabelled(cg_savos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first test shard with its amodal ground truth removed (as `tracks` writes shards)."""
    out = tmp_path_factory.mktemp("unlabelled") / "clip-00000.h5"
    with ShardReader(cg_savos / "test-00000.h5") as reader:
        videos = [reader.read_video(i) for i in range(2)]
    videos = [v.evolve(amodal=np.zeros_like(v.amodal), amodal_annotated=np.zeros_like(v.amodal_annotated))
              for v in videos]
    write_shard(out, videos, {"writer": "test"})
    return out


def test_png_per_object_and_frame(unlabelled: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "png"
    code, stdout, err = _predict(capsys, unlabelled, out, "--model", "convex")
    assert code == 0, err
    with ShardReader(unlabelled) as reader:
        video = reader.read_video(0)
    folder = out / "clip-00000" / video.name
    pngs = sorted(folder.glob("*.png"))
    visible = video.visible_masks()
    expected = int((video.presence & visible.any(axis=(-2, -1))).sum())
    assert len(pngs) == expected and json.loads((folder / "objects.json").read_text())["video"] == video.name
    k, t = 0, int(np.flatnonzero(visible[0].any(axis=(-2, -1)))[0])
    img = cv2.imread(str(folder / f"{t:05d}_obj{k:03d}.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint8 and img.shape == video.size
    assert (img[visible[k, t]] == 255).all()
    before = {p: p.stat().st_mtime_ns for p in pngs}
    code, stdout, err = _predict(capsys, unlabelled, out, "--model", "convex")
    assert code == 0 and "0 videos" in stdout
    assert {p: p.stat().st_mtime_ns for p in pngs} == before


def test_coco_file_loads_and_scores_rank(unlabelled: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "coco"
    code, _, err = _predict(capsys, unlabelled, out, "--model", "zoo:savos-chewing-gum", "--format", "coco")
    assert code == 0, err
    coco = COCO(str(out / "predictions.json"))
    anns = coco.loadAnns(coco.getAnnIds())
    assert anns and len(coco.getImgIds()) > 0
    scores = [a["score"] for a in anns]
    assert all(0.5 < s <= 1.0 for s in scores) and len(set(scores)) > 1
    mask = coco.annToMask(anns[0])
    assert mask.shape == (coco.imgs[anns[0]["image_id"]]["height"], coco.imgs[anns[0]["image_id"]]["width"])


def test_shard_format_feeds_show(unlabelled: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "shards"
    code, _, err = _predict(capsys, unlabelled, out, "--model", "convex", "--format", "shard")
    assert code == 0, err
    with ShardReader(out / unlabelled.name) as reader:
        video = reader.read_video(0)
    assert video.pred_amodal is not None and video.pred_amodal.shape == video.amodal.shape
    assert (video.pred_amodal[video.visible_masks()] == 255).all()
    code, _, err = run(capsys, "show", str(out / unlabelled.name), "--out", str(tmp_path / "v.png"))
    assert code == 0, err


def test_bad_predict_options(unlabelled: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _predict(capsys, unlabelled, tmp_path / "x", "--model", "savos")
    assert_one_line_error(code, err, "--model savos needs --checkpoint")
    code, _, err = _predict(capsys, unlabelled, unlabelled.parent, "--model", "convex")
    assert_one_line_error(code, err, "--out")


def test_export_coco_writes_predictions_without_ground_truth(unlabelled: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    code, _, err = run(capsys, "export-coco", str(unlabelled), "--out", str(gt), "--model", "convex",
                       "--pred-out", str(pred), "--quiet")
    assert code == 0, err
    truth, results = json.loads(gt.read_text()), json.loads(pred.read_text())
    assert truth["annotations"] == [] and truth["images"] and results
    assert all(r["annotation_id"] is None for r in results)
    code, _, err = run(capsys, "export-coco", str(unlabelled), "--out", str(tmp_path / "g2.json"), "--quiet")
    assert_one_line_error(code, err, "give --model to export predictions")
