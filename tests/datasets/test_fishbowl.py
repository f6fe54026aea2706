from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import FB_H, FB_T, FB_W, FishbowlRelease, fish_frames, fish_masks
from shard_digests import file_digests

from amodalkit.cli.app import main
from amodalkit.datasets.fishbowl import find_samples, import_fishbowl, occlusion_range_filter, read_sample
from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import evaluate_method, scored_object_frames
from amodalkit.io.shard_read import ShardReader
from amodalkit.models.registry import build_method
from amodalkit.ops.masks import occlusion_rates


def test_generator_layout(fishbowl_release: FishbowlRelease) -> None:
    samples = find_samples(fishbowl_release.final)
    assert [s.name for s in samples] == ["00000", "00001"]
    assert samples[0].video is not None and len(samples[0].renders) == 3
    v = read_sample(samples[1])
    fishes, amodal, visible = fish_masks(1)
    assert v.frames.shape == (FB_T, FB_H, FB_W, 3)
    assert np.abs(v.frames.astype(int) - fish_frames(1)).mean() < 12  # lossy mp4
    assert list(v.track_ids) == [f["id"] for f in fishes]
    assert list(v.object_class) == [1, 3, 1]
    assert np.array_equal(v.visible_masks(), visible)
    assert np.array_equal(v.amodal, amodal) and v.amodal_annotated.all()
    rates = v.provenance["objects"][1]["occlusion_rate"]
    assert rates == pytest.approx(list(occlusion_rates(amodal[1], visible[1])), abs=1e-4)
    assert 0 < max(rates) < 1 and v.provenance["objects"][0]["occlusion_rate"] == [0.0] * FB_T


def test_savos_layout_with_a_missing_render(fishbowl_release: FishbowlRelease) -> None:
    samples = find_samples(fishbowl_release.savos_split.parent)
    assert samples[0].video is None and samples[0].frames_dir is not None
    v = read_sample(samples[0])
    _, _, visible = fish_masks(0)
    assert np.array_equal(v.frames, fish_frames(0))
    assert np.array_equal(v.visible_masks(), visible)
    assert list(v.amodal_annotated.all(axis=1)) == [True, True, False]
    assert not v.amodal[2].any() and v.provenance["objects"][2]["occlusion_rate"] == [None] * FB_T


def test_import_evaluate_with_occlusion_range(fishbowl_release: FishbowlRelease, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fb"
    assert main(["import-fishbowl", str(fishbowl_release.final), "--out", str(out), "--split", "test",
                 "--videos-per-shard", "1", "--quiet"]) == 0
    shards = sorted(out.glob("*.h5"))
    assert [p.name for p in shards] == ["test-00000.h5", "test-00001.h5"]
    mtime = shards[0].stat().st_mtime_ns
    assert import_fishbowl(fishbowl_release.final, out, "test", 1, quiet=True) == shards
    assert shards[0].stat().st_mtime_ns == mtime
    with pytest.raises(AmodalkitError, match="other settings"):
        import_fishbowl(fishbowl_release.final, out, "test", 2, quiet=True)
    keep = occlusion_range_filter(0.1, 0.7)
    with ShardReader(shards[0]) as r:
        v = r.read_video(0)
    rates = occlusion_rates(v.amodal, v.visible_masks())
    mask = keep(v)
    assert mask.shape == (3, FB_T) and not mask[0].any() and not mask[2].any()
    assert np.array_equal(mask[1], (rates[1] > 0.1) & (rates[1] < 0.7)) and mask[1].any()
    everything = evaluate_method(build_method("convex"), shards, quiet=True, protocol="strict")
    filtered = evaluate_method(build_method("convex"), shards, quiet=True, object_filter=keep,
                               protocol="strict")
    assert filtered["n_object_frames"] < everything["n_object_frames"]
    assert everything["n_object_frames"] == 2 * int(scored_object_frames(v).sum())
    js = tmp_path / "r.json"
    capsys.readouterr()
    code = main(["evaluate", "--model", "convex", "--data", str(out), "--occlusion-range", "0.1", "0.7",
                 "--protocol", "strict", "--json", str(js), "--quiet"])
    assert code == 0
    result = json.loads(js.read_text())
    assert result["occlusion_range"] == [0.1, 0.7]
    assert result["n_object_frames"] == filtered["n_object_frames"]
    with pytest.raises(AmodalkitError, match="LOW < HIGH"):
        occlusion_range_filter(0.7, 0.1)


def test_bad_inputs(tmp_path: Path, fishbowl_release: FishbowlRelease) -> None:
    with pytest.raises(AmodalkitError, match="does not exist"):
        find_samples(tmp_path / "nope")
    with pytest.raises(AmodalkitError, match="no FISHBOWL sample folders"):
        find_samples(tmp_path)
    bad = tmp_path / "s" / "00000"
    bad.mkdir(parents=True)
    (bad / "objects.json").write_text(json.dumps([{"id": 1}]))
    sample = find_samples(tmp_path / "s")[0]
    sample.frames_dir = fishbowl_release.savos_split.parent / "test_frames" / "00000"
    with pytest.raises(AmodalkitError, match="'masks' list"):
        read_sample(sample)


def _short_rle() -> dict:
    from amodalkit.ops.masks import rle_encode

    return {"size": [FB_H, FB_W], "counts": rle_encode(np.zeros((FB_H, FB_W - 1), bool))["counts"]}


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda objs: objs[0].update(id="abc"), "'id' must be an integer"),
        (lambda objs: objs[0].update(id=2**70), "'id' must be an integer"),
        (lambda objs: objs[0].update(type_id="fish"), "'type_id' must be an integer"),
        (lambda objs: objs[1]["masks"].__setitem__(2, _short_rle()), "runs do not cover"),
        (lambda objs: objs[1]["masks"].__setitem__(2, {"size": [FB_H, FB_W], "counts": [5, 7]}),
         "runs cover 12 pixels"),
    ],
)
def test_malformed_objects_json_is_one_line_error(tmp_path: Path, fishbowl_release: FishbowlRelease,
                                                  capsys: pytest.CaptureFixture[str], change,
                                                  needle: str) -> None:
    import shutil

    from bad_files import snapshot
    from cli_helpers import assert_one_line_error, run

    src = tmp_path / "test_data"
    shutil.copytree(fishbowl_release.savos_split.parent, src)
    objects_json = src / "test" / "00001" / "objects.json"
    objects = json.loads(objects_json.read_text())
    change(objects)
    objects_json.write_text(json.dumps(objects))
    before = snapshot(src)
    code, _, err = run(capsys, "import-fishbowl", str(src / "test"), "--out", str(tmp_path / "out"),
                       "--quiet")
    assert_one_line_error(code, err, "00001", "objects.json", needle)
    assert snapshot(src) == before


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_limit_must_be_positive(tmp_path: Path, fishbowl_release: FishbowlRelease,
                                capsys: pytest.CaptureFixture[str], limit: str) -> None:
    from cli_helpers import assert_one_line_error, run

    code, _, err = run(capsys, "import-fishbowl", str(fishbowl_release.savos_split), "--out",
                       str(tmp_path / "out"), "--limit", limit)
    assert_one_line_error(code, err, "--limit must be at least 1")
    assert not (tmp_path / "out").exists()


def test_import_on_dask_and_local_processes_matches_one_process(fishbowl_release: FishbowlRelease,
                                                                 cluster: str, tmp_path: Path) -> None:
    outs = {name: tmp_path / name for name in ("one", "jobs", "dask")}
    args = [str(fishbowl_release.final), "--split", "test", "--videos-per-shard", "1", "--quiet"]
    assert main(["import-fishbowl", *args, "--out", str(outs["one"])]) == 0
    assert main(["import-fishbowl", *args, "--out", str(outs["jobs"]), "--jobs", "2"]) == 0
    assert main(["import-fishbowl", *args, "--out", str(outs["dask"]), "--scheduler", cluster]) == 0
    assert file_digests(outs["one"]) == file_digests(outs["jobs"]) and len(file_digests(outs["one"])) == 2
    assert file_digests(outs["one"]) == file_digests(outs["dask"])
