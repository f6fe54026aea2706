"""import-chewing-gum on videos written in the official generator's format (PNG + per-frame pickle)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from amodalkit.datasets import chewing_gum as cg
from amodalkit.datasets.chewing_gum_import import OFFICIAL_CENTRE, import_chewing_gum, read_official_video
from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import evaluate_method
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import write_shard
from amodalkit.models.registry import build_method
from tests.cli_helpers import assert_one_line_error, run

CFG = cg.make_config("savos2022")


def official_scene(seed: int) -> tuple[cg.Scene, list[np.ndarray]]:
    """A scene drawn the way the official generator draws one, with its polygons' canvas vertices."""
    rng = np.random.default_rng(seed)
    pool = cg._circle_pixels(8)
    templates, shapes, colours = [], [], []
    for _ in range(2):
        idx = np.sort(rng.choice(len(pool), size=int(rng.integers(7, 12)), replace=False))
        templates.append(cg.rasterize_polygon(pool[idx] + 8, (17, 17)))
        shapes.append(pool[idx] + OFFICIAL_CENTRE)
        colours.append(rng.integers(0, 256, size=3))
    cx, cy = CFG.width // 2, CFG.height // 2
    start = (int(rng.choice([cx - 8, cx + 8])), int(rng.choice([cy - 8, cy + 8])))
    paths = np.stack([np.tile([cx, cy], (CFG.frames, 1)), cg._square_path(start, CFG.frames, (cx, cy), 8, 2)])
    shift = rng.integers(0, 2, size=2) * 8
    scene = cg.Scene(templates, [8, 8], paths, np.array(colours), rng.integers(0, 128, size=3),
                     rng.permutation(2), (shift - 8, rng.integers(0, 256, size=3)))
    return scene, shapes


def write_official_video(folder: Path, scene: cg.Scene, shapes: list[np.ndarray]) -> cg.Video:
    """Write FFFFF.png + FFFFF.pkl as utils/gen_chewgum.py does; return our generator's video of the scene."""
    amodal, labels, _ = cg.scene_layers(scene, CFG)
    video = cg.scene_video(scene, amodal, labels, folder.name, {"generator": "chewing_gum"})
    folder.mkdir(parents=True)
    for f in range(CFG.frames):
        st = scene.paths[:, f] - 8
        cv2.imwrite(str(folder / f"{f:05d}.png"), cv2.cvtColor(video.frames[f], cv2.COLOR_RGB2BGR))
        note = {"order": scene.order, "shape": shapes, "color": list(scene.colours), "st": st, "end": st + 16,
                "img_obj": [video.frames[f, y:y + 16, x:x + 16] for x, y in st],
                "full_mask": amodal[:, f].astype(np.int64)}
        with open(folder / f"{f:05d}.pkl", "wb") as fh:
            pickle.dump(note, fh)
    return video


@pytest.fixture(scope="module")
def official(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[cg.Video]]:
    root = tmp_path_factory.mktemp("official") / "amodal_2objs_random_shape"
    videos = []
    for i in range(6):
        split = "train" if i < 2 else "test"
        scene, shapes = official_scene(i)
        videos.append(write_official_video(root / split / f"{i:05d}", scene, shapes))
    return root, videos


def test_imported_video_equals_our_generators_drawing(official) -> None:
    root, videos = official
    for video in videos[2:]:
        got = read_official_video(root / "test" / video.name)
        for field in ("frames", "visible_ids", "amodal", "flow", "flow_backward"):
            np.testing.assert_array_equal(getattr(got, field), getattr(video, field), err_msg=field)
        assert got.flow_backend == "exact"


def test_import_scores_exactly_what_the_generated_videos_score(official, tmp_path: Path) -> None:
    root, videos = official
    paths = import_chewing_gum(root, tmp_path / "out", videos_per_shard=3, quiet=True)
    assert [p.name for p in paths] == ["train-00000.h5", "test-00000.h5", "test-00001.h5"]
    with ShardReader(paths[0]) as r:
        assert r.video_names == ["00000", "00001"]
    ours = write_shard(tmp_path / "ours.h5", videos[2:], {"generator": "chewing_gum"})
    for model in ("convex", "temporal"):
        for protocol in ("strict", "official"):
            a = evaluate_method(build_method(model), paths[1:], quiet=True, protocol=protocol)
            b = evaluate_method(build_method(model), [ours], quiet=True, protocol=protocol)
            for key in ("frame_miou_full", "frame_miou_occluded", "object_miou_occluded"):
                assert a[key] == b[key], (model, protocol, key)
    before = paths[1].stat().st_mtime_ns
    import_chewing_gum(root, tmp_path / "out", videos_per_shard=3, quiet=True)  # complete shards are kept
    assert paths[1].stat().st_mtime_ns == before


def test_bad_official_files_are_refused_by_name(official, tmp_path: Path, capsys) -> None:
    root, _ = official
    scene, shapes = official_scene(11)
    folder = tmp_path / "src" / "test" / "00000"
    write_official_video(folder, scene, shapes)
    frame = cv2.imread(str(folder / "00003.png"))
    frame[0, 0] = 255 - frame[0, 0]
    cv2.imwrite(str(folder / "00003.png"), frame)
    with pytest.raises(AmodalkitError, match=r"not the official generator's drawing"):
        read_official_video(folder)
    (folder / "00004.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(AmodalkitError, match=r"00004\.pkl"):
        read_official_video(folder)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (folder / "00004.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(AmodalkitError, match="not allowed"):
        read_official_video(folder)
    assert not marker.exists()
    (folder / "00004.pkl").unlink()
    code, _, err = run(capsys, "import-chewing-gum", str(tmp_path / "src"), "--out", str(tmp_path / "o"),
                       "--quiet")
    assert_one_line_error(code, err, "00004.png", "no annotation")
    code, out, err = run(capsys, "import-chewing-gum", str(root), "--out", str(tmp_path / "ok"), "--quiet")
    assert code == 0, err
    assert "2 shards" in out  # train-00000 and test-00000 at 100 videos per shard
