"""``tracks --sequences``: a KITTI-MOTS style folder of sequences, one shard each, on every executor."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run
from shard_digests import file_digests
from test_tracks import scene, write_frames, write_txt

from amodalkit.io.shard_read import ShardReader

NAMES = ("0002", "0005", "0011")


@pytest.fixture()
def sequences(tmp_path: Path) -> tuple[Path, Path]:
    """TRACKS/NAME.txt and FRAMES/NAME/*.png for three sequences."""
    tracks, frames = tmp_path / "instances_txt", tmp_path / "image_02"
    tracks.mkdir()
    for name in NAMES:
        write_txt(tracks / f"{name}.txt", scene())
        write_frames(frames / name)
    return tracks, frames


def test_one_shard_per_sequence_same_bytes_on_every_executor(sequences: tuple[Path, Path], tmp_path: Path,
                                                             cluster: str,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    tracks, frames = sequences
    common = ["tracks", "--sequences", "--mots", str(tracks), "--frames", str(frames), "--class", "car",
              "--quiet"]
    code, out, err = run(capsys, *common, "--out", str(tmp_path / "one"))
    assert code == 0, err
    assert "3 sequences written" in out and "6 tracks" in out
    for name in NAMES:
        with ShardReader(tmp_path / "one" / f"{name}.h5") as r:
            assert r.video_names == [name] and r.read_video(0).num_objects == 2
    assert run(capsys, *common, "--out", str(tmp_path / "jobs"), "--jobs", "2")[0] == 0
    assert run(capsys, *common, "--out", str(tmp_path / "dask"), "--scheduler", cluster)[0] == 0
    assert file_digests(tmp_path / "one") == file_digests(tmp_path / "jobs")
    assert file_digests(tmp_path / "one") == file_digests(tmp_path / "dask")
    (tmp_path / "one" / "0005.h5").unlink()  # as if its worker had died
    code, out, _ = run(capsys, *common, "--out", str(tmp_path / "one"))
    assert code == 0 and "1 sequences written" in out and "(2 already built)" in out
    assert file_digests(tmp_path / "one") == file_digests(tmp_path / "jobs")


def test_sequence_layout_errors_are_one_line(sequences: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    tracks, frames = sequences
    write_txt(tracks / "0020.txt", scene())
    code, _, err = run(capsys, "tracks", "--sequences", "--mots", str(tracks), "--frames", str(frames),
                       "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "'0020' has tracks but no frame folder", str(frames / "0020"))
    code, _, err = run(capsys, "tracks", "--sequences", "--mots", str(tracks / "0002.txt"), "--frames",
                       str(frames), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "--mots must be a folder")
    code, _, err = run(capsys, "tracks", "--sequences", "--masks", str(tracks), "--frames", str(frames),
                       "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "--sequences takes --mots")
