"""The SaVos authors' FISHBOWL test object set: their preprocessing filters, their subset CSV, their pickle.

The paper's FISHBOWL numbers are computed on object-frames chosen by the authors'
``FishBowl/FishBowl_dataset/Data_Preprocess1.ipynb`` (amazon-science/self-supervised-amodal-
video-object-segmentation). Per fish (``OBJ_ID`` = sample name + "_" + fish ``id``) it keeps:

1. the *amodal run*: the first contiguous run of frames whose amodal mask has more than 400
   pixels and whose box keeps a 16-pixel margin (first row and column >= 16, last row <=
   H - 16, last column <= W - 16; the notebook writes 320 - 16 and 480 - 16 for its 320x480
   frames, we use the frame size, the same on the release);
2. the *visible run*: inside the amodal run, the first contiguous run of frames whose visible
   mask (the fish's mask in the sample's objects.json) has more than 64 pixels;
3. on the test split, only fishes whose amodal run is longer than 10 frames and with at least
   one visible-run frame of occlusion rate 1 - |visible| / |amodal| strictly inside (0.1, 0.7);
   these visible runs are the test pickle ``test_data.pkl``;
4. ``test_subtest.csv``: those rows without the first and the last frame of each fish (its
   ``iloc[1:-1]``), all with ``test`` = 1; ``utils/test_subset_eval.py`` then scores the rows
   with 0.1 < OCC_R < 0.7, which ``evaluate --protocol official`` applies itself.

How this is stored, without changing the shard schema: a fish that fails keeps its place in
the video, its visible pixels and its ``presence`` (it still occludes the others, and the
official occluded region is every other fish's visible mask, kept or not); it is only never
scored: ``amodal_annotated`` is false on all its frames. A kept fish is annotated exactly on
the rows of step 4, so both ``--protocol strict`` and ``official`` score the paper's set.
``--official-filters`` computes steps 1-4 from the release, ``--subtest`` reads the CSV (rows
with ``test`` = 1; ``v_id`` is the sample folder's number, ``obj_id`` the fish ``id``),
``--savos-pkl`` reads the authors' pickle (a dict ``OBJ_ID -> {frame: {"FM", "VM", "FM_bx",
"VM_bx", "OCC_R", "loss_mask_weight", ...}}`` with pycocotools RLEs): its ``FM`` amodal
masks are used (and must equal the single-fish renders where SRC has them), its ``VM`` must
equal objects.json, and its frames less the first and last are annotated. Given together,
the selections intersect. The settings and the digests of the files are recorded in every
shard and in the import record, so a rerun with other settings into the same folder is refused.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from amodalkit.errors import AmodalkitError
from amodalkit.io.safe_pickle import load_arrays_pickle
from amodalkit.io.shards import Video
from amodalkit.ops.masks import rle_decode

SUBTEST_COLUMNS = ("v_id", "obj_id", "frame_id", "test")
OBJ_ID = re.compile(r"(\d+)_(\d+)")


@dataclass(frozen=True)
class OfficialFilters:
    """The notebook's thresholds; every comparison keeps values strictly above a minimum."""

    min_amodal_area: int = 400
    border: int = 16
    min_visible_area: int = 64
    min_amodal_run: int = 10
    occlusion_range: tuple[float, float] = (0.1, 0.7)


def first_run(ok: np.ndarray) -> np.ndarray:
    """(T,) bool: the first contiguous run of True in `ok` (all False when there is none)."""
    ok = np.asarray(ok, bool)
    out = np.zeros_like(ok)
    if ok.any():
        start = int(np.argmax(ok))
        stop = start + (int(np.argmin(ok[start:])) if not ok[start:].all() else len(ok) - start)
        out[start:stop] = True
    return out


def amodal_run(amodal: np.ndarray, filters: OfficialFilters = OfficialFilters()) -> np.ndarray:
    """(T,) bool: step 1 for one fish's amodal masks (T, H, W)."""
    h, w = amodal.shape[1:]
    rows, cols = amodal.any(axis=2), amodal.any(axis=1)
    ok = amodal.sum(axis=(1, 2)) > filters.min_amodal_area
    b = filters.border
    for t in np.flatnonzero(ok):
        r, c = np.flatnonzero(rows[t]), np.flatnonzero(cols[t])
        ok[t] = r[0] >= b and c[0] >= b and r[-1] <= h - b and c[-1] <= w - b
    return first_run(ok)


def official_rows(amodal: np.ndarray, visible_area: np.ndarray,
                  filters: OfficialFilters = OfficialFilters()) -> np.ndarray:
    """(T,) bool: one fish's rows of test_subtest.csv (steps 1-4) from its amodal masks and visible areas."""
    run_a = amodal_run(amodal, filters)
    run_v = first_run(run_a & (np.asarray(visible_area) > filters.min_visible_area))
    rows = np.zeros_like(run_v)
    if run_a.sum() <= filters.min_amodal_run or not run_v.any():
        return rows
    area = amodal.sum(axis=(1, 2)).astype(np.float64)
    occ = 1.0 - np.asarray(visible_area, np.float64)[run_v] / area[run_v]
    low, high = filters.occlusion_range
    if not ((occ > low) & (occ < high)).any():
        return rows
    return drop_ends(run_v)


def drop_ends(run: np.ndarray) -> np.ndarray:
    """`run` (T,) without its first and last True frame."""
    out = np.asarray(run, bool).copy()
    idx = np.flatnonzero(out)
    out[idx[:1]] = False
    out[idx[-1:]] = False
    return out


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _int(text: object, column: str, line: int, path: Path) -> int:
    try:
        value = float(str(text).strip())
    except ValueError:
        value = float("nan")
    if not value.is_integer():
        raise AmodalkitError(f"line {line}: column {column!r} must be an integer, got {str(text)[:40]!r}",
                             path)
    return int(value)


def read_subtest_csv(path: str | Path) -> dict[int, dict[int, list[int]]]:
    """The rows of test_subtest.csv with test == 1: {v_id: {obj_id (fish id): sorted frame ids}}."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in SUBTEST_COLUMNS if c not in header]
            if missing:
                raise AmodalkitError(f"subtest CSV lacks column(s) {', '.join(missing)} (has: "
                                     f"{', '.join(h for h in header if h)[:200] or 'none'})", path)
            rows: dict[int, dict[int, set[int]]] = {}
            for line, row in enumerate(reader, start=2):
                if _int(row["test"], "test", line, path) != 1:
                    continue
                v_id, obj_id, frame = (_int(row[c], c, line, path) for c in ("v_id", "obj_id", "frame_id"))
                if min(v_id, obj_id, frame) < 0:
                    raise AmodalkitError(f"line {line}: v_id, obj_id and frame_id must not be negative", path)
                rows.setdefault(v_id, {}).setdefault(obj_id, set()).add(frame)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AmodalkitError(f"not a readable subtest CSV ({exc})", path) from exc
    return {v: {o: sorted(fs) for o, fs in objs.items()} for v, objs in rows.items()}


def _rle(value: object, what: str, path: Path) -> dict:
    if isinstance(value, (list, tuple)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict) or not {"size", "counts"} <= set(value):
        raise AmodalkitError(f"{what} must be a pycocotools RLE (a dict with size and counts, or a list "
                             "of one)", path)
    size = value["size"]
    if isinstance(size, (list, tuple, np.ndarray)):
        size = [int(s) if isinstance(s, (int, np.integer)) and not isinstance(s, bool) else s for s in size]
    return {"size": size, "counts": value["counts"]}


def read_savos_pkl(path: str | Path) -> dict[int, dict[int, dict[int, tuple[dict, dict]]]]:
    """The authors' test_data.pkl: {v_id: {fish id: {frame: (FM RLE, VM RLE)}}}, checked for shape."""
    path = Path(path)
    data = load_arrays_pickle(path, "SaVos FISHBOWL pickle")
    if not isinstance(data, dict):
        raise AmodalkitError("a SaVos FISHBOWL pickle must hold a dict keyed by 'VVVVV_FISHID'", path)
    out: dict[int, dict[int, dict[int, tuple[dict, dict]]]] = {}
    for key, frames in data.items():
        m = OBJ_ID.fullmatch(key) if isinstance(key, str) else None
        if m is None:
            raise AmodalkitError(f"object key {str(key)[:40]!r} is not 'VVVVV_FISHID'", path)
        if not isinstance(frames, dict) or not frames:
            raise AmodalkitError(f"object {key}: must map frame numbers to dicts", path)
        steps: dict[int, tuple[dict, dict]] = {}
        for t, entry in frames.items():
            if not isinstance(t, (int, np.integer)) or isinstance(t, bool) or t < 0:
                raise AmodalkitError(f"object {key}: frame {str(t)[:20]!r} is not a frame number", path)
            if not isinstance(entry, dict) or "FM" not in entry or "VM" not in entry:
                raise AmodalkitError(f"object {key} frame {t}: needs 'FM' and 'VM' masks", path)
            steps[int(t)] = (_rle(entry["FM"], f"object {key} frame {t} FM", path),
                             _rle(entry["VM"], f"object {key} frame {t} VM", path))
        order = sorted(steps)
        if order != list(range(order[0], order[-1] + 1)):
            raise AmodalkitError(f"object {key}: frames are not contiguous", path)
        out.setdefault(int(m.group(1)), {})[int(m.group(2))] = {t: steps[t] for t in order}
    return out


@dataclass
class OfficialSelection:
    """Which object-frames an import annotates: official filters, subtest CSV and/or SaVos pickle."""

    filters: OfficialFilters | None = None
    subtest: dict[int, dict[int, list[int]]] | None = None
    savos: dict[int, dict[int, dict[int, tuple[dict, dict]]]] | None = None
    settings: dict = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return bool(self.settings)

    def check_videos(self, names: list[str]) -> None:
        """Refuse CSV / pickle entries naming a video that is not among the sample folders `names`."""
        known = {int(n) for n in names if n.isdigit()}
        for label, table in (("subtest", self.subtest), ("savos_pkl", self.savos)):
            unknown = sorted(set(table or {}) - known)
            if unknown:
                shown = ", ".join(f"{v:05d}" for v in unknown[:5])
                raise AmodalkitError(f"lists {len(unknown)} video(s) not among the {len(names)} sample "
                                     f"folders: {shown}", self.settings[label]["path"])

    def for_videos(self, names: list[str]) -> OfficialSelection:
        """A copy holding only the entries of these videos (what one shard's worker needs)."""
        ids = {int(n) for n in names if n.isdigit()}
        def pick(table: dict | None) -> dict | None:
            return None if table is None else {v: e for v, e in table.items() if v in ids}

        return replace(self, subtest=pick(self.subtest), savos=pick(self.savos))

    def _entries(self, table: dict | None, name: str, label: str, video: Video) -> dict:
        entries = (table or {}).get(int(name), {}) if name.isdigit() else {}
        ids = {int(i) for i in video.track_ids}
        for fish, frames in entries.items():
            if fish not in ids:
                raise AmodalkitError(f"video {name}: fish id {fish} is not in its objects.json (ids "
                                     f"{sorted(ids)})", self.settings[label]["path"])
            if max(frames) >= video.num_frames:
                raise AmodalkitError(f"video {name} fish {fish}: frame {max(frames)} is past the video's "
                                     f"{video.num_frames} frames", self.settings[label]["path"])
        return entries

    def add_amodal(self, name: str, amodal_by_id: dict[int, np.ndarray], shape: tuple[int, int, int],
                   where: Path) -> None:
        """Put the pickle's FM masks of video `name` into `amodal_by_id`; they must equal the renders."""
        path = self.settings.get("savos_pkl", {}).get("path")
        for fish, frames in (self.savos or {}).get(int(name), {}).items() if name.isdigit() else ():
            rendered = amodal_by_id.get(fish)
            masks = np.zeros(shape, bool) if rendered is None else rendered
            for t, (fm, _) in frames.items():
                if t >= shape[0]:
                    continue
                try:
                    mask = rle_decode(fm, shape[1:])
                except AmodalkitError as exc:
                    raise AmodalkitError(f"object {name}_{fish} frame {t} FM: {exc}", path) from exc
                if rendered is not None and not np.array_equal(mask, rendered[t]):
                    raise AmodalkitError(f"object {name}_{fish} frame {t}: FM differs from the single-fish "
                                         f"render in {where}", path)
                masks[t] = mask
            amodal_by_id[fish] = masks

    def apply(self, video: Video, visible_area: np.ndarray) -> Video:
        """`video` annotated only on the selected object-frames, with the selection in its provenance."""
        keep = np.ones(video.amodal_annotated.shape, bool)
        track = {int(i): k for k, i in enumerate(video.track_ids)}
        if self.filters is not None:
            for k in range(video.num_objects):
                keep[k] &= official_rows(video.amodal[k], visible_area[k], self.filters)
        if self.subtest is not None:
            rows = np.zeros_like(keep)
            for fish, frames in self._entries(self.subtest, video.name, "subtest", video).items():
                rows[track[fish], frames] = True
            keep &= rows
        if self.savos is not None:
            rows = np.zeros_like(keep)
            visible = video.visible_masks()
            for fish, frames in self._entries(self.savos, video.name, "savos_pkl", video).items():
                k = track[fish]
                for t, (_, vm) in frames.items():
                    try:
                        same = np.array_equal(rle_decode(vm, video.size), visible[k, t])
                    except AmodalkitError as exc:
                        raise AmodalkitError(f"object {video.name}_{fish} frame {t} VM: {exc}",
                                             self.settings["savos_pkl"]["path"]) from exc
                    if not same:
                        raise AmodalkitError(f"object {video.name}_{fish} frame {t}: VM differs from the "
                                             "visible mask in objects.json",
                                             self.settings["savos_pkl"]["path"])
                    rows[k, t] = True
                rows[k] = drop_ends(rows[k])
            keep &= rows
        annotated = video.amodal_annotated & keep
        prov = dict(video.provenance)
        prov["official_selection"] = {**self.settings, "annotated_object_frames": int(annotated.sum()),
                                      "kept_fish": [int(video.track_ids[k]) for k in np.flatnonzero(
                                          annotated.any(axis=1))]}
        return video.evolve(amodal_annotated=annotated, provenance=prov)


def make_selection(official_filters: bool = False, subtest: str | Path | None = None,
                   savos_pkl: str | Path | None = None) -> OfficialSelection:
    """Read the CSV / pickle given and describe the settings (recorded so reruns cannot mix them)."""
    sel = OfficialSelection()
    if official_filters:
        sel.filters = OfficialFilters()
        sel.settings["official_filters"] = {k: list(v) if isinstance(v, tuple) else v
                                            for k, v in asdict(sel.filters).items()}
    for label, given, reader in (("subtest", subtest, read_subtest_csv),
                                 ("savos_pkl", savos_pkl, read_savos_pkl)):
        if given is None:
            continue
        path = Path(given)
        if not path.is_file():
            raise AmodalkitError("no such file", path)
        setattr(sel, "subtest" if label == "subtest" else "savos", reader(path))
        sel.settings[label] = {"path": str(path.resolve()), "sha256": _digest(path)}
    return sel
