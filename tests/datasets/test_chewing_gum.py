from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from amodalkit.datasets import chewing_gum as cg
from amodalkit.errors import AmodalkitError
from amodalkit.io.shard_read import ShardReader
from amodalkit.ops.masks import never_visible_pixels

ARRAY_FIELDS = ("frames", "visible_ids", "amodal", "flow", "flow_backward")


def savos_video(i: int):
    return cg.generate_video(cg.make_config("savos2022"), cg.video_seed(0, "test", i))


def test_vertex_pool_is_the_official_44_circle_pixels() -> None:
    pool = cg._circle_pixels(8)
    assert len(pool) == 44
    assert np.all(np.abs(np.hypot(pool[:, 0], pool[:, 1]) - 8) < 1)


@pytest.mark.parametrize("preset", ["savos2022", "default"])
def test_every_object_pixel_is_visible_in_some_frame(preset: str) -> None:
    cfg = cg.make_config(preset)
    for i in range(8):
        v = cg.generate_video(cfg, cg.video_seed(3, "train", i))
        vis = v.visible_masks()
        for k in range(v.num_objects):
            assert never_visible_pixels(v.amodal[k], vis[k])[0] == 0
        assert not (vis.sum(axis=0) > 1).any()
        assert np.array_equal(vis, vis & v.amodal)


def test_savos2022_geometry() -> None:
    for i in range(6):
        v = savos_video(i)
        assert v.frames.shape == (40, 50, 56, 3)
        assert v.num_objects == 2
        # object 0 static, object 1 moves 2 px per frame on a square around it
        a0 = v.amodal[0]
        assert all(np.array_equal(a0[0], a0[t]) for t in range(40))
        centres = [np.argwhere(v.amodal[1, t]).min(axis=0) for t in range(40)]
        steps = np.abs(np.diff(np.array(centres), axis=0)).sum(axis=1)
        assert set(steps.tolist()) <= {2}
        ys, xs = np.nonzero(a0.any(axis=0))
        assert ys.max() - ys.min() <= 16 and xs.max() - xs.min() <= 16


def test_savos2022_texture_square_is_not_an_occluder() -> None:
    found = 0
    for i in range(10):
        v = savos_video(i)
        bottom = v.provenance["depth_order"][0]
        colours = {tuple(c) for c in v.frames[0][v.visible_masks()[bottom, 0]]}
        found += len(colours) > 1  # the square paints part of the bottom object
        # the visible mask is the amodal mask minus the top object only
        top = 1 - bottom
        expected = v.amodal[bottom] & ~v.amodal[top]
        np.testing.assert_array_equal(v.visible_masks()[bottom], expected)
    assert found >= 5


@pytest.mark.parametrize("preset", ["savos2022", "default"])
def test_exact_flow_moves_each_visible_pixel_to_its_next_position(preset: str) -> None:
    v = cg.generate_video(cg.make_config(preset), cg.video_seed(5, "val", 0))
    vis = v.visible_masks()
    for t in range(v.num_frames - 1):
        for k in range(v.num_objects):
            ys, xs = np.nonzero(vis[k, t])
            if ys.size == 0:
                continue
            u = v.flow[t, ys, xs].astype(int)
            assert (u == u[0]).all()
            ny, nx = ys + u[:, 1], xs + u[:, 0]
            assert v.amodal[k, t + 1, ny, nx].all()
        np.testing.assert_array_equal(v.flow_backward[t][vis[:, t + 1].any(0)] * -1 == 0,
                                      v.flow_backward[t][vis[:, t + 1].any(0)] == 0)


def test_same_seed_same_bytes_across_jobs(tmp_path: Path) -> None:
    cfg = cg.make_config("savos2022")
    splits = {"train": 4, "val": 1, "test": 3}
    a = cg.generate_dataset(tmp_path / "a", cfg, splits, seed=7, videos_per_shard=2, jobs=1, quiet=True)
    b = cg.generate_dataset(tmp_path / "b", cfg, splits, seed=7, videos_per_shard=2, jobs=2, quiet=True)
    assert [p.name for p in a] == ["train-00000.h5", "train-00001.h5", "val-00000.h5",
                                   "test-00000.h5", "test-00001.h5"]
    for pa, pb in zip(a, b):
        assert pa.read_bytes() == pb.read_bytes()
    c = cg.generate_dataset(tmp_path / "c", cfg, splits, seed=8, videos_per_shard=2, quiet=True)
    assert c[0].read_bytes() != a[0].read_bytes()


def test_test_split_does_not_depend_on_train_size(tmp_path: Path) -> None:
    cfg = cg.make_config("savos2022")
    a = cg.generate_dataset(tmp_path / "a", cfg, {"train": 0, "test": 2}, seed=1, quiet=True)
    b = cg.generate_dataset(tmp_path / "b", cfg, {"train": 3, "test": 2}, seed=1, quiet=True)
    assert a[-1].read_bytes() == b[-1].read_bytes()


def test_rerun_skips_complete_shards_and_rebuilds_missing(tmp_path: Path) -> None:
    cfg = cg.make_config("savos2022")
    splits = {"train": 0, "val": 0, "test": 4}
    paths = cg.generate_dataset(tmp_path, cfg, splits, seed=2, videos_per_shard=2, quiet=True)
    first = paths[0].stat().st_mtime_ns
    original = paths[1].read_bytes()
    paths[1].unlink()
    (tmp_path / ".test-00009.tmp-123.h5").write_bytes(b"half")
    cg.generate_dataset(tmp_path, cfg, splits, seed=2, videos_per_shard=2, quiet=True)
    assert paths[0].stat().st_mtime_ns == first
    assert paths[1].read_bytes() == original
    assert not list(tmp_path.glob(".*tmp*"))


def test_rerun_with_other_settings_is_refused(tmp_path: Path) -> None:
    cfg = cg.make_config("savos2022")
    cg.generate_dataset(tmp_path, cfg, {"test": 1}, seed=2, quiet=True)
    with pytest.raises(AmodalkitError, match=r"other settings.*differ: seed\)"):
        cg.generate_dataset(tmp_path, cfg, {"test": 1}, seed=3, quiet=True)


def test_invalid_configs() -> None:
    with pytest.raises(AmodalkitError, match="unknown preset"):
        cg.make_config("nope")
    with pytest.raises(AmodalkitError, match="exactly 2 objects"):
        cg.make_config("savos2022", objects=3)
    with pytest.raises(AmodalkitError, match="--frames"):
        cg.make_config("default", frames=1)
    with pytest.raises(AmodalkitError, match="--height"):
        cg.make_config("default", height=10)


def test_killed_generation_leaves_only_whole_shards(tmp_path: Path) -> None:
    out = tmp_path / "cg"
    cmd = [sys.executable, "-m", "amodalkit", "gen-chewing-gum", str(out), "--preset", "savos2022",
           "--train", "60", "--val", "0", "--test", "0", "--videos-per-shard", "10", "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not list(out.glob("train-*.h5")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for p in out.glob("train-*.h5"):
        assert len(ShardReader(p)) == 10
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shards = sorted(out.glob("train-*.h5"))
    assert len(shards) == 6
    assert not list(out.glob(".*tmp*"))
    ref = cg.generate_dataset(tmp_path / "ref", cg.make_config("savos2022"),
                              {"train": 60, "val": 0, "test": 0}, seed=0, videos_per_shard=10, quiet=True)
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(shards, ref))


def _reference_paste(template: np.ndarray, centre: np.ndarray, radius: int,
                     size: tuple[int, int]) -> np.ndarray:
    """The first release's template placement (before issue 17), kept to pin the arrays."""
    h, w = size
    out = np.zeros(size, bool)
    x0, y0 = int(centre[0]) - radius, int(centre[1]) - radius
    ys, xs = max(0, -y0), max(0, -x0)
    ye, xe = min(template.shape[0], h - y0), min(template.shape[1], w - x0)
    if ye > ys and xe > xs:
        out[y0 + ys:y0 + ye, x0 + xs:x0 + xe] = template[ys:ye, xs:xe]
    return out


def _reference_render(scene: cg.Scene, cfg: cg.ChewingGumConfig) -> tuple[np.ndarray, ...]:
    """The first release's renderer: frames, visible ids, amodal masks, forward and backward flow."""
    size = (cfg.height, cfg.width)
    k, t = scene.paths.shape[:2]
    amodal = np.zeros((k, t, *size), bool)
    for i in range(k):
        for f in range(t):
            amodal[i, f] = _reference_paste(scene.templates[i], scene.paths[i, f], scene.radii[i], size)
    frames = np.empty((t, *size, 3), np.uint8)
    frames[:] = scene.background.astype(np.uint8)
    visible_ids = np.zeros((t, *size), np.uint16)
    owner = np.full((t, *size), -1, np.int64)
    for depth, i in enumerate(scene.order):
        frames[amodal[i]] = scene.colours[i].astype(np.uint8)
        visible_ids[amodal[i]] = i + 1
        owner[amodal[i]] = i
        if depth == 0 and scene.texture is not None:
            offset, colour = scene.texture
            for f in range(t):
                x0, y0 = scene.paths[i, f] + offset
                ys, xs = slice(max(y0, 0), max(y0 + 9, 0)), slice(max(x0, 0), max(x0 + 9, 0))
                frames[f, ys, xs] = colour.astype(np.uint8)
                owner[f, ys, xs] = i
    motion = np.concatenate([np.diff(scene.paths, axis=1), np.zeros((1, t - 1, 2), np.int64)], axis=0)
    fwd = motion[owner[:-1], np.arange(t - 1)[:, None, None]].astype(np.float16)
    bwd = (-motion[owner[1:], np.arange(t - 1)[:, None, None]]).astype(np.float16)
    return frames, visible_ids, amodal, fwd, bwd


def _reference_video(cfg: cg.ChewingGumConfig, seed: np.random.SeedSequence) -> tuple[dict, int]:
    """The first release's arrays of one video (redrawing as it did) and its attempt count."""
    rng = np.random.default_rng(seed)
    sample = cg._sample_savos2022 if cfg.preset == "savos2022" else cg._sample_default
    attempt = 0
    while True:
        attempt += 1
        arrays = _reference_render(sample(rng, cfg), cfg)
        amodal, visible_ids = arrays[2], arrays[1]
        if all(never_visible_pixels(amodal[i], visible_ids == i + 1)[0] == 0 for i in range(len(amodal))):
            return dict(zip(ARRAY_FIELDS, arrays)), attempt


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


SMALL_DEFAULT = {"frames": 10, "height": 36, "width": 44, "max_radius": 10}  # about 3 draws per video


@pytest.mark.parametrize(("preset", "overrides", "n"), [
    ("default", SMALL_DEFAULT, 300),
    ("default", {}, 10),
    ("savos2022", {}, 20),
    ("savos2022", {"frames": 12, "max_speed": 30}, 20),  # the mover leaves the canvas: clipped templates
], ids=["default-small", "default", "savos2022", "savos2022-clipped"])
def test_vectorised_renderer_draws_the_first_releases_arrays(preset: str, overrides: dict, n: int) -> None:
    cfg = cg.make_config(preset, **overrides)
    for i in range(n):
        seed = cg.video_seed(11, "train", i)
        v = cg.generate_video(cfg, seed)
        ref, attempts = _reference_video(cfg, seed)
        assert v.provenance["attempts"] == attempts, i
        for name in ARRAY_FIELDS:
            assert _same_bits(getattr(v, name), ref[name]), (i, name)


@pytest.mark.parametrize(("preset", "overrides", "split", "n", "digest"), [
    ("savos2022", {}, "test", 20, "bb0c4b021eb0a5b6d159349eec954f4d692ae2543ae5f99aa03222c1d1db362d"),
    ("default", SMALL_DEFAULT, "train", 300,
     "4d5ce155208839674b8f4191ff5e4fc6714c4e07fb4d40253f47b445497d7cc3"),
], ids=["savos2022", "default-small"])
def test_same_seed_gives_the_first_releases_arrays(preset: str, overrides: dict, split: str, n: int,
                                                   digest: str) -> None:
    """sha256 of every array of the videos, as the first release (before issue 17) drew them."""
    cfg = cg.make_config(preset, **overrides)
    h = hashlib.sha256()
    for i in range(n):
        v = cg.generate_video(cfg, cg.video_seed(0, split, i))
        for name in ARRAY_FIELDS:
            a = getattr(v, name)
            h.update(f"{name}{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    assert h.hexdigest() == digest
