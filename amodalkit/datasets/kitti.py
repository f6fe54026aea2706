"""KITTI readers: the raw data layout, the object devkit's raw mapping, and pixel-verified matching.

KITTI raw (``--kitti-raw``, the unzipped ``*_sync.zip`` drives of the raw data download)::

    RAW/
      2011_09_26/                              date folder (calibration files live here too)
        2011_09_26_drive_0005_sync/            one synced + rectified drive
          image_02/                            left colour camera
            data/
              0000000000.png                   frame 0, zero-padded to 10 digits
              0000000001.png
              ...
      2011_09_28/
        2011_09_28_drive_0106_sync/...

KITTI object devkit (``--kitti-devkit``, ``devkit_object.zip``)::

    DEVKIT/
      mapping/
        train_rand.txt      one line: comma-separated 1-based indices into train_mapping.txt,
                            entry N (0-based) belongs to object training image N (%06d.png)
        train_mapping.txt   one line per raw frame: "DATE DRIVE FRAME", e.g.
                            "2011_09_26 2011_09_26_drive_0005_sync 0000000109"

KITTI object benchmark images (``--kitti-object``, ``data_object_image_2.zip``)::

    OBJECT/
      training/image_2/000000.png ... 007480.png
      testing/image_2/000000.png ... 007517.png

Object training image N is raw frame ``train_mapping[train_rand[N] - 1]``; the devkit maps only
the *training* images. Every mapping is checked by comparing pixels: the object image and the
raw frame must have the same size and differ by at most ``tolerance`` grey levels in every
channel (default 0: KITTI's object images are copies of the raw PNGs, which is why the SaVos
authors could match them by md5). When the mapped frame is missing or differs, the mapped
drive is searched for the frame with the same content; an image without a mapping line is
searched in every drive only when asked (``search_unmapped``), since that reads all of KITTI.
A mismatch is always reported, never used.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from joblib import Parallel, delayed
from tqdm import tqdm

from amodalkit.errors import AmodalkitError
from amodalkit.io.images import imread

CAMERA = "image_02"
DRIVE_RE = re.compile(r"^(\d{4}_\d{2}_\d{2})_drive_(\d{4})_sync$")
RAND_FILE = "mapping/train_rand.txt"
MAPPING_FILE = "mapping/train_mapping.txt"
OBJECT_SPLITS = ("training", "testing")
THUMB_FACTOR = 8


def drive_date(drive: str) -> str:
    """The date folder of a drive name such as ``2011_09_26_drive_0005_sync``."""
    m = DRIVE_RE.match(drive)
    if m is None:
        raise AmodalkitError(f"not a KITTI raw drive name (expected DATE_drive_NNNN_sync): {drive!r}")
    return m.group(1)


def read_image(path: str | Path) -> np.ndarray:
    """A PNG as (H, W, 3) uint8 RGB; AmodalkitError naming the file when it cannot be read."""
    img = imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise AmodalkitError("cannot read this image (missing or not an image)", path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class RawFrame:
    """One raw frame: date folder, drive folder and frame number."""

    date: str
    drive: str
    frame: int

    def path(self, raw_root: str | Path) -> Path:
        """``RAW/DATE/DRIVE/image_02/data/FRAME.png``."""
        return Path(raw_root) / self.date / self.drive / CAMERA / "data" / f"{self.frame:010d}.png"


class KittiRaw:
    """The KITTI raw layout drawn in the module docstring, read lazily."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise AmodalkitError("KITTI raw folder does not exist (expected RAW/DATE/DATE_drive_NNNN_sync/"
                                 "image_02/data/0000000000.png)", self.root)
        self._frames: dict[str, list[int]] = {}

    def drives(self) -> list[str]:
        """Every drive folder ``DATE/DATE_drive_NNNN_sync`` that has ``image_02/data``, sorted."""
        found = []
        for date_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for d in sorted(date_dir.iterdir()):
                if DRIVE_RE.match(d.name) and (d / CAMERA / "data").is_dir():
                    found.append(d.name)
        return found

    def drive_dir(self, drive: str) -> Path:
        """``RAW/DATE/DRIVE/image_02/data``."""
        return self.root / drive_date(drive) / drive / CAMERA / "data"

    def frame_numbers(self, drive: str) -> list[int]:
        """Sorted frame numbers present in a drive (empty when the drive is absent)."""
        if drive not in self._frames:
            folder = self.drive_dir(drive)
            files = folder.glob("*.png") if folder.is_dir() else []
            self._frames[drive] = sorted(int(p.stem) for p in files if p.stem.isdigit())
        return self._frames[drive]

    def frame(self, drive: str, frame: int) -> RawFrame:
        """The RawFrame of a drive and frame number."""
        return RawFrame(drive_date(drive), drive, int(frame))

    def frame_path(self, drive: str, frame: int) -> Path:
        """Path of one frame PNG."""
        return self.frame(drive, frame).path(self.root)

    def read_frame(self, drive: str, frame: int) -> np.ndarray:
        """One frame as (H, W, 3) uint8 RGB."""
        return read_image(self.frame_path(drive, frame))

    def read_frames(self, drive: str, frames: Sequence[int]) -> np.ndarray:
        """Several frames of one drive: (T, H, W, 3) uint8 RGB, all of one size."""
        out = [self.read_frame(drive, f) for f in frames]
        for f, img in zip(frames, out):
            if img.shape != out[0].shape:
                raise AmodalkitError(f"frame size {img.shape[1]}x{img.shape[0]} differs from the drive's "
                                     f"{out[0].shape[1]}x{out[0].shape[0]}", self.frame_path(drive, f))
        return np.stack(out)


@dataclass
class DevkitMapping:
    """The object devkit mapping: ``rand[N]`` (1-based line) and the mapping lines."""

    rand: list[int]
    lines: list[RawFrame | None]
    root: Path

    def line_for(self, image_index: int) -> tuple[int | None, RawFrame | None]:
        """(1-based mapping line, raw frame) of object training image N; None where missing."""
        if not 0 <= image_index < len(self.rand):
            return None, None
        line = self.rand[image_index]
        if not 1 <= line <= len(self.lines):
            return line, None
        return line, self.lines[line - 1]


def read_mapping(devkit: str | Path) -> DevkitMapping:
    """Read ``mapping/train_rand.txt`` and ``mapping/train_mapping.txt`` of the object devkit."""
    devkit = Path(devkit)
    rand_path, map_path = devkit / RAND_FILE, devkit / MAPPING_FILE
    for p in (rand_path, map_path):
        if not p.is_file():
            raise AmodalkitError("object devkit mapping file is missing (expected DEVKIT/mapping/"
                                 "train_rand.txt and train_mapping.txt from devkit_object.zip)", p)
    try:
        text = rand_path.read_text().strip()
        mapping_lines = map_path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise AmodalkitError(f"cannot read the devkit mapping files ({exc})", devkit / "mapping") from exc
    try:
        rand = [int(t) for t in text.replace("\n", ",").split(",") if t.strip()]
    except ValueError as exc:
        raise AmodalkitError("train_rand.txt must hold comma-separated integers", rand_path) from exc
    lines: list[RawFrame | None] = []
    for n, line in enumerate(mapping_lines, 1):
        fields = line.split()
        if not fields:
            lines.append(None)
            continue
        if len(fields) != 3 or not fields[2].isdigit() or not DRIVE_RE.match(fields[1]):
            raise AmodalkitError(f"expected 'DATE DRIVE FRAME' (e.g. 2011_09_26 2011_09_26_drive_0005_sync "
                                 f"0000000109), got {line.strip()!r}", f"{map_path}:{n}")
        if drive_date(fields[1]) != fields[0]:
            raise AmodalkitError(f"date {fields[0]} does not match drive {fields[1]}", f"{map_path}:{n}")
        lines.append(RawFrame(fields[0], fields[1], int(fields[2])))
    return DevkitMapping(rand, lines, devkit)


def object_image_index(file_name: str) -> int:
    """Image number of an object benchmark file name (``000123.png`` -> 123)."""
    stem = Path(file_name).stem
    if not stem.isdigit():
        raise AmodalkitError(f"not a KITTI object image name (expected NNNNNN.png): {file_name!r}")
    return int(stem)


def object_image_path(object_root: str | Path, file_name: str, split: str = "training") -> Path:
    """``OBJECT/{training,testing}/image_2/NNNNNN.png``."""
    if split not in OBJECT_SPLITS:
        raise AmodalkitError(f"object split must be one of {OBJECT_SPLITS}, got {split!r}")
    return Path(object_root) / split / "image_2" / Path(file_name).name


def pixel_difference(a: np.ndarray, b: np.ndarray) -> int | None:
    """Largest absolute channel difference of two images; None when their sizes differ."""
    if a.shape != b.shape:
        return None
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max(initial=0))


def _thumb(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    size = (max(w // THUMB_FACTOR, 1), max(h // THUMB_FACTOR, 1))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA).astype(np.float32)


@dataclass
class ImageMatch:
    """Outcome for one object image (status: verified, unverified, mismatched, unmatched)."""

    image: str
    split: str
    object_image: str
    status: str
    method: str = ""
    drive: str = ""
    frame: int = -1
    raw_frame: str = ""
    mapping_line: int | None = None
    mapped_raw_frame: str = ""
    max_abs_diff: int | None = None
    reason: str = ""

    @property
    def usable(self) -> bool:
        """True when the image has a pixel-verified raw frame (by mapping or by search)."""
        return bool(self.drive) and self.status in ("verified", "mismatched") and self.method != ""


def _locate(name: str, split: str, mapping: DevkitMapping | None, object_root: str) -> ImageMatch:
    """Look an object image up in the devkit mapping (no file is read)."""
    m = ImageMatch(name, split, str(object_image_path(object_root, name, split)), "unmatched")
    index = object_image_index(name)
    if split != "training" or mapping is None:
        m.reason = "the devkit maps only object *training* images to raw frames"
        return m
    line, raw = mapping.line_for(index)
    m.mapping_line = line
    if raw is None:
        m.reason = (f"no train_rand.txt entry for image {index}" if line is None
                    else f"train_rand.txt points to line {line}, which train_mapping.txt does not have")
        return m
    m.drive, m.frame = raw.drive, raw.frame
    return m


def _verify(m: ImageMatch, raw_root: str, tolerance: int) -> ImageMatch:
    """Compare a located image with its mapped raw frame and set its status."""
    if not m.drive:
        return m
    raw_path = RawFrame(drive_date(m.drive), m.drive, m.frame).path(raw_root)
    m.mapped_raw_frame = str(raw_path)
    if not raw_path.is_file():
        m.reason, m.frame = "the mapped raw frame is missing", -1
        return m
    if not Path(m.object_image).is_file():
        m.status, m.method, m.raw_frame = "unverified", "mapping", str(raw_path)
        m.reason = "object image missing, so the mapping could not be checked"
        return m
    diff = pixel_difference(read_image(m.object_image), read_image(raw_path))
    m.max_abs_diff = diff
    if diff is not None and diff <= tolerance:
        m.status, m.method, m.raw_frame = "verified", "mapping", str(raw_path)
        return m
    m.status, m.frame = "mismatched", -1
    m.reason = ("the mapped raw frame has another size" if diff is None
                else f"the mapped raw frame differs by up to {diff} grey levels (tolerance {tolerance})")
    return m


def _search_drive(raw_root: str, drive: str, targets: list[tuple[int, str]], tolerance: int
                  ) -> dict[int, tuple[int, int]]:
    """Find each target object image (position, path) among a drive's frames: pos -> (frame, diff)."""
    raw = KittiRaw(raw_root)
    frames = raw.frame_numbers(drive)
    images = {pos: read_image(p) for pos, p in targets}
    thumbs = {pos: _thumb(img) for pos, img in images.items()}
    best: dict[int, list[tuple[float, int]]] = {pos: [] for pos in images}
    for f in frames:
        t = _thumb(raw.read_frame(drive, f))
        for pos, th in thumbs.items():
            if th.shape == t.shape:
                d = float(np.abs(th - t).mean())
                if d <= tolerance + 0.5:
                    best[pos].append((d, f))
    found: dict[int, tuple[int, int]] = {}
    for pos, cands in best.items():
        for _, f in sorted(cands):
            diff = pixel_difference(images[pos], raw.read_frame(drive, f))
            if diff is not None and diff <= tolerance:
                found[pos] = (f, diff)
                break
    return found


@dataclass
class MatchReport:
    """All image matches of a build, and the settings they were made with."""

    matches: list[ImageMatch]
    tolerance: int

    def usable(self) -> list[ImageMatch]:
        """Matches with a pixel-verified raw frame (the build uses only these)."""
        return [m for m in self.matches if m.usable]

    def to_json(self) -> dict:
        """The report written beside the shards: matched, verified, mismatched, unmatched."""
        counts = {s: sum(m.status == s for m in self.matches)
                  for s in ("verified", "unverified", "mismatched", "unmatched")}
        recovered = [m for m in self.matches if m.status == "mismatched" and m.usable]
        return {
            "tolerance": self.tolerance,
            "summary": {"images": len(self.matches), "matched": len(self.usable()) + counts["unverified"],
                        "verified": len(self.usable()), "unverified": counts["unverified"],
                        "mismatched": counts["mismatched"], "unmatched": counts["unmatched"],
                        "mismatched_recovered_by_search": len(recovered)},
            "matched": [asdict(m) for m in self.matches if m.usable or m.status == "unverified"],
            "verified": [m.image if m.split == "training" else f"{m.split}/{m.image}" for m in self.usable()],
            "mismatched": [asdict(m) for m in self.matches if m.status == "mismatched"],
            "unmatched": [asdict(m) for m in self.matches if m.status == "unmatched"],
        }


def match_images(images: Iterable[tuple[str, str]], raw_root: str | Path, devkit: str | Path | None,
                 object_root: str | Path, tolerance: int = 0, search_unmapped: bool = False, jobs: int = 1,
                 quiet: bool = True) -> MatchReport:
    """Match object images ((file name, training|testing) pairs) to raw frames, verified by pixels.

    Each image is looked up in the devkit mapping and compared with the object image. A
    mismatched or missing mapped frame is searched for by content in the mapped drive (the
    image then stays listed as mismatched, with ``method`` "search" and the frame it was
    found at); an image with no mapping line is searched in every drive when
    `search_unmapped` is set.
    """
    if tolerance < 0:
        raise AmodalkitError("--match-tolerance must be >= 0")
    raw = KittiRaw(raw_root)
    if not Path(object_root).is_dir():
        raise AmodalkitError("KITTI object folder does not exist (expected OBJECT/training/image_2/"
                             "000000.png)", object_root)
    mapping = read_mapping(devkit) if devkit is not None else None
    todo = sorted(set(images), key=lambda x: (x[1], x[0]))
    located = [_locate(n, s, mapping, str(object_root)) for n, s in todo]
    work = (delayed(_verify)(m, str(raw.root), tolerance) for m in located)
    bar = tqdm(work, total=len(todo), desc="match", unit="image", disable=quiet)
    matches: list[ImageMatch] = list(Parallel(n_jobs=jobs, batch_size=64 if jobs > 1 else "auto")(bar))
    searches: dict[str, list[tuple[int, str]]] = {}
    all_drives: list[str] | None = None
    for pos, m in enumerate(matches):
        if not Path(m.object_image).is_file():
            continue
        if m.status == "mismatched" or (m.status == "unmatched" and m.drive):
            searches.setdefault(m.drive, []).append((pos, m.object_image))
        elif m.status == "unmatched" and search_unmapped:
            all_drives = raw.drives() if all_drives is None else all_drives
            for d in all_drives:
                searches.setdefault(d, []).append((pos, m.object_image))
    if searches:
        drives = sorted(searches)
        work = (delayed(_search_drive)(str(raw.root), d, searches[d], tolerance) for d in drives)
        found = Parallel(n_jobs=jobs)(tqdm(work, total=len(drives), desc="search", unit="drive",
                                           disable=quiet))
        for d, hits in zip(drives, found):
            for pos, (frame, diff) in hits.items():
                m = matches[pos]
                if m.method:
                    continue
                m.method, m.frame, m.drive = "search", frame, d
                m.raw_frame = str(raw.frame_path(d, frame))
                if m.status == "unmatched":
                    m.status, m.max_abs_diff = "verified", diff
                    m.reason = "; ".join(r for r in (m.reason, "found by content search") if r)
                else:
                    m.reason += f"; the drive's frame {frame} matches by content"
    for m in matches:
        if not m.method and m.status == "unmatched":
            m.drive = ""
    return MatchReport(matches, tolerance)
