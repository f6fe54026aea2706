"""What a KINS-Video-Car build makes: its settings, the clips around annotated frames, the by-drive split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from amodalkit.datasets.kins import KinsAnnotation
from amodalkit.errors import AmodalkitError

DEFAULT_CONTEXT = 10


MAX_SEGMENT = 64


PAIR_IOU = 0.5


MOTS_CAR = 1


SPLITS = ("train", "val", "test")


SPLIT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


TRACK_KINDS = ("pointtrack", "builtin")


FLOW_CHUNK = 8


FLOW_BATCH = 2


@dataclass(frozen=True)
class TracksSpec:
    """``pointtrack:DIR`` or ``builtin:DIR``: one ``DRIVE.txt`` per raw drive."""

    kind: str
    folder: Path

    def file_for(self, drive: str) -> Path:
        """The tracks file of one drive."""
        return self.folder / f"{drive}.txt"


def parse_tracks_spec(spec: str) -> TracksSpec:
    """Parse ``pointtrack:DIR`` / ``builtin:DIR`` and check that DIR exists."""
    kind, sep, folder = spec.partition(":")
    if not sep or kind not in TRACK_KINDS or not folder:
        raise AmodalkitError(f"--tracks must be pointtrack:DIR or builtin:DIR, got {spec!r}")
    path = Path(folder)
    if not path.is_dir():
        raise AmodalkitError("tracks folder does not exist (expected one DRIVE.txt per raw drive)", path)
    return TracksSpec(kind, path)


@dataclass(frozen=True)
class BuildConfig:
    """Settings that decide the content of the shards (recorded in ``kins_video.json``)."""

    tracks: str
    context: int = DEFAULT_CONTEXT
    flow: str = "dis"
    checkpoint: str | None = None
    device: str = "cpu"
    split_seed: int = 0
    match_tolerance: int = 0
    keep_unoccluded: bool = False
    search_unmapped: bool = False

    def validate(self) -> TracksSpec:
        """Check the settings; return the parsed tracks spec."""
        if self.context < 0:
            raise AmodalkitError("--context must be >= 0")
        if self.match_tolerance < 0:
            raise AmodalkitError("--match-tolerance must be >= 0")
        if self.device not in ("auto", "cpu"):
            from amodalkit.device import check_device_name

            check_device_name(self.device)
        return parse_tracks_spec(self.tracks)

    def content(self) -> dict:
        """The settings that change shard content (device and paths excluded)."""
        d = asdict(self)
        d.pop("device")
        d["tracks"] = parse_tracks_spec(self.tracks).kind
        d["checkpoint"] = Path(self.checkpoint).name if self.checkpoint else None
        return d


@dataclass
class AnnotatedFrame:
    """One raw frame with KINS car annotations, and how its match was made."""

    frame: int
    image: str
    kins_image_id: int
    kins_json: str
    match_method: str
    annotations: list[KinsAnnotation]


@dataclass
class DriveTask:
    """Everything one worker needs to write one drive's shard."""

    drive: str
    split: str
    raw_root: str
    out_path: str
    stats_path: str
    frames: list[AnnotatedFrame]
    config: BuildConfig
    key: str
    quiet: bool = True


@dataclass
class DriveStats:
    """What a drive contributed (also written to ``OUT/stats/DRIVE.json``)."""

    drive: str
    split: str
    key: str
    clips: int = 0
    frames: int = 0
    tracked_objects: int = 0
    kins_cars: int = 0
    paired: int = 0
    scored: int = 0
    unoccluded: int = 0
    occlusion_rates: list[float] = field(default_factory=list)


def clip_window(frame: int, available: set[int], context: int) -> list[int]:
    """Raw frames [frame - context, frame + context], cut at the drive's ends or a missing frame."""
    lo = hi = frame
    while lo - 1 in available and frame - (lo - 1) <= context:
        lo -= 1
    while hi + 1 in available and (hi + 1) - frame <= context:
        hi += 1
    return list(range(lo, hi + 1))


def group_windows(windows: Sequence[list[int]], max_len: int = MAX_SEGMENT) -> list[list[int]]:
    """Indices of windows read together: overlapping or touching, at most `max_len` frames each."""
    order = sorted(range(len(windows)), key=lambda i: (windows[i][0], windows[i][-1]))
    groups: list[list[int]] = []
    lo = hi = None
    for i in order:
        w0, w1 = windows[i][0], windows[i][-1]
        if groups and w0 <= hi + 1 and max(hi, w1) - lo + 1 <= max_len:
            groups[-1].append(i)
            hi = max(hi, w1)
        else:
            groups.append([i])
            lo, hi = w0, w1
    return groups


def assign_splits(weights: dict[str, int], seed: int,
                  fractions: dict[str, float] | None = None) -> dict[str, list[str]]:
    """Split drives into train/val/test, balancing clip counts (`weights`) to `fractions`.

    The drives are shuffled with `seed`; with three drives or more, the first three go one to
    each split (test, val, train), then each next drive goes to the split furthest below its
    share of clips. Deterministic in (drives, weights, seed).
    """
    fractions = fractions or SPLIT_FRACTIONS
    drives = sorted(weights)
    rng = np.random.default_rng(seed)
    order = [drives[i] for i in rng.permutation(len(drives))]
    total = sum(weights.values())
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    load = dict.fromkeys(SPLITS, 0)
    for i, d in enumerate(order):
        if len(order) >= len(SPLITS) and i < len(SPLITS):
            s = SPLITS[::-1][i]
        else:
            s = max(SPLITS, key=lambda x: (fractions[x] * total - load[x], -SPLITS.index(x)))
        out[s].append(d)
        load[s] += weights[d]
    return {s: sorted(v) for s, v in out.items()}
