from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from pycocotools import mask as coco_mask

from amodalkit.cli.app import main
from amodalkit.datasets.chewing_gum import generate_video, make_config, video_seed
from amodalkit.errors import AmodalkitError
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import write_shard
from amodalkit.io.shards import flow_for_storage, quantized_flow
from amodalkit.ops.masks import decode_compressed_rle
from amodalkit.preprocess.tracks.build import build_tracks_shard, list_frame_files, tracks_to_video
from amodalkit.preprocess.tracks.formats import (
    Instance,
    detect_format,
    read_mots_pngs,
    read_mots_txt,
    read_pointtrack_txt,
    read_tracks,
)
from amodalkit.preprocess.tracks.scores import score_linking
from amodalkit.preprocess.tracks.tracker import link_tracks

H, W, T = 24, 32, 6
CAR_A, CAR_B, PED, IGNORE = 1001, 1002, 2001, 10000


def box(y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def scene() -> list[list[tuple[int, int, np.ndarray]]]:
    """Per frame (id, class, mask): two cars (B missing in frame 2: a gap), a pedestrian, an ignore region."""
    frames = []
    for t in range(T):
        objs = [(CAR_A, 1, box(2, 2 + t, 8, 10 + t))]
        if t != 2:
            objs.append((CAR_B, 1, box(14, 20 - t, 20, 26 - t)))
        objs.append((PED, 2, box(10, 14, 13, 17)))
        if t % 2 == 0:
            objs.append((IGNORE, 10, box(20, 0, 24, 4)))
        frames.append(objs)
    return frames


def rle_string(mask: np.ndarray) -> str:
    return coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"].decode("ascii")


def write_txt(path: Path, frames: list[list[tuple[int, int, np.ndarray]]]) -> Path:
    """Exactly mots_tools' write_sequence: 'frame id class_id height width rle' per line."""
    with path.open("w") as f:
        for t, objs in enumerate(frames):
            for obj_id, cls, mask in objs:
                print(t, obj_id, cls, H, W, rle_string(mask), file=f)
    return path


def write_pngs(folder: Path, frames: list[list[tuple[int, int, np.ndarray]]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t, objs in enumerate(frames):
        img = np.zeros((H, W), np.uint16)
        for obj_id, _, mask in objs:
            img[mask] = obj_id
        assert cv2.imwrite(str(folder / f"{t:06d}.png"), img)
    return folder


def write_frames(folder: Path, n: int = T) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for t in range(n):
        assert cv2.imwrite(str(folder / f"{t:06d}.png"), rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
    return folder


def as_dict(frames: list[list[Instance]]) -> list[dict[int, tuple[int, np.ndarray]]]:
    return [{i.track_id: (i.class_id, i.mask) for i in insts} for insts in frames]


def expected(keep: set[int]) -> list[dict[int, tuple[int, np.ndarray]]]:
    return [{o: (c, m) for o, c, m in objs if c in keep} for objs in scene()]


def assert_same(got: list[list[Instance]], want: list[dict[int, tuple[int, np.ndarray]]]) -> None:
    got_d = as_dict(got)
    assert len(got_d) == len(want)
    for g, w in zip(got_d, want):
        assert sorted(g) == sorted(w)
        for k in w:
            assert g[k][0] == w[k][0]
            assert g[k][1].dtype == bool and np.array_equal(g[k][1], w[k][1])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9).flatmap(lambda h: st.integers(1, 9).flatmap(
    lambda w: arrays(bool, (h, w)))))
def test_compressed_rle_round_trip(mask: np.ndarray) -> None:
    h, w = mask.shape
    counts = rle_string(mask)
    assert np.array_equal(decode_compressed_rle(counts, h, w), mask)
    assert decode_compressed_rle(counts, h + 1, w) is None
    assert decode_compressed_rle(counts[:-1], h, w) is None or len(counts) == 1


@pytest.mark.parametrize("counts", ["", "garbage!!", "~~", "0"])
def test_compressed_rle_rejects_garbage(counts: str) -> None:
    assert decode_compressed_rle(counts, 4, 5) is None


@pytest.fixture()
def mots_txt(tmp_path: Path) -> Path:
    return write_txt(tmp_path / "0002.txt", scene())


def test_mots_txt_round_trip_and_ignore(mots_txt: Path) -> None:
    assert detect_format(mots_txt) == "mots"
    assert_same(read_mots_txt(mots_txt), expected({1, 2}))
    assert_same(read_mots_txt(mots_txt, classes={"car", "pedestrian", "ignore"}), expected({1, 2, 10}))


def test_class_filter(mots_txt: Path) -> None:
    assert_same(read_mots_txt(mots_txt, classes={"car"}), expected({1}))
    assert_same(read_mots_txt(mots_txt, classes=[2]), expected({2}))
    with pytest.raises(AmodalkitError, match="unknown class 'truck'"):
        read_mots_txt(mots_txt, classes={"truck"})


def test_png_round_trip_matches_txt(tmp_path: Path, mots_txt: Path) -> None:
    folder = write_pngs(tmp_path / "instances" / "0002", scene())
    img = cv2.imread(str(folder / "000000.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img.ndim == 2 and int(img.max()) == IGNORE
    assert detect_format(folder) == "png"
    assert_same(read_mots_pngs(folder), expected({1, 2}))
    assert_same(read_mots_pngs(folder, classes={"car"}), expected({1}))
    assert_same(read_tracks(folder)[0], as_dict(read_mots_txt(mots_txt)))
    only = read_mots_pngs(folder, frames={1, 2})
    assert [len(f) for f in only] == [0, 3, 2]


def test_pointtrack_ids_are_per_class_counters(tmp_path: Path) -> None:
    path = tmp_path / "0002.txt"
    with path.open("w") as f:  # PointTrack's export: cars and pedestrians count from 1 separately
        for t in range(3):
            print(t, 1, 1, H, W, rle_string(box(0, t, 5, 5 + t)), file=f)
            print(t, 2, 1, H, W, rle_string(box(10, 0, 15, 5)), file=f)
            print(t, 1, 2, H, W, rle_string(box(18, 20, 22, 24)), file=f)
    assert detect_format(path) == "pointtrack"
    tracks, fmt = read_tracks(path)
    assert fmt == "pointtrack"
    assert [(i.track_id, i.class_id) for i in tracks[0]] == [(1, 1), (2, 1), (1, 2)]
    assert [len(f) for f in read_pointtrack_txt(path, classes={"pedestrian"})] == [1, 1, 1]
    with pytest.raises(AmodalkitError, match=r"0002\.txt:1: id 1 does not encode class 1"):
        read_mots_txt(path)
    video = tracks_to_video("v", np.zeros((3, H, W, 3), np.uint8), tracks)
    assert video.track_ids.tolist() == [1, 2, 1]
    assert video.object_class.tolist() == [1, 1, 2]


@pytest.mark.parametrize(("line", "needle"), [
    ("1 1001 1 24 32", "expected 6 fields"),
    ("1 car 1 24 32 PPYo1", "must be integers"),
    ("1 1001 1 24 32 garbage!!", "invalid COCO compressed RLE"),
    ("1 1001 1 24 32 ", "expected 6 fields"),
    ("1 1001 1 12 32 PPYo1", "differs from the earlier lines"),
    ("0 1001 1 24 32 {rle}", "appears twice in frame 0"),
    ("1 5 1 24 32 {rle}", "does not encode class"),
])
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, needle: str) -> None:
    path = tmp_path / "bad.txt"
    rle = rle_string(box(0, 0, 3, 3))
    path.write_text(f"0 1001 1 24 32 {rle}\n\n{line.format(rle=rle)}\n")
    with pytest.raises(AmodalkitError, match=needle) as info:
        read_mots_txt(path)
    assert f"{path}:3:" in str(info.value)


def test_missing_inputs_are_clear(tmp_path: Path) -> None:
    with pytest.raises(AmodalkitError, match="does not exist"):
        read_tracks(tmp_path / "nope.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AmodalkitError, match="no instance PNGs"):
        read_mots_pngs(tmp_path / "empty")


def test_video_overlap_rule_presence_and_schema(tmp_path: Path) -> None:
    first, second = box(0, 0, 10, 10), box(5, 5, 15, 15)
    tracks = [[Instance(7, 1, first), Instance(3, 1, second)], [], [Instance(3, 1, second)], []]
    video = tracks_to_video("v", np.zeros((5, H, W, 3), np.uint8), tracks, provenance={"x": 1})
    assert video.track_ids.tolist() == [7, 3]
    vis = video.visible_masks()
    assert np.array_equal(vis[0, 0], first)  # the instance listed first keeps the shared pixels
    assert np.array_equal(vis[1, 0], second & ~first)
    assert not (vis.sum(0) > 1).any()
    assert video.presence.tolist() == [[True, False, False, False, False], [True, True, True, False, False]]
    assert not video.amodal.any() and not video.amodal_annotated.any()
    write_shard(tmp_path / "s.h5", [video])
    with ShardReader(tmp_path / "s.h5") as r:
        back = r.read_video(0)
    assert np.array_equal(back.visible_ids, video.visible_ids)
    with pytest.raises(AmodalkitError, match="does not match the frames"):
        tracks_to_video("v", np.zeros((1, H + 1, W, 3), np.uint8), tracks)


def shuffled(video, seed: int) -> list[list[Instance]]:
    """The video's ground-truth visible masks with fresh random ids and order in every frame."""
    rng = np.random.default_rng(seed)
    vis = video.visible_masks()
    return [[Instance(int(rng.integers(0, 10_000)), 0, vis[k, t]) for k in rng.permutation(video.num_objects)]
            for t in range(video.num_frames)]


@pytest.mark.parametrize(("preset", "use_flow", "min_clean"), [
    ("savos2022", True, 0.95), ("savos2022", False, 0.9), ("default", True, 0.85),
])
def test_tracker_links_chewing_gum(preset: str, use_flow: bool, min_clean: float) -> None:
    clean, fractions = 0, []
    for i in range(20):
        video = generate_video(make_config(preset), video_seed(0, "test", i))
        linked = link_tracks(shuffled(video, i), video.flow if use_flow else None)
        score = score_linking(video.visible_ids, linked)
        clean += score.identity_switches == 0
        fractions.append(score.correct_fraction)
    assert clean / 20 >= min_clean
    assert np.mean(fractions) >= 0.99


def test_tracker_gap_tolerance(mots_txt: Path) -> None:
    frames = read_mots_txt(mots_txt)
    gt = tracks_to_video("gt", np.zeros((T, H, W, 3), np.uint8), frames).visible_ids
    anonymous = [[i.mask for i in reversed(f)] for f in frames]  # ids dropped, order changed
    ok = score_linking(gt, link_tracks(anonymous, max_gap=1))
    assert (ok.identity_switches, ok.correct_fraction, ok.num_tracks, ok.num_gt_objects) == (0, 1.0, 3, 3)
    split = score_linking(gt, link_tracks(anonymous, max_gap=0))
    assert split.identity_switches == 1 and split.num_tracks == 4


def test_score_linking_counts_switches() -> None:
    a, b = box(0, 0, 5, 5), box(10, 10, 15, 15)
    gt = np.zeros((4, H, W), np.uint16)
    gt[:, a] = 1
    gt[:, b] = 2
    swapped = [[Instance(1, 0, a), Instance(2, 0, b)]] * 2 + [[Instance(2, 0, a), Instance(1, 0, b)]] * 2
    score = score_linking(gt, swapped)
    assert score.identity_switches == 2
    assert score.correct_fraction == 0.5
    assert score_linking(gt, [[Instance(1, 0, a), Instance(2, 0, b)]] * 4).identity_switches == 0


def test_cli_builds_shard_from_mots(tmp_path: Path, mots_txt: Path, capsys) -> None:
    frames = write_frames(tmp_path / "image_02" / "0002")
    out = tmp_path / "out" / "tracks.h5"
    code = main(["tracks", "--mots", str(mots_txt), "--frames", str(frames / "*.png"), "--out", str(out),
                 "--class", "car", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert "2 tracks" in capsys.readouterr().out
    with ShardReader(out) as r:
        video = r.read_video(0)
        assert r.video_names == ["0002"]
        assert r.provenance["format"] == "mots"
    assert video.track_ids.tolist() == [CAR_A, CAR_B]
    assert video.object_class.tolist() == [1, 1]
    assert video.presence.all()  # car B's gap (frame 2) is inside its span
    assert video.source_frame_ids[0] == "0002/000000.png"
    assert np.array_equal(video.frames[0], cv2.imread(str(frames / "000000.png"))[..., ::-1])
    assert np.array_equal(video.visible_masks()[0, 3], box(2, 5, 8, 13))


def test_cli_builtin_tracker_on_pngs(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(1)
    relabelled = [[(1000 * c + int(new), c, m) for (_, c, m), new in zip(objs, rng.permutation(998) + 1)]
                  for objs in scene()]
    masks = write_pngs(tmp_path / "masks", relabelled)
    frames = write_frames(tmp_path / "frames")
    out = tmp_path / "linked.h5"
    code = main(["tracks", "--tracker", "builtin", "--masks", str(masks), "--frames", str(frames),
                 "--out", str(out), "--name", "clip", "--quiet"])
    assert code == 0, capsys.readouterr().err
    with ShardReader(out) as r:
        video = r.read_video(0)
        assert r.provenance["tracker_config"]["max_gap"] == 3
    assert video.name == "clip" and video.num_objects == 3
    gt_tracks = read_mots_txt(write_txt(tmp_path / "gt.txt", scene()))
    gt = tracks_to_video("gt", video.frames, gt_tracks).visible_ids
    linked = [[Instance(k + 1, 0, video.visible_ids[t] == k + 1) for k in range(3)
               if (video.visible_ids[t] == k + 1).any()] for t in range(T)]
    assert score_linking(gt, linked).identity_switches == 0


def test_cli_flow_dis_is_stored(tmp_path: Path, mots_txt: Path, capsys) -> None:
    frames = write_frames(tmp_path / "f")
    out = tmp_path / "flow.h5"
    code = main(["tracks", "--mots", str(mots_txt), "--tracker", "builtin", "--flow", "dis",
                 "--frames", str(frames), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    with ShardReader(out) as r:
        assert {"flow", "flow_backward"} <= set(r.meta(0)["fields"])
        assert r.meta(0)["flow_backend"].startswith("dis")


def test_cli_flow_checkpoint_and_device_reach_the_backend(tmp_path: Path, mots_txt: Path, capsys,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from amodalkit.preprocess.flow import backends

    asked = []

    def fake(name: str, checkpoint=None, device: str = "cpu", checkpoint_option: str = "--checkpoint"):
        asked.append((name, checkpoint, device, checkpoint_option))
        return backends.DISBackend()

    monkeypatch.setattr(backends, "get_flow_backend", fake)
    frames = write_frames(tmp_path / "f")
    weights = tmp_path / "FlowNet2_checkpoint.pth.tar"
    out = tmp_path / "flow.h5"
    code = main(["tracks", "--mots", str(mots_txt), "--frames", str(frames), "--out", str(out), "--quiet",
                 "--flow", "flownet2", "--flow-checkpoint", str(weights), "--device", "cuda:1"])
    assert code == 0, capsys.readouterr().err
    assert asked == [("flownet2", str(weights), "cuda:1", "--flow-checkpoint")]
    with ShardReader(out) as r:
        video = r.read_video(0)
    dis = backends.DISBackend()
    np.testing.assert_array_equal(video.flow, quantized_flow(flow_for_storage(dis.compute(video.frames))))
    np.testing.assert_array_equal(video.flow_backward,
                                  quantized_flow(flow_for_storage(dis.compute_backward(video.frames))))


def test_cli_flownet2_without_weights_is_one_line_error(tmp_path: Path, mots_txt: Path, capsys) -> None:
    from cli_helpers import assert_one_line_error, run

    frames = write_frames(tmp_path / "f")
    out = tmp_path / "flow.h5"
    args = ["tracks", "--mots", str(mots_txt), "--frames", str(frames), "--out", str(out), "--quiet"]
    code, _, err = run(capsys, *args, "--flow", "flownet2")
    assert_one_line_error(code, err, "needs --flow-checkpoint FlowNet2_checkpoint.pth.tar")
    missing = tmp_path / "FlowNet2_checkpoint.pth.tar"
    code, _, err = run(capsys, *args, "--flow", "flownet2", "--flow-checkpoint", str(missing),
                       "--device", "cpu")
    assert_one_line_error(code, err, str(missing), "not found")
    code, _, err = run(capsys, *args, "--flow-checkpoint", str(missing))
    assert_one_line_error(code, err, "--flow-checkpoint holds the weights of --flow")
    code, _, err = run(capsys, *args, "--flow", "dis", "--flow-checkpoint", str(missing))
    assert_one_line_error(code, err, "drop --flow-checkpoint")
    code, _, err = run(capsys, *args, "--flow", "dis", "--device", "tpu")
    assert_one_line_error(code, err, "--device must be auto, cpu, cuda or cuda:N")
    assert not out.exists()


def test_cli_malformed_line_is_one_line_error(tmp_path: Path, mots_txt: Path, capsys) -> None:
    with mots_txt.open("a") as f:
        f.write("7 1003 1 24 32\n")
    frames = write_frames(tmp_path / "frames")
    code = main(["tracks", "--mots", str(mots_txt), "--frames", str(frames / "*.png"),
                 "--out", str(tmp_path / "x.h5")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1
    n_lines = len(mots_txt.read_text().splitlines())
    assert lines[0].startswith("error: ") and f"0002.txt:{n_lines}:" in lines[0]
    assert not (tmp_path / "x.h5").exists()


def test_cli_option_errors(tmp_path: Path, mots_txt: Path, capsys) -> None:
    frames = write_frames(tmp_path / "frames")
    code = main(["tracks", "--frames", str(frames), "--out", str(tmp_path / "x.h5")])
    assert code == 2 and "exactly one of --mots" in capsys.readouterr().err
    code = main(["tracks", "--mots", str(mots_txt), "--frames", str(tmp_path / "none/*.png"),
                 "--out", str(tmp_path / "x.h5")])
    assert code == 2 and "no frame images match" in capsys.readouterr().err
    with pytest.raises(AmodalkitError, match="--masks needs --tracker builtin"):
        build_tracks_shard(tmp_path / "x.h5", str(frames), masks=mots_txt, tracker="file")


def rle_of_runs(runs: list[int]) -> str:
    """COCO compressed RLE string of run lengths (pycocotools' rleToString)."""
    out = []
    for i, run_length in enumerate(runs):
        x = run_length - runs[i - 2] if i > 2 else run_length
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


@pytest.mark.parametrize(("h", "w", "needle"), [(60000, 60000, "does not match the frames' 24x32"),
                                                 (24, 33, "does not match the frames' 24x32")])
def test_cli_declared_mask_size_is_checked_before_decoding(tmp_path: Path, capsys, h: int, w: int,
                                                           needle: str) -> None:
    import resource

    from bad_files import snapshot
    from cli_helpers import assert_one_line_error, run

    mots = tmp_path / "0002.txt"
    mots.write_text(f"0 1001 1 {h} {w} {rle_of_runs([h * w])}\n")  # a valid all-background RLE
    frames = write_frames(tmp_path / "frames")
    before = snapshot(mots, frames)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, _, err = run(capsys, "tracks", "--mots", str(mots), "--frames", str(frames / "*.png"),
                       "--out", str(tmp_path / "x.h5"))
    assert_one_line_error(code, err, "0002.txt:1", needle)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000
    assert snapshot(mots, frames) == before and not (tmp_path / "x.h5").exists()


def test_declared_mask_size_has_a_limit_without_frames(tmp_path: Path) -> None:
    mots = tmp_path / "0002.txt"
    mots.write_text(f"0 1001 1 60000 60000 {rle_of_runs([60000 * 60000])}\n")
    assert rle_of_runs([24 * 32]) == rle_string(np.zeros((24, 32), bool))
    with pytest.raises(AmodalkitError, match="over the limit") as err:
        read_mots_txt(mots)
    assert f"{mots}:1" in str(err.value)


def test_frame_files_are_listed_in_natural_order(tmp_path: Path) -> None:
    """frame2 before frame10, for a folder and a glob alike (a plain sort put frame10 first)."""
    for name in ("frame10.png", "frame2.png", "frame1.png"):
        (tmp_path / name).write_bytes(b"")
    expected = ["frame1.png", "frame2.png", "frame10.png"]
    assert [p.name for p in list_frame_files(tmp_path)] == expected
    assert [p.name for p in list_frame_files(str(tmp_path / "*.png"))] == expected
