from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run
from dataset_fixtures import DRIVES, UNMAPPED, WRONG_OTHER_DRIVE, WRONG_RECOVERABLE, KittiWorld, scene_masks
from pycocotools.coco import COCO

from amodalkit.cli.app import main
from amodalkit.datasets import kins_video, kins_video_drive, kins_video_plan
from amodalkit.datasets.kins_video import build_kins_video
from amodalkit.datasets.kins_video_drive import pair_objects
from amodalkit.datasets.kins_video_plan import BuildConfig, assign_splits, clip_window, group_windows
from amodalkit.errors import AmodalkitError
from amodalkit.execution import run_on_devices, run_tasks, worker_device, worker_devices
from amodalkit.io.shard_read import ShardReader, iter_videos


def build_args(world: KittiWorld, out: Path, *extra: str) -> list[str]:
    return ["build-kins-video", "--kitti-raw", str(world.raw), "--kitti-devkit", str(world.devkit),
            "--kitti-object", str(world.object), "--kins-json", str(world.kins_2020), "--out", str(out),
            "--context", "3", "--tracks", f"pointtrack:{world.pointtrack}", "--quiet", *extra]


@pytest.fixture(scope="module")
def built(kitti_world: KittiWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("kins_video") / "out"
    assert main(build_args(kitti_world, out)) == 0
    return out


def test_splits_are_by_drive(built: Path) -> None:
    splits = json.loads((built / "splits.json").read_text())
    drives = [d for s in ("train", "val", "test") for d in splits[s]]
    assert sorted(drives) == sorted(d for _, d in DRIVES)
    assert len(set(drives)) == len(drives)
    assert all(splits[s] for s in ("train", "val", "test"))
    for s in ("train", "val", "test"):
        for d in splits[s]:
            assert (built / f"{s}-{d}.h5").is_file()
    assert sorted(p.name.split("-", 1)[1] for p in built.glob("*.h5")) == sorted(f"{d}.h5" for d in drives)


def test_match_report_lists_the_wrong_mapping_lines(built: Path) -> None:
    report = json.loads((built / "match_report.json").read_text())
    mismatched = {m["image"]: m for m in report["mismatched"]}
    assert set(mismatched) == {WRONG_RECOVERABLE, WRONG_OTHER_DRIVE}
    assert mismatched[WRONG_RECOVERABLE]["method"] == "search" and mismatched[WRONG_RECOVERABLE]["frame"] == 9
    assert mismatched[WRONG_OTHER_DRIVE]["method"] == ""
    assert [m["image"] for m in report["unmatched"]] == [UNMAPPED]
    used = {(v.provenance["drive"], v.provenance["annotated_frame"]["raw_frame"])
            for _, v in iter_videos(sorted(built.glob("*.h5")), ["presence"])}
    assert used == {(DRIVES[1][1], 7), (DRIVES[2][1], 9), (DRIVES[0][1], 6), (DRIVES[2][1], 5)}


def test_clip_content(built: Path) -> None:
    videos = {v.name: v for _, v in iter_videos(sorted(built.glob("*.h5")))}
    v = videos[f"{DRIVES[2][1]}_0000000009"]
    assert v.num_frames == 6 and str(v.source_frame_ids[0]).endswith("/0000000006")
    assert v.flow is not None and v.flow_backward is not None and v.flow_backend == "dis"
    t0 = v.provenance["annotated_frame"]["t"]
    assert t0 == 3 and v.provenance["annotated_frame"]["match"] == "search"
    objs = {o["track_id"]: o for o in v.provenance["objects"]}
    assert objs[1]["unoccluded"] is False and objs[2]["unoccluded"] and objs[3]["unoccluded"]
    assert {o["kins_annotation_id"] for o in objs.values()} == {1010, 1011, 1012}
    k_a = list(v.track_ids).index(1)
    assert v.amodal_annotated.sum() == 1 and v.amodal_annotated[k_a, t0]
    amodal, visible, _ = scene_masks(9)
    assert np.array_equal(v.amodal[k_a, t0], amodal["A"])
    assert np.array_equal(v.visible_masks()[k_a, t0], visible["A"])
    assert list(v.object_class) == [4, 4, 4]
    summary = json.loads((built / "summary.json").read_text())
    assert summary["total"] == {"clips": 4, "frames": 27, "tracked_objects": 12, "kins_cars": 12,
                                "paired": 12, "scored": 4, "unoccluded": 8, "drives": 3}
    assert sum(summary["occlusion_rate_histogram"].values()) == 12


def test_evaluate_export_and_resume(built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    kitti_world: KittiWorld) -> None:
    js = tmp_path / "convex.json"
    code, out, _ = run(capsys, "evaluate", "--model", "convex", "--data", str(built / "test-*.h5"),
                       "--data", str(built / "train-*.h5"), "--json", str(js), "--quiet")
    assert code == 0 and "frame-level mIoU" in out
    assert json.loads(js.read_text())["n_object_frames"] >= 2
    coco_path = tmp_path / "gt.json"
    code, out, _ = run(capsys, "export-coco", str(built / "*.h5"), "--out", str(coco_path),
                       "--model", "convex", "--quiet")
    assert code == 0, out
    gt = COCO(str(coco_path))
    assert len(gt.getAnnIds()) == 4 and gt.loadCats(4)[0]["name"] == "car"
    ann = gt.loadAnns(gt.getAnnIds())[0]
    assert {"segmentation", "inmodal_seg", "bbox", "inmodal_bbox", "area", "track_id"} <= set(ann)
    res = gt.loadRes(str(tmp_path / "gt_convex_results.json"))
    assert len(res.getAnnIds()) == 4
    mtimes = {p: p.stat().st_mtime_ns for p in built.glob("*.h5")}
    code, out, _ = run(capsys, *build_args(kitti_world, built))
    assert code == 0 and "total" in out
    assert {p: p.stat().st_mtime_ns for p in built.glob("*.h5")} == mtimes
    assert len(json.loads((built / "summary.json").read_text())["skipped_drives"]) == 3
    code, _, err = run(capsys, *build_args(kitti_world, built, "--context", "2"))
    assert code == 2 and "other settings" in err


def _annotated_masks(folder: Path) -> dict[str, list[bytes]]:
    out = {}
    for _, v in iter_videos(sorted(folder.glob("*.h5"))):
        out[v.name] = sorted(v.amodal[k, t].tobytes() for k, t in zip(*np.nonzero(v.amodal_annotated)))
    return out


def test_builtin_tracker_and_original_release(built: Path, kitti_world: KittiWorld, tmp_path: Path) -> None:
    cfg = BuildConfig(tracks=f"builtin:{kitti_world.builtin}", context=3)
    summary = build_kins_video(kitti_world.raw, kitti_world.devkit, kitti_world.object,
                               [kitti_world.kins_original], tmp_path / "b", cfg, jobs=2, quiet=True)
    assert summary["total"]["paired"] == 12 and summary["total"]["scored"] == 4
    assert _annotated_masks(tmp_path / "b") == _annotated_masks(built)


def test_build_errors(kitti_world: KittiWorld, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = build_args(kitti_world, tmp_path / "x")
    args[args.index("--tracks") + 1] = "deepsort:/nowhere"
    code, _, err = run(capsys, *args)
    assert code == 2 and "pointtrack:DIR or builtin:DIR" in err
    tracks = tmp_path / "tracks"
    shutil.copytree(kitti_world.pointtrack, tracks)
    (tracks / f"{DRIVES[0][1]}.txt").unlink()
    cfg = BuildConfig(tracks=f"pointtrack:{tracks}", context=1)
    with pytest.raises(AmodalkitError, match=f"no tracks file for drive {DRIVES[0][1]}"):
        build_kins_video(kitti_world.raw, kitti_world.devkit, kitti_world.object, [kitti_world.kins_2020],
                         tmp_path / "y", cfg, quiet=True)
    with pytest.raises(AmodalkitError, match="annotated in both"):
        build_kins_video(kitti_world.raw, kitti_world.devkit, kitti_world.object,
                         [kitti_world.kins_2020, kitti_world.kins_original], tmp_path / "z", cfg, quiet=True)


def test_scheduler_without_dask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "dask.distributed", None)
    with pytest.raises(AmodalkitError, match=r"pip install 'dask\[distributed\]'"):
        run_tasks(str, [object()], scheduler="tcp://127.0.0.1:8786")  # type: ignore[list-item]


def test_windows_pairs_and_splits() -> None:
    frames = set(range(12))
    assert clip_window(1, frames, 3) == [0, 1, 2, 3, 4]
    assert clip_window(6, frames - {8}, 3) == [3, 4, 5, 6, 7]
    assert group_windows([[5, 6, 7], [0, 1, 2], [3, 4], [20, 21]], max_len=8) == [[1, 2, 0], [3]]
    assert group_windows([[0, 1, 2], [2, 3, 4]], max_len=4) == [[0], [1]]
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[:, :1] = True
    assert pair_objects([a, b], [b, a]) == [(0, 1, 1.0), (1, 0, 1.0)]
    assert pair_objects([a], [a & b]) == []
    weights = {f"2011_09_26_drive_{i:04d}_sync": i % 3 + 1 for i in range(10)}
    s1, s2 = assign_splits(weights, 0), assign_splits(weights, 0)
    assert s1 == s2 and all(s1.values())
    assert sorted(d for v in s1.values() for d in v) == sorted(weights)
    assert assign_splits(weights, 1) != s1


FIELDS = ("frames", "visible_ids", "amodal", "amodal_annotated", "presence", "track_ids", "flow",
          "flow_backward", "object_class")


def _assert_same_build(a_dir: Path, b_dir: Path) -> None:
    assert sorted(p.name for p in b_dir.glob("*.h5")) == sorted(p.name for p in a_dir.glob("*.h5"))
    for p in sorted(a_dir.glob("*.h5")):
        with ShardReader(p) as a, ShardReader(b_dir / p.name) as b:
            assert a.video_names == b.video_names
            for i in range(len(a)):
                va, vb = a.read_video(i), b.read_video(i)
                for name in FIELDS:
                    assert np.array_equal(getattr(va, name), getattr(vb, name)), name
                assert va.provenance == vb.provenance


def test_worker_device_round_robin() -> None:
    assert [worker_device("cuda", i, 2) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert [worker_device("auto", i, 3) for i in range(4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0"]
    assert [worker_device("cpu", i, 4) for i in range(2)] == ["cpu", "cpu"]
    assert [worker_device("cuda:1", i, 4) for i in range(2)] == ["cuda:1", "cuda:1"]
    assert worker_device("auto", 3, 0) == "auto" and worker_device("cuda", 1, 0) == "cuda"
    assert worker_devices("cpu", 3) == ["cpu"] * 3 and worker_devices("cuda", 1) == ["cuda"]


def test_flow_of_a_segment_is_both_passes_in_chunks(kitti_world: KittiWorld) -> None:
    from amodalkit.datasets.kitti import KittiRaw
    from amodalkit.io.shards import flow_for_storage
    from amodalkit.preprocess.flow.backends import DISBackend

    frames = KittiRaw(kitti_world.raw).read_frames(DRIVES[0][1], list(range(kins_video_plan.FLOW_CHUNK + 3)))
    dis = DISBackend()
    fwd, bwd = kins_video_drive._flow16(dis, frames)
    assert fwd.dtype == np.float16 and fwd.shape == (kins_video_plan.FLOW_CHUNK + 2, *frames.shape[1:3], 2)
    np.testing.assert_array_equal(fwd, flow_for_storage(dis.compute(frames)))
    np.testing.assert_array_equal(bwd, flow_for_storage(dis.compute_backward(frames)))


def test_jobs_2_on_cpu_matches_jobs_1(built: Path, kitti_world: KittiWorld, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *build_args(kitti_world, tmp_path / "j2", "--jobs", "2", "--device", "cpu"))
    assert code == 0, err
    _assert_same_build(built, tmp_path / "j2")


def test_one_worker_per_device_matches_jobs_1(built: Path, kitti_world: KittiWorld, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU path (worker i pinned to devices[i]) on two CPU devices: cpu, and auto (the CPU here)."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("auto is a GPU here")
    used = []

    def two_devices(device: str, jobs: int) -> list[str]:
        used.append((device, jobs))
        return ["cpu", "auto"][:jobs]

    monkeypatch.setattr(kins_video, "worker_devices", two_devices)
    cfg = BuildConfig(tracks=f"pointtrack:{kitti_world.pointtrack}", context=3, device="cuda")
    build_kins_video(kitti_world.raw, kitti_world.devkit, kitti_world.object, [kitti_world.kins_2020],
                     tmp_path / "lanes", cfg, jobs=2, quiet=True)
    assert used == [("cuda", 2)]
    _assert_same_build(built, tmp_path / "lanes")


def test_run_on_devices_takes_every_task_once_and_raises_the_first_failure() -> None:
    import operator

    tasks = [{"cpu": i, "auto": i} for i in range(5)]
    assert sorted(run_on_devices(operator.getitem, tasks, ["cpu", "auto"], quiet=True)) == list(range(5))
    with pytest.raises(KeyError, match="cpu"):
        run_on_devices(operator.getitem, [{"cpu": 1}, {}, {"cpu": 2}], ["cpu"], quiet=True)


def test_build_refuses_a_malformed_device(kitti_world: KittiWorld, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *build_args(kitti_world, tmp_path / "x", "--device", "gpu0"))
    assert code == 2 and "--device must be auto, cpu, cuda or cuda:N" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="dask[distributed] not installed")
def test_dask_scheduler_matches_jobs_1(built: Path, kitti_world: KittiWorld, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, host="127.0.0.1", protocol="tcp",
                      dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        code, _, err = run(capsys, *build_args(kitti_world, tmp_path / "d", "--scheduler",
                                               cluster.scheduler_address))
    assert code == 0, err
    _assert_same_build(built, tmp_path / "d")


def test_bad_image_name_error_names_the_kins_json(kitti_world: KittiWorld, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from bad_files import snapshot
    from cli_helpers import assert_one_line_error

    data = json.loads(kitti_world.kins_2020.read_text())
    data["images"][2]["file_name"] = "frame_two.png"
    kins = tmp_path / "update_train_2020.json"
    kins.write_text(json.dumps(data))
    args = build_args(kitti_world, tmp_path / "out")
    args[args.index("--kins-json") + 1] = str(kins)
    before = snapshot(kins)
    code, _, err = run(capsys, *args)
    assert_one_line_error(code, err, str(kins), "frame_two.png", "not a KITTI object image name")
    assert snapshot(kins) == before
