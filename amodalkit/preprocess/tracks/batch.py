"""Many sequences at once: a folder of track files and a folder of frame folders, one shard per sequence.

The layout of KITTI-MOTS and of PointTrack's results: ``TRACKS/NAME.txt`` beside
``FRAMES/NAME/*.png`` (KITTI's ``image_02/NAME/``). Each sequence is one unit of the execution
layer (:func:`amodalkit.execution.run_tasks`), written atomically to ``OUT/NAME.h5``; a
rerun skips the sequences whose shard is already complete, so a lost worker's sequence is
simply built again.
"""

from __future__ import annotations

import contextlib
import glob
from dataclasses import dataclass
from pathlib import Path

from amodalkit.errors import AmodalkitError
from amodalkit.io.shard_read import ShardReader
from amodalkit.preprocess.tracks.build import build_tracks_shard


@dataclass(frozen=True)
class Sequence:
    """One sequence to build: its name, track file, frame pattern and output shard."""

    name: str
    tracks: Path
    frames: str
    out: Path


@dataclass(frozen=True)
class SequenceOptions:
    """What :func:`build_tracks_shard` takes besides the paths, the same for every sequence."""

    fmt: str = "auto"
    classes: tuple[str, ...] | None = None
    tracker: str | None = None
    flow: str | None = None
    flow_checkpoint: str | None = None
    device: str = "auto"
    iou_threshold: float = 0.3
    max_gap: int = 3


def find_sequences(tracks_dir: Path, frames_root: Path, out_dir: Path) -> list[Sequence]:
    """Every ``TRACKS/NAME.txt`` with its frame folder ``FRAMES/NAME/``, in name order."""
    if not tracks_dir.is_dir():
        raise AmodalkitError("--sequences: --mots must be a folder of NAME.txt track files", tracks_dir)
    if not frames_root.is_dir():
        raise AmodalkitError("--sequences: --frames must be a folder holding one frame folder per sequence",
                             frames_root)
    files = sorted(p for p in tracks_dir.glob("*.txt") if not p.name.startswith("."))
    if not files:
        raise AmodalkitError("--sequences: the folder holds no NAME.txt track files", tracks_dir)
    out = []
    for f in files:
        frames = frames_root / f.stem
        if not frames.is_dir():
            raise AmodalkitError(f"sequence {f.stem!r} has tracks but no frame folder", frames)
        pattern = str(Path(glob.escape(str(frames))) / "*.png")
        out.append(Sequence(f.stem, f, pattern, out_dir / f"{f.stem}.h5"))
    return out


def sequence_done(seq: Sequence) -> bool:
    """True when the sequence's shard exists and reads back as one complete video."""
    if not seq.out.is_file():
        return False
    with contextlib.suppress(AmodalkitError, OSError):
        with ShardReader(seq.out) as r:
            return r.video_names == [seq.name]
    return False


def build_sequence(options: SequenceOptions, seq: Sequence) -> dict:
    """Build one sequence's shard (a unit of work); returns its name, frame and track counts."""
    video = build_tracks_shard(seq.out, seq.frames, mots=seq.tracks, fmt=options.fmt,
                               classes=options.classes, tracker=options.tracker, flow=options.flow,
                               iou_threshold=options.iou_threshold, max_gap=options.max_gap, name=seq.name,
                               quiet=True, flow_checkpoint=options.flow_checkpoint, device=options.device)
    return {"name": seq.name, "frames": video.num_frames, "tracks": video.num_objects}
