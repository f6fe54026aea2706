from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run

from amodalkit.datasets.chewing_gum import generate_video, make_config, video_seed
from amodalkit.errors import AmodalkitError
from amodalkit.io.flowio import read_flo, read_kitti_png, write_flo
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import update_shard, write_shard
from amodalkit.io.shards import FLOW_QUANTUM, Video, flow_for_storage, quantized_flow
from amodalkit.preprocess.flow.backends import (
    BACKENDS,
    DISBackend,
    FlowNet2Backend,
    end_point_error,
    get_flow_backend,
)
from amodalkit.preprocess.flow.base import FlowBackend
from amodalkit.preprocess.flow.stage import fill_shard_flow, list_frames


@pytest.fixture(scope="module")
def cg_video():
    """The first savos2022 test video, with its exact flow."""
    return generate_video(make_config("savos2022"), video_seed(0, "test", 0))


@pytest.fixture()
def small_shard(tmp_path: Path) -> Path:
    """Two short savos2022 videos (6 frames) in one shard, flow_backend 'exact'."""
    cfg = make_config("savos2022", frames=6)
    videos = [generate_video(cfg, video_seed(0, "test", i), name=f"{i:05d}") for i in range(2)]
    return write_shard(tmp_path / "test-00000.h5", videos, {"generator": "test"})


@pytest.fixture()
def frame_folder(tmp_path: Path, cg_video) -> Path:
    """Five PNG frames named 0.png .. 4.png (natural, not lexicographic, order matters past 9)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, frame in enumerate(cg_video.frames[:5]):
        cv2.imwrite(str(folder / f"{i}.png"), frame[..., ::-1])
    return folder


def textured_pair(shift: tuple[int, int], size: tuple[int, int] = (64, 96)) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random texture and the same texture moved by (dx, dy) whole pixels."""
    dx, dy = shift
    rng = np.random.default_rng(3)
    h, w = size
    base = cv2.GaussianBlur(rng.integers(0, 256, (h + 20, w + 20), dtype=np.uint8), (0, 0), 1.5)
    base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX)
    first = base[10:10 + h, 10:10 + w]
    second = base[10 - dy:10 - dy + h, 10 - dx:10 - dx + w]
    return np.repeat(first[..., None], 3, axis=2), np.repeat(second[..., None], 3, axis=2)


def test_registry_names_and_errors(tmp_path: Path) -> None:
    assert set(BACKENDS) == {"dis", "flownet2", "ptlflow", "rigid"}
    assert get_flow_backend("dis").name == "dis"
    assert get_flow_backend().name == "dis"
    assert get_flow_backend("dis:fast").name == "dis:fast"
    with pytest.raises(AmodalkitError, match="unknown flow backend"):
        get_flow_backend("farneback")
    with pytest.raises(AmodalkitError, match="unknown DIS preset"):
        get_flow_backend("dis:slow")
    with pytest.raises(AmodalkitError, match="--checkpoint"):
        get_flow_backend("flownet2")
    with pytest.raises(AmodalkitError, match="no weights"):
        get_flow_backend("dis", checkpoint=tmp_path / "x.pth")
    with pytest.raises(AmodalkitError, match="ptlflow:NAME"):
        get_flow_backend("ptlflow")


@pytest.mark.skipif(importlib.util.find_spec("ptlflow") is not None, reason="ptlflow is installed")
def test_ptlflow_missing_says_how_to_install() -> None:
    with pytest.raises(AmodalkitError, match="pip install ptlflow"):
        get_flow_backend("ptlflow:raft", checkpoint="things")


def test_dis_recovers_a_shift_and_backward_swaps_pairs() -> None:
    first, second = textured_pair((3, -2))
    dis = DISBackend()
    frames = np.stack([first, second])
    fwd = dis.compute(frames)
    assert fwd.shape == (1, 64, 96, 2) and fwd.dtype == np.float32
    inner = fwd[0, 12:-12, 12:-12].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, axis=0), [3.0, -2.0], atol=0.25)
    bwd = dis.compute_backward(frames)
    np.testing.assert_array_equal(bwd, dis.compute_pairs(frames[1:], frames[:-1]))
    inner = bwd[0, 12:-12, 12:-12].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, axis=0), [-3.0, 2.0], atol=0.25)


def test_dis_end_point_error_on_chewing_gum(cg_video) -> None:
    flow = get_flow_backend("dis").compute(cg_video.frames)
    exact = cg_video.flow.astype(np.float32)
    assert flow.shape == exact.shape
    objects = cg_video.visible_ids[:-1] > 0
    epe_all = end_point_error(flow, exact)
    epe_objects = end_point_error(flow, exact, objects)
    zero_objects = end_point_error(np.zeros_like(exact), exact, objects)
    assert epe_all < 0.8
    assert epe_objects < 0.6 * zero_objects


def test_end_point_error() -> None:
    a = np.zeros((2, 3, 4, 2))
    b = np.zeros((2, 3, 4, 2))
    b[..., 0] = 3.0
    b[..., 1] = 4.0
    assert end_point_error(a, b) == 5.0
    mask = np.zeros((2, 3, 4), bool)
    assert np.isnan(end_point_error(a, b, mask))


def test_frames_must_be_uint8_rgb() -> None:
    with pytest.raises(AmodalkitError, match="uint8"):
        DISBackend().compute(np.zeros((3, 8, 8, 3), np.float32))
    with pytest.raises(AmodalkitError, match="batch-size"):
        DISBackend().compute(np.zeros((3, 8, 8, 3), np.uint8), batch_size=0)
    assert DISBackend().compute(np.zeros((1, 8, 8, 3), np.uint8)).shape == (0, 8, 8, 2)


def test_cli_fills_shard_flow(small_shard: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "flow", str(small_shard), "--backend", "dis", "--quiet")
    assert code == 0, out
    with ShardReader(small_shard) as r:
        assert r.provenance["generator"] == "test"
        assert r.provenance["flow"]["backend"] == "dis"
        for i in range(len(r)):
            assert r.meta(i)["flow_backend"] == "dis"
            video = r.read_video(i)
            assert video.flow.dtype == np.float16 and video.flow.shape == (5, 50, 56, 2)
            assert video.flow_backward.dtype == np.float16
            expect = DISBackend().compute(video.frames)
            np.testing.assert_array_equal(video.flow, quantized_flow(flow_for_storage(expect)))
            assert np.abs(video.flow - expect).max() <= FLOW_QUANTUM / 2 + 2 ** -10 * np.abs(expect).max()
    code, out, _ = run(capsys, "flow", str(small_shard), "--quiet")
    assert code == 0 and "1 already had it" in out


def test_killed_run_leaves_the_original_shard(small_shard: Path) -> None:
    before = small_shard.read_bytes()

    class Exploding(FlowBackend):
        name = "boom"
        calls = 0

        def __init__(self) -> None:
            self.provenance = {"backend": "boom"}

        def _pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
            Exploding.calls += 1
            if Exploding.calls > 2:
                raise KeyboardInterrupt
            return np.zeros((*first.shape[:3], 2), np.float32)

    with pytest.raises(KeyboardInterrupt):
        fill_shard_flow(small_shard, Exploding(), batch_size=5)
    assert small_shard.read_bytes() == before
    assert sorted(p.name for p in small_shard.parent.iterdir()) == [small_shard.name]
    with ShardReader(small_shard) as r:
        assert r.meta(0)["flow_backend"] == "exact"


def test_cli_frame_folder_to_flo_and_kitti(frame_folder: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "flo"
    code, stdout, _ = run(capsys, "flow", "--frames", str(frame_folder / "*.png"), "--out", str(out),
                          "--quiet", "--batch-size", "3")
    assert code == 0, stdout
    assert sorted(p.name for p in out.iterdir()) == ["0.flo", "1.flo", "2.flo", "3.flo"]
    frames = np.stack([cv2.imread(str(frame_folder / f"{i}.png"))[..., ::-1] for i in range(5)])
    expect = DISBackend().compute(frames)
    for i in range(4):
        ours = read_flo(out / f"{i}.flo")
        assert np.array_equal(cv2.readOpticalFlow(str(out / f"{i}.flo")), ours)
        np.testing.assert_array_equal(ours, expect[i])
    kitti = tmp_path / "kitti"
    code, _, _ = run(capsys, "flow", "--frames", str(frame_folder / "*.png"), "--out", str(kitti),
                     "--format", "kitti-png", "--quiet")
    assert code == 0
    flow, valid = read_kitti_png(kitti / "0.png")
    assert valid.all()
    assert np.abs(flow - expect[0]).max() <= 1 / 64 + 1e-3


def test_frames_are_in_natural_order(tmp_path: Path) -> None:
    for i in (1, 2, 10):
        (tmp_path / f"f{i}.png").touch()
    assert [p.name for p in list_frames(str(tmp_path / "*.png"))] == ["f1.png", "f2.png", "f10.png"]


def test_cli_frame_folder_errors(frame_folder: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    pattern = str(frame_folder / "*.png")
    code, _, err = run(capsys, "flow", "--frames", pattern, "--out", str(frame_folder),
                       "--format", "kitti-png", "--quiet")
    assert_one_line_error(code, err, "would overwrite an input file")
    code, _, err = run(capsys, "flow", "--frames", str(tmp_path / "none" / "*.png"), "--out", str(tmp_path))
    assert_one_line_error(code, err, "at least two frames")
    code, _, err = run(capsys, "flow", "--frames", pattern)
    assert_one_line_error(code, err, "--out")
    code, _, err = run(capsys, "flow")
    assert_one_line_error(code, err, "SHARD")
    cv2.imwrite(str(frame_folder / "5.png"), np.zeros((10, 10, 3), np.uint8))
    code, _, err = run(capsys, "flow", "--frames", pattern, "--out", str(tmp_path / "o"), "--quiet")
    assert_one_line_error(code, err, "5.png", "the first frame is")


def test_cli_backend_errors(small_shard: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "flow", str(small_shard), "--backend", "flownet2")
    assert_one_line_error(code, err, "--checkpoint")
    missing = tmp_path / "FlowNet2_checkpoint.pth.tar"
    code, _, err = run(capsys, "flow", str(small_shard), "--backend", "flownet2",
                       "--checkpoint", str(missing))
    assert_one_line_error(code, err, str(missing), "not found")
    code, _, err = run(capsys, "flow", str(small_shard), "--backend", "nope")
    assert_one_line_error(code, err, "unknown flow backend")


def test_cli_corrupt_flo_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_flo(tmp_path / "good.flo", np.ones((4, 5, 2), np.float32))
    code, out, _ = run(capsys, "flow", "--inspect", str(good))
    assert code == 0 and "5x4 flow" in out
    bad = tmp_path / "bad.flo"
    bad.write_bytes(good.read_bytes()[:-3])
    code, _, err = run(capsys, "flow", "--inspect", str(bad))
    assert_one_line_error(code, err, str(bad), "truncated")
    bad.write_bytes(b"XXXX" + good.read_bytes()[4:])
    code, _, err = run(capsys, "flow", "--inspect", str(bad))
    assert_one_line_error(code, err, str(bad), "magic number")


class Recording(FlowBackend):
    """Flow = (index of the first frame, index of the second) everywhere; records each call's pairs."""

    name = "recording"

    def __init__(self) -> None:
        self.provenance = {"backend": "recording"}
        self.calls: list[list[tuple[int, int]]] = []

    def _pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        pairs = [(int(a[0, 0, 0]), int(b[0, 0, 0])) for a, b in zip(first, second, strict=True)]
        self.calls.append(pairs)
        out = np.empty((*first.shape[:3], 2), np.float32)
        out[..., 0] = first[:, :1, :1, 0]
        out[..., 1] = second[:, :1, :1, 0]
        return out


def numbered_frames(n: int) -> np.ndarray:
    """n frames whose pixels all hold the frame's index."""
    return np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 4, 5, 3)).copy()


def test_compute_both_puts_both_directions_in_one_call() -> None:
    rec = Recording()
    done: list[int] = []
    fwd, bwd = rec.compute_both(numbered_frames(4), batch_size=2, progress=done.append)
    assert rec.calls == [[(0, 1), (1, 0)], [(1, 2), (2, 1)], [(2, 3), (3, 2)]]
    assert done == [2, 2, 2]
    np.testing.assert_array_equal(fwd[:, 0, 0], [[0, 1], [1, 2], [2, 3]])
    np.testing.assert_array_equal(bwd[:, 0, 0], [[1, 0], [2, 1], [3, 2]])
    rec.calls.clear()
    rec.compute_both(numbered_frames(4), batch_size=4)
    assert [len(c) for c in rec.calls] == [4, 2]
    empty = rec.compute_both(numbered_frames(1))
    assert empty[0].shape == empty[1].shape == (0, 4, 5, 2)
    with pytest.raises(AmodalkitError, match="batch-size"):
        rec.compute_both(numbered_frames(3), batch_size=0)


@pytest.mark.parametrize("batch_size", [1, 2, 3, 8])
def test_dis_compute_both_equals_the_two_passes_exactly(cg_video, batch_size: int) -> None:
    dis = DISBackend()
    frames = cg_video.frames[:9]
    fwd, bwd = dis.compute_both(frames, batch_size)
    np.testing.assert_array_equal(fwd, dis.compute(frames, batch_size))
    np.testing.assert_array_equal(bwd, dis.compute_backward(frames, batch_size))


def test_flownet2_compute_both_equals_the_two_passes() -> None:
    """Random official-init weights; both directions of both pairs in one network call."""
    import torch

    from amodalkit.preprocess.flow.flownet2 import FlowNet2, for_inference

    torch.manual_seed(0)
    backend = FlowNet2Backend.__new__(FlowNet2Backend)
    backend.device, backend.model = "cpu", for_inference(FlowNet2())
    frames = np.random.default_rng(0).integers(0, 255, (3, 30, 40, 3), dtype=np.uint8)
    fwd, bwd = backend.compute_both(frames, batch_size=4)
    ref_fwd, ref_bwd = backend.compute(frames, batch_size=2), backend.compute_backward(frames, batch_size=2)
    assert np.abs(ref_fwd).max() > 1e-3 and not np.allclose(ref_fwd, ref_bwd)
    scale = max(np.abs(ref_fwd).max(), np.abs(ref_bwd).max())
    np.testing.assert_allclose(fwd, ref_fwd, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(bwd, ref_bwd, rtol=1e-4, atol=1e-5 * scale)


def test_fill_shard_flow_reads_back_like_the_full_rewrite(small_shard: Path, tmp_path: Path) -> None:
    """The flow-only rewrite gives what decoding and re-encoding the whole shard (two passes) gave."""
    old = tmp_path / "old" / small_shard.name
    old.parent.mkdir()
    old.write_bytes(small_shard.read_bytes())
    dis = DISBackend()

    def two_pass(video: Video) -> Video:
        return video.evolve(flow=flow_for_storage(dis.compute(video.frames)),
                            flow_backward=flow_for_storage(dis.compute_backward(video.frames)),
                            flow_backend=dis.name)

    update_shard(old, two_pass, {"flow": dis.provenance})
    counted: list[int] = []
    fill_shard_flow(small_shard, dis, batch_size=3, progress=counted.append)
    assert sum(counted) == 2 * 2 * 5
    with ShardReader(small_shard) as new, ShardReader(old) as ref:
        assert new.provenance == ref.provenance
        for i in range(len(ref)):
            assert new.meta(i) == ref.meta(i)
            a, b = new.read_video(i), ref.read_video(i)
            for name in ("frames", "visible_ids", "amodal", "amodal_annotated", "presence", "track_ids",
                         "source_frame_ids", "flow", "flow_backward"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
            assert (a.provenance, a.flow_backend) == (b.provenance, b.flow_backend)


def test_cli_device_accepts_cuda_n_and_refuses_junk(small_shard: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    code, _, err = run(capsys, "flow", str(small_shard), "--device", "gpu", "--quiet")
    assert_one_line_error(code, err, "--device must be auto, cpu, cuda or cuda:N", "'gpu'")
    code, out, err = run(capsys, "flow", str(small_shard), "--device", "cuda:1", "--quiet")
    assert code == 0 and "dis flow in 1 shards" in out, err
    if not torch.cuda.is_available():
        code, _, err = run(capsys, "flow", str(small_shard), "--backend", "flownet2", "--checkpoint",
                           str(tmp_path / "FlowNet2_checkpoint.pth.tar"), "--device", "cuda:1")
        assert_one_line_error(code, err, "--device cuda:1", "no CUDA GPU")
