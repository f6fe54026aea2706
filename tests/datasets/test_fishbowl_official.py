"""The SaVos FISHBOWL test object set: official filters, test_subtest.csv and test_data.pkl imports.

The fixture is a SaVos-layout sample 00007 (128x160, 16 frames) whose fishes each meet or
miss one rule of Data_Preprocess1.ipynb:
  A (id 4)  amodal run 0-11 (box leaves the 16 px margin at 12), visible <= 64 px at 9 -> rows 1-7
  B (id 2)  exactly 400 px at 0-4 (too small), 420 px at 5-15 (11 frames > 10) -> rows 6-14
  C (id 9)  never occluded (no frame with 0.1 < occlusion < 0.7) -> rejected
  D (id 6)  amodal run of exactly 10 frames -> rejected
  F (id 1)  the front fish occluding the others, no single-fish render -> never scored
"""

from __future__ import annotations

import csv
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from dataset_fixtures import write_png
from pycocotools import mask as coco_mask

from amodalkit.cli.app import main
from amodalkit.datasets.fishbowl import import_fishbowl
from amodalkit.datasets.fishbowl_official import OfficialFilters, amodal_run, first_run, read_subtest_csv
from amodalkit.errors import AmodalkitError
from amodalkit.io.shard_read import ShardReader
from amodalkit.ops.masks import rle_encode

H, W, T = 128, 160, 16
IDS = {"A": 4, "B": 2, "C": 9, "D": 6, "F": 1}
EXPECTED = {4: range(1, 8), 2: range(6, 15)}


def _box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[r0:r1 + 1, c0:c1 + 1] = True
    return m


def scene() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Amodal and visible masks (T, H, W) per fish letter."""
    amodal = {k: np.zeros((T, H, W), bool) for k in IDS}
    strips = np.zeros((T, H, W), bool)
    for t in range(T):
        amodal["A"][t] = _box(44, 67, 20 + 9 * t, 43 + 9 * t)
        amodal["B"][t] = _box(72, 91 if t < 5 else 92, 30, 49)
        amodal["C"][t] = _box(91, 112, 100, 121)
        amodal["D"][t] = _box(16, 39, 100, 123) if t < 10 else _box(10, 33, 100, 123)
        if 2 <= t <= 4:
            strips[t] |= _box(44, 67, 20 + 9 * t, 27 + 9 * t)
        if t == 9:
            strips[t] |= _box(44, 67, 20 + 9 * t, 41 + 9 * t)
        if t >= 6:
            strips[t] |= _box(72, 92, 30, 34)
        if 3 <= t <= 5:
            strips[t] |= _box(16, 39, 100, 107)
    amodal["F"] = strips
    visible = {k: m & ~strips for k, m in amodal.items()}
    visible["F"] = strips
    return amodal, visible


def write_release(root: Path) -> Path:
    """The SaVos layout: test/00007/objects.json, test_objects/00007_object<ID>/, test_frames/00007/."""
    amodal, visible = scene()
    fishes = [{"id": i, "type_id": 1, "type_name": f"fish{k}"} for k, i in IDS.items()]
    objects = [{**f, "masks": [rle_encode(m) for m in visible[k]]} for k, f in zip(IDS, fishes)]
    (root / "test" / "00007").mkdir(parents=True)
    (root / "test" / "00007" / "objects.json").write_text(json.dumps(objects))
    for k, f in zip(IDS, fishes):
        if k != "F":
            render = root / "test_objects" / f"00007_object{f['id']}"
            render.mkdir(parents=True)
            listed = [{**f, "masks": [rle_encode(m) for m in amodal[k]]}]
            (render / "objects.json").write_text(json.dumps(listed))
    rng = np.random.default_rng(0)
    for t in range(T):
        img = rng.integers(0, 40, (H, W, 3), dtype=np.uint8)
        for n, k in enumerate(IDS):
            img[visible[k][t]] = (60 + 40 * n, 200 - 30 * n, 90)
        write_png(root / "test_frames" / "00007" / f"{t:05d}.png", img)
    return root / "test"


@pytest.fixture
def release(tmp_path: Path) -> Path:
    return write_release(tmp_path / "test_data")


def annotated_rows(out: Path) -> tuple[dict[int, list[int]], object]:
    with ShardReader(sorted(out.glob("*.h5"))[0]) as r:
        v = r.read_video(0)
    rows = {int(i): list(np.flatnonzero(v.amodal_annotated[k])) for k, i in enumerate(v.track_ids)}
    return {i: f for i, f in rows.items() if f}, v


def expected_rows() -> dict[int, list[int]]:
    return {i: list(fs) for i, fs in EXPECTED.items()}


def test_amodal_run_rules() -> None:
    f = OfficialFilters()
    masks = np.zeros((6, 320, 480), bool)
    masks[0, 100:120, 100:120] = True            # 400 px: not more than 400
    masks[1, 100:120, 100:121] = True            # 420 px, inside the margin
    masks[2, 16:37, 16:36] = True                # first row and column 16: kept
    masks[3, 284:305, 444:465] = True            # last row 304 = 320-16, last column 464 = 480-16: kept
    masks[4, 285:306, 100:120] = True            # last row 305: outside the margin, the run ends
    masks[5, 100:130, 100:130] = True            # a second run is never kept
    assert list(amodal_run(masks, f)) == [False, True, True, True, False, False]
    masks[2, 15] = True                          # first row 15
    assert list(amodal_run(masks, f)) == [False, True, False, False, False, False]
    assert list(first_run(np.array([0, 1, 1, 0, 1], bool))) == [False, True, True, False, False]
    assert not first_run(np.zeros(3, bool)).any()


def test_official_filters_keep_the_notebooks_rows(release: Path, tmp_path: Path) -> None:
    plain, out = tmp_path / "plain", tmp_path / "official"
    import_fishbowl(release, plain, quiet=True)
    assert main(["import-fishbowl", str(release), "--out", str(out), "--official-filters", "--quiet"]) == 0
    rows, v = annotated_rows(out)
    assert rows == expected_rows()
    _, everything = annotated_rows(plain)
    assert np.array_equal(v.presence, everything.presence)
    assert np.array_equal(v.visible_ids, everything.visible_ids)
    assert np.array_equal(v.amodal, everything.amodal)
    assert v.provenance["official_selection"]["kept_fish"] == [4, 2]
    assert v.provenance["official_selection"]["annotated_object_frames"] == 16
    assert v.provenance["official_selection"]["official_filters"]["min_amodal_area"] == 400
    shard = sorted(out.glob("*.h5"))[0]
    mtime = shard.stat().st_mtime_ns
    import_fishbowl(release, out, official_filters=True, quiet=True)
    assert shard.stat().st_mtime_ns == mtime
    with pytest.raises(AmodalkitError, match=r"other settings.*official_selection"):
        import_fishbowl(release, out, quiet=True)
    with pytest.raises(AmodalkitError, match="other settings"):
        import_fishbowl(release, plain, official_filters=True, quiet=True)


def write_subtest(path: Path, rows: dict[int, list[int]], v_id: int = 7,
                  extra: list[list] | None = None) -> Path:
    """test_subtest.csv as pandas writes it: unnamed index columns, then the notebook's columns."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "", "Unnamed: 0", "v_id", "obj_id", "frame_id", "FM_bx", "VM_bx", "OCC_R", "IoU",
                    "Type", "test", "test1"])
        n = 0
        for fish, frames in rows.items():
            for t in frames:
                w.writerow([0, n, n, v_id, fish, t, "[1, 2, 3, 4]", "[1, 2, 3, 4]", 0.3, "", "fish", 1, 0])
                n += 1
        for row in extra or []:
            w.writerow([0, n, n, *row])
            n += 1
    return path


def test_subtest_csv_and_official_protocol(release: Path, tmp_path: Path) -> None:
    csv_path = write_subtest(tmp_path / "test_subtest.csv", expected_rows(),
                             extra=[[7, 9, 3, "", "", 0.0, "", "fish", 0, 0]])
    assert read_subtest_csv(csv_path) == {7: expected_rows()}
    out = tmp_path / "sub"
    assert main(["import-fishbowl", str(release), "--out", str(out), "--subtest", str(csv_path),
                 "--quiet"]) == 0
    rows, _ = annotated_rows(out)
    assert rows == expected_rows()
    both = tmp_path / "both"
    import_fishbowl(release, both, official_filters=True, subtest=csv_path, quiet=True)
    assert annotated_rows(both)[0] == expected_rows()
    js = tmp_path / "r.json"
    assert main(["evaluate", "--model", "convex", "--data", str(out), "--protocol", "official",
                 "--json", str(js), "--quiet"]) == 0
    # A is occluded 1/3 at frames 2-4, B 1/4 at 6-14; the other kept frames are unoccluded
    assert json.loads(js.read_text())["n_object_frames"] == 3 + 9


@pytest.mark.parametrize(("rows", "needle"), [
    ("v_id,obj_id,test\n7,4,1\n", "lacks column(s) frame_id"),
    ("v_id,obj_id,frame_id,test\n7,4,x,1\n", "line 2: column 'frame_id' must be an integer"),
    ("v_id,obj_id,frame_id,test\n8,4,3,1\n", "lists 1 video(s) not among the 1 sample folders: 00008"),
    ("v_id,obj_id,frame_id,test\n7,5,3,1\n", "video 00007: fish id 5 is not in its objects.json"),
    ("v_id,obj_id,frame_id,test\n7,4,16,1\n", "frame 16 is past the video's 16 frames"),
])
def test_subtest_bad_input(release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], rows: str,
                           needle: str) -> None:
    from cli_helpers import assert_one_line_error, run

    path = tmp_path / "test_subtest.csv"
    path.write_text(rows)
    code, _, err = run(capsys, "import-fishbowl", str(release), "--out", str(tmp_path / "o"), "--subtest",
                       str(path), "--quiet")
    assert_one_line_error(code, err, "test_subtest.csv", needle)


def _enc(mask: np.ndarray) -> list[dict]:
    return coco_mask.encode(np.asfortranarray(mask[..., None].astype(np.uint8)))


def write_savos_pkl(path: Path, protocol: int = 4) -> Path:
    """test_data.pkl as the notebook writes it: OBJ_ID -> visible-run frame -> FM, VM, boxes, weights."""
    amodal, visible = scene()
    others = {k: np.zeros((T, H, W), bool) for k in IDS}
    for k in IDS:
        for j in IDS:
            if j != k:
                others[k] |= visible[j]
    data = {}
    for letter, frames in (("A", range(0, 9)), ("B", range(5, 16))):
        obj = {}
        for t in frames:
            fm, vm = amodal[letter][t], visible[letter][t]
            rows, cols = np.nonzero(fm)
            obj[t] = {"FM_bx": [rows.min(), rows.max(), cols.min(), cols.max()], "FM": _enc(fm),
                      "VM": _enc(vm),
                      "VM_bx": [np.int64(0)] * 4, "OCC_R": np.float64(1 - vm.sum() / fm.sum()), "IoU": None,
                      "loss_mask_weight": _enc(~others[letter][t]), "fish_type": "fish"}
        data[f"00007_{IDS[letter]}"] = obj
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


def test_savos_pkl_source(release: Path, tmp_path: Path) -> None:
    pkl = write_savos_pkl(tmp_path / "test_data.pkl")
    out = tmp_path / "pkl"
    assert main(["import-fishbowl", str(release), "--out", str(out), "--savos-pkl", str(pkl), "--quiet"]) == 0
    rows, v = annotated_rows(out)
    assert rows == expected_rows()
    assert v.provenance["official_selection"]["savos_pkl"]["sha256"]
    shutil.rmtree(release.parent / "test_objects" / "00007_object4")
    bare = tmp_path / "bare"
    import_fishbowl(release, bare, savos_pkl=pkl, quiet=True)
    rows, w = annotated_rows(bare)
    amodal, _ = scene()
    assert rows == expected_rows()
    assert np.array_equal(w.amodal[0, :9], amodal["A"][:9]) and not w.amodal[0, 9:].any()


def test_savos_pkl_must_match_the_release(release: Path, tmp_path: Path) -> None:
    pkl = write_savos_pkl(tmp_path / "test_data.pkl")
    data = pickle.loads(pkl.read_bytes())
    amodal, visible = scene()
    data["00007_4"][3]["FM"] = _enc(np.roll(amodal["A"][3], 1, axis=1))
    pkl.write_bytes(pickle.dumps(data))
    with pytest.raises(AmodalkitError, match="00007_4 frame 3: FM differs from the single-fish render"):
        import_fishbowl(release, tmp_path / "o1", savos_pkl=pkl, quiet=True)
    data["00007_4"][3]["FM"] = _enc(amodal["A"][3])
    data["00007_4"][5]["VM"] = _enc(amodal["A"][5] & ~visible["A"][5] | visible["F"][5])
    pkl.write_bytes(pickle.dumps(data))
    with pytest.raises(AmodalkitError, match="00007_4 frame 5: VM differs from the visible mask"):
        import_fishbowl(release, tmp_path / "o2", savos_pkl=pkl, quiet=True)


@pytest.mark.parametrize(("payload", "needle"), [
    (b"\x80\x04garbage", "not a readable SaVos FISHBOWL pickle"),
    (pickle.dumps({"fish": {}}), "object key 'fish' is not 'VVVVV_FISHID'"),
    (pickle.dumps({"00007_4": {0: {"FM": []}}}), "object 00007_4 frame 0: needs 'FM' and 'VM'"),
    (pickle.dumps({"00007_4": {0: {"FM": [], "VM": []}}}), "frame 0 FM must be a pycocotools RLE"),
    (pickle.dumps({"00009_4": {0: {"FM": _enc(np.zeros((H, W), bool)), "VM": _enc(np.ones((H, W), bool))}}}),
     "not among the 1 sample folders: 00009"),
    (pickle.dumps({"00007_4": {0: {"FM": {"size": [H, W], "counts": b"zz"}, "VM": _enc(np.ones((H, W)))}}}),
     "00007_4 frame 0 FM: invalid COCO compressed RLE"),
    (pickle.dumps([Path("x")]), "PosixPath is not allowed"),
])
def test_savos_pkl_bad_input(release: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             payload: bytes, needle: str) -> None:
    from cli_helpers import assert_one_line_error, run

    path = tmp_path / "test_data.pkl"
    path.write_bytes(payload)
    code, _, err = run(capsys, "import-fishbowl", str(release), "--out", str(tmp_path / "o"), "--savos-pkl",
                       str(path), "--quiet")
    assert_one_line_error(code, err, "test_data.pkl", needle)
