"""The README's "your own video" block, run as written on frames and instance masks made here."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import run
from pycocotools.coco import COCO

from amodalkit.datasets.chewing_gum import generate_video, make_config, video_seed
from amodalkit.io.shard_read import ShardReader

README = Path(__file__).resolve().parents[1] / "README.md"


def walkthrough_commands() -> list[list[str]]:
    """The `amodalkit` lines of the bash block under "### Your own video"."""
    text = README.read_text()
    section = text[text.index("### Your own video"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line)[1:] for line in block.splitlines() if line.startswith("amodalkit ")]


def test_your_own_video(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    video = generate_video(make_config("savos2022"), video_seed(7, "test", 0))
    frames, masks = tmp_path / "myvideo" / "frames", tmp_path / "myvideo" / "masks"
    frames.mkdir(parents=True)
    masks.mkdir()
    for t in range(video.num_frames):
        cv2.imwrite(str(frames / f"{t:06d}.png"), video.frames[t][..., ::-1])
        ids = video.visible_ids[t].astype(np.uint16)
        cv2.imwrite(str(masks / f"{t:06d}.png"), np.where(ids > 0, 1000 + ids, 0).astype(np.uint16))
    monkeypatch.chdir(tmp_path)
    commands = walkthrough_commands()
    assert [c[0] for c in commands] == ["tracks", "predict", "show", "predict", "predict"]
    for args in commands:
        code, _, err = run(capsys, *args)
        assert code == 0, (args, err)
    with ShardReader(tmp_path / "myvideo" / "pred" / "clip.h5") as reader:
        pred = reader.read_video(0)
    assert pred.num_objects == video.num_objects and pred.flow is not None and pred.pred_amodal is not None
    assert (tmp_path / "myvideo" / "clip.gif").stat().st_size > 0
    pngs = list((tmp_path / "myvideo" / "png").rglob("*.png"))
    assert len(pngs) == int((video.presence & video.visible_masks().any(axis=(-2, -1))).sum())
    coco = COCO(str(tmp_path / "myvideo" / "coco" / "predictions.json"))
    assert len(coco.getAnnIds()) == len(pngs)
    objects = json.loads(next((tmp_path / "myvideo" / "png").rglob("objects.json")).read_text())
    assert len(objects["track_ids"]) == video.num_objects
