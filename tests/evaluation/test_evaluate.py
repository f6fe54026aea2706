from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
import pytest

from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import evaluate_method
from amodalkit.evaluation.prefetch import THREAD_NAME, PrefetchedVideos, open_readers, read_videos
from amodalkit.io.shard_read import ShardReader, iter_videos
from amodalkit.io.shards import Video, expand_shard_paths
from amodalkit.models.base import AmodalMethod
from amodalkit.models.registry import build_method


class Oracle(AmodalMethod):
    name = "oracle"
    fields = ("amodal",)

    def predict_video(self, video: Video) -> np.ndarray:
        return video.amodal.astype(np.float32)


class VisibleOnly(AmodalMethod):
    name = "visible"

    def predict_video(self, video: Video) -> np.ndarray:
        return video.visible_masks()


def test_oracle_scores_one_and_visible_scores_zero_occluded(cg_savos) -> None:
    paths = expand_shard_paths(str(cg_savos / "test-*.h5"))
    oracle = evaluate_method(Oracle(), paths, quiet=True)
    assert oracle["frame_miou_full"] == pytest.approx(1.0)
    assert oracle["frame_miou_occluded"] == pytest.approx(1.0)
    visible = evaluate_method(VisibleOnly(), paths, quiet=True)
    assert visible["frame_miou_occluded"] < 1e-5
    assert visible["n_videos"] == 6
    assert visible["n_object_frames"] == 6 * 2 * 40


def test_convex_between_visible_and_oracle(cg_savos) -> None:
    paths = expand_shard_paths(str(cg_savos / "test-*.h5"))
    r = evaluate_method(build_method("convex"), paths, quiet=True, data="x")
    assert set(r) >= {"method", "data", "frame_miou_full", "frame_miou_occluded", "object_miou_full",
                      "object_miou_occluded", "n_videos", "n_object_frames", "n_occluded_object_frames"}
    assert 0.75 < r["frame_miou_full"] < 0.98
    assert 0.1 < r["frame_miou_occluded"] < 0.6
    assert r["data"] == "x"


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


class Recorder(Oracle):
    """The oracle, noting which videos each ``predict_videos`` call got; stops at call `stop_at`."""

    def __init__(self, videos_per_batch: int = 1, stop_at: int | None = None,
                 stop: type[BaseException] = KeyboardInterrupt) -> None:
        self.videos_per_batch = videos_per_batch
        self.stop_at = stop_at
        self.stop = stop
        self.calls: list[list[str]] = []

    def predict_videos(self, videos: Sequence[Video]) -> list[np.ndarray]:
        if len(self.calls) == self.stop_at:
            raise self.stop("stopped by the test")
        self.calls.append([v.name for v in videos])
        return super().predict_videos(videos)


def corrupt_chunk(path: Path, video_index: int, field: str = "amodal") -> Path:
    """Overwrite the first stored chunk of `field` of one video with garbage (the layout stays valid)."""
    with h5py.File(path, "r") as f:
        info = f["videos"][sorted(f["videos"])[video_index]][field].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    return path


@pytest.fixture
def three_shards(cg_savos: Path, tmp_path: Path) -> list[Path]:
    """Two good shards around a third whose layout is valid but whose second video's data is corrupt."""
    middle = shutil.copy(cg_savos / "test-00001.h5", tmp_path / "middle.h5")
    corrupt_chunk(Path(middle), 1)
    return [cg_savos / "test-00000.h5", Path(middle), cg_savos / "train-00000.h5"]


@pytest.mark.parametrize("make", [Oracle, VisibleOnly, lambda: build_method("convex"),
                                  lambda: build_method("temporal", k=2, bidirectional=True)])
def test_prefetching_gives_identical_scores(cg_savos: Path, make: Callable[[], AmodalMethod]) -> None:
    paths = expand_shard_paths([str(cg_savos / "test-*.h5"), str(cg_savos / "train-*.h5")])
    serial = evaluate_method(make(), paths, quiet=True, prefetch=False)
    prefetched = evaluate_method(make(), paths, quiet=True)
    assert prefetched == serial
    assert serial["n_videos"] == 10
    assert prefetch_threads() == []


@pytest.mark.parametrize("batch", [1, 3, 4, 20])
def test_prefetching_keeps_order_and_batches(cg_savos: Path, batch: int) -> None:
    paths = expand_shard_paths([str(cg_savos / "test-*.h5"), str(cg_savos / "val-*.h5")])
    expected = [v.name for _, v in iter_videos(paths, ())]
    runs = []
    for prefetch in (False, True):
        method = Recorder(videos_per_batch=batch)
        evaluate_method(method, paths, quiet=True, prefetch=prefetch)
        runs.append(method.calls)
    assert runs[0] == runs[1]
    assert [name for call in runs[1] for name in call] == expected
    assert {len(call) for call in runs[1][:-1]} <= {batch}


def test_each_shard_is_validated_once(cg_savos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Path] = []
    validate = ShardReader._open_and_validate

    def counting(self: ShardReader) -> None:
        opened.append(self.path)
        validate(self)

    monkeypatch.setattr(ShardReader, "_open_and_validate", counting)
    paths = expand_shard_paths(str(cg_savos / "test-*.h5"))
    for prefetch in (False, True):
        opened.clear()
        evaluate_method(build_method("convex"), paths, quiet=True, prefetch=prefetch)
        assert opened == paths


@pytest.mark.parametrize("prefetch", [False, True])
def test_corrupt_data_in_a_middle_shard_is_one_line_naming_it(three_shards: list[Path],
                                                               prefetch: bool) -> None:
    method = Recorder()
    with pytest.raises(AmodalkitError) as err:
        evaluate_method(method, three_shards, quiet=True, prefetch=prefetch)
    assert err.value.path == str(three_shards[1])
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"{three_shards[1]}: cannot read 'amodal' of video")
    assert len(method.calls) == 4
    assert prefetch_threads() == []


def test_corrupt_layout_in_a_middle_shard_fails_before_predicting(cg_savos: Path, tmp_path: Path) -> None:
    middle = tmp_path / "middle.h5"
    middle.write_bytes((cg_savos / "test-00001.h5").read_bytes()[:5000])
    method = Recorder()
    with pytest.raises(AmodalkitError) as err:
        evaluate_method(method, [cg_savos / "test-00000.h5", middle, cg_savos / "train-00000.h5"], quiet=True)
    assert err.value.path == str(middle)
    assert "\n" not in str(err.value)
    assert method.calls == []
    assert prefetch_threads() == []


@pytest.mark.parametrize("stop", [KeyboardInterrupt, RuntimeError])
def test_stopping_early_ends_the_reader_thread(cg_savos: Path, stop: type[BaseException]) -> None:
    paths = expand_shard_paths([str(cg_savos / "test-*.h5"), str(cg_savos / "train-*.h5")])
    method = Recorder(stop_at=1, stop=stop)
    with pytest.raises(stop, match="stopped by the test"):
        evaluate_method(method, paths, quiet=True)
    assert method.calls == [["000000"]]
    assert prefetch_threads() == []


def test_prefetched_videos_match_the_calling_thread_and_close(cg_savos: Path) -> None:
    paths = expand_shard_paths(str(cg_savos / "*.h5"))
    fields = ("amodal", "flow")
    serial = list(read_videos(open_readers(paths), fields))
    readers = open_readers(paths)
    with PrefetchedVideos(readers, fields, ahead=1) as videos:
        prefetched = list(videos)
    assert [v.name for v in prefetched] == [v.name for v in serial]
    for a, b in zip(prefetched, serial, strict=True):
        for name in ("visible_ids", "presence", "amodal", "amodal_annotated", "flow"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert all(r._file is None for r in readers)
    assert prefetch_threads() == []


def test_leaving_the_block_early_stops_a_blocked_reader(cg_savos: Path) -> None:
    readers = open_readers(expand_shard_paths(str(cg_savos / "*.h5")))
    with PrefetchedVideos(readers, (), ahead=1) as videos:
        first = next(iter(videos))
        deadline = time.monotonic() + 5
        while not videos._queue.full() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert videos._queue.full()
    assert first.name == "000000"
    assert prefetch_threads() == []
    assert all(r._file is None for r in readers)


def test_prefetched_videos_outside_their_block_are_an_error(cg_savos: Path) -> None:
    readers = open_readers(expand_shard_paths(str(cg_savos / "test-*.h5")))
    videos = PrefetchedVideos(readers, (), ahead=2)
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        next(iter(videos))
    with videos:
        assert len(list(videos)) == 6
        assert list(videos) == []
    with pytest.raises(RuntimeError, match="outside its `with` block"):
        next(iter(videos))
    assert prefetch_threads() == []
