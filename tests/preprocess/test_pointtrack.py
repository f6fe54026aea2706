"""PointTrack: official-layout checkpoints load, clustering, point sampling and association on toy data."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from amodalkit.errors import AmodalkitError
from amodalkit.preprocess.tracks.formats import Instance
from amodalkit.preprocess.tracks.pointtrack import (
    PointTrackSegmenter,
    PointTrackTracker,
    cluster,
    instance_points,
    load_segmenter,
    load_tracker,
    track_video,
)
from amodalkit.preprocess.tracks.pointtrack_nets import SegmenterNet, location_embedding
from amodalkit.preprocess.tracks.pointtrack_track import CATEGORY_CODES, embedding_grid

# Facts read off detectRecog/PointTrack (models/erfnet.py, models/BranchedERFNet.py and the
# configs car_test_se_to_save.py / car_test_tracking_val.py), written out independently of our code.
SEGMENTER_KEYS, SEGMENTER_PARAMS = 433, 2_252_838
TRACKER_KEYS, TRACKER_PARAMS = 104, 1_419_809

Layout = dict[str, tuple[int, ...]]


def _bn(out: Layout, name: str, c: int) -> None:
    for leaf in ("weight", "bias", "running_mean", "running_var"):
        out[f"{name}.{leaf}"] = (c,)
    out[f"{name}.num_batches_tracked"] = ()


def _conv(out: Layout, name: str, weight: tuple[int, ...]) -> None:
    out[f"{name}.weight"], out[f"{name}.bias"] = weight, (weight[0],)


def official_segmenter_layout() -> Layout:
    """Key -> shape of ``BranchedERFNet(num_classes=[4, 1])``'s state dict, from the official layer list."""
    out: Layout = {}

    def down(name: str, cin: int, cout: int) -> None:
        _conv(out, f"{name}.conv", (cout - cin, cin, 3, 3))
        _bn(out, f"{name}.bn", cout)

    def nb1d(name: str, c: int) -> None:
        for i in (1, 2):
            _conv(out, f"{name}.conv3x1_{i}", (c, c, 3, 1))
            _conv(out, f"{name}.conv1x3_{i}", (c, c, 1, 3))
            _bn(out, f"{name}.bn{i}", c)

    def up(name: str, cin: int, cout: int) -> None:
        out[f"{name}.conv.weight"], out[f"{name}.conv.bias"] = (cin, cout, 3, 3), (cout,)
        _bn(out, f"{name}.bn", cout)

    down("encoder.initial_block", 3, 16)
    down("encoder.layers.0", 16, 64)
    for i in range(1, 6):
        nb1d(f"encoder.layers.{i}", 64)
    down("encoder.layers.6", 64, 128)
    for i in range(7, 15):
        nb1d(f"encoder.layers.{i}", 128)
    _conv(out, "encoder.output_conv", (5, 128, 1, 1))
    for d, n in enumerate((4, 1)):
        up(f"decoders.{d}.layers.0", 128, 64)
        nb1d(f"decoders.{d}.layers.1", 64)
        nb1d(f"decoders.{d}.layers.2", 64)
        up(f"decoders.{d}.layers.3", 64, 16)
        nb1d(f"decoders.{d}.layers.4", 16)
        nb1d(f"decoders.{d}.layers.5", 16)
        out[f"decoders.{d}.output_conv.weight"], out[f"decoders.{d}.output_conv.bias"] = (16, n, 2, 2), (n,)
    return out


def official_tracker_layout() -> Layout:
    """Key -> shape of ``TrackerOffsetEmb(num_points=1000, border_ic=3, env_points=500, outputD=32)``."""
    out: Layout = {}
    border = {"conv1": (2, 64), "conv2": (64, 128), "conv3": (128, 128), "e_conv1": (3, 64),
              "e_conv2": (64, 128), "e_conv3": (128, 256), "t_conv1": (3, 64), "t_conv2": (64, 128),
              "t_conv3": (128, 128), "conv4": (512, 256), "conv5": (256, 512), "conv6": (512, 256)}
    for name, (cin, cout) in border.items():
        _conv(out, f"point_feat.borderConv.{name}", (cout, cin, 1))
    main = {"conv1": (2, 64), "conv2": (64, 128), "conv3": (128, 256), "e_conv1": (3, 64),
            "e_conv2": (64, 128), "e_conv3": (128, 256), "conv4": (512, 256), "conv5": (256, 512),
            "conv6": (512, 64), "conv7": (512, 256), "conv8": (256, 512), "conv9": (512, 64),
            "conv_weight": (128, 1)}
    for name, (cin, cout) in main.items():
        _conv(out, f"point_feat.{name}", (cout, cin, 1))
    for name, c in {"conv1": 64, "conv2": 128, "conv3": 256, "e_conv1": 64, "e_conv2": 128, "e_conv3": 256,
                    "conv4": 256, "conv5": 512, "conv7": 256, "conv8": 512}.items():
        _bn(out, f"point_feat.{name}_bn", c)
    _conv(out, "point_feat.last_emb.0", (256, 960))
    _conv(out, "point_feat.last_emb.2", (32, 256))
    return out


def random_state(layout: Layout, seed: int) -> dict[str, torch.Tensor]:
    """Seeded weights of `layout`: fan-in scaled weights and non-trivial BatchNorm statistics."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for k, shape in layout.items():
        leaf = k.rsplit(".", 1)[1]
        if leaf == "num_batches_tracked":
            state[k] = torch.tensor(1234, dtype=torch.int64)
        elif leaf == "running_var":
            state[k] = 0.5 + torch.rand(shape, generator=gen)
        elif leaf == "running_mean":
            state[k] = 0.1 * torch.randn(shape, generator=gen)
        elif leaf == "weight" and len(shape) == 1:
            state[k] = 0.75 + 0.5 * torch.rand(shape, generator=gen)
        elif leaf == "bias":
            state[k] = 0.05 * torch.randn(shape, generator=gen)
        else:
            state[k] = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
    return state


def official_checkpoint(layout: Layout, seed: int) -> dict:
    """The released files' layout: a training dict whose ``model_state_dict`` has ``module.`` keys."""
    state = {f"module.{k}": v for k, v in random_state(layout, seed).items()}
    return {"epoch": 199, "best_iou": np.float64(0.81), "best_seed": 0.9, "model_state_dict": state,
            "optim_state_dict": {"state": {}, "param_groups": [{"lr": 5e-6, "params": [0, 1]}]},
            "logger_data": {"train": [0.5, 0.4], "val": [0.3]}}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: these networks are tiny here, and a shared machine stalls thread pools."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Official-layout segmenter and tracker checkpoints, saved in torch 1.3's legacy format."""
    root = tmp_path_factory.mktemp("pointtrack")
    paths = {"segmenter": root / "best_seed_model.pthCar", "tracker": root / "PointTrack.pthCar"}
    torch.save(official_checkpoint(official_segmenter_layout(), 0), paths["segmenter"],
               _use_new_zipfile_serialization=False)
    torch.save(official_checkpoint(official_tracker_layout(), 1), paths["tracker"],
               _use_new_zipfile_serialization=False)
    return paths


def test_official_layouts_have_the_released_sizes() -> None:
    for layout, keys, params in ((official_segmenter_layout(), SEGMENTER_KEYS, SEGMENTER_PARAMS),
                                 (official_tracker_layout(), TRACKER_KEYS, TRACKER_PARAMS)):
        learned = [s for k, s in layout.items() if k.rsplit(".", 1)[1] in ("weight", "bias")]
        assert (len(layout), sum(math.prod(s) for s in learned)) == (keys, params)


def test_segmenter_loads_the_official_checkpoint(checkpoints: dict[str, Path]) -> None:
    model = load_segmenter(checkpoints["segmenter"], pad_to=None)
    assert sum(p.numel() for p in model.parameters()) == SEGMENTER_PARAMS
    assert len(model.state_dict()) == SEGMENTER_KEYS and not model.training
    expected = random_state(official_segmenter_layout(), 0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, expected[k]), k
    x = torch.rand(2, 3, 37, 61, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        out = model(x)
        padded = nn.functional.pad(x, (0, 3, 0, 3), mode="replicate")
        reference = SegmenterNet.forward(model, padded)[:, :, :37, :61]
    assert out.shape == (2, 5, 37, 61) and torch.isfinite(out).all()
    assert torch.allclose(out, reference, atol=1e-5)
    assert out.std() > 1e-3


def test_segmenter_pads_like_the_official_test_script() -> None:
    with torch.device("meta"):
        official, free = PointTrackSegmenter(), PointTrackSegmenter(pad_to=None)
    assert official.padded_size(375, 1242) == (384, 1248)
    assert official.padded_size(400, 1300) == (400, 1304)
    assert free.padded_size(375, 1242) == (376, 1248)
    with pytest.raises(AmodalkitError, match="multiples of 8"):
        PointTrackSegmenter(pad_to=(380, 1248))


def test_tracker_loads_the_official_checkpoint(checkpoints: dict[str, Path]) -> None:
    model = load_tracker(checkpoints["tracker"])
    assert sum(p.numel() for p in model.parameters()) == TRACKER_PARAMS
    assert len(model.state_dict()) == TRACKER_KEYS
    gen = torch.Generator().manual_seed(4)
    with torch.inference_mode():
        emb = model(torch.rand(3, 1500, 8, generator=gen), torch.rand(3, 4, generator=gen))
    assert emb.shape == (3, 32) and torch.isfinite(emb).all()
    with pytest.raises(AmodalkitError, match="1500"):
        model(torch.rand(3, 1400, 8), torch.rand(3, 4))


def test_location_embedding_matches_the_formula() -> None:
    box = torch.tensor([[0.1, 0.2, 0.3, 0.6]], dtype=torch.float64)
    geometry = [0.2, 0.4, 1.2, 1.4]
    angles = [100 * g / 1000 ** (k / 8) for g in geometry for k in range(8)]
    expected = torch.tensor([[*map(math.sin, angles), *map(math.cos, angles)]], dtype=torch.float64)
    assert torch.allclose(location_embedding(box), expected, atol=1e-9)


@pytest.mark.parametrize("wrap", [lambda s: s, lambda s: {k[len("module."):]: v for k, v in s.items()}])
def test_bare_state_dicts_load_with_or_without_module(tmp_path: Path, wrap: Callable[[dict], dict]) -> None:
    path = tmp_path / "bare.pth"
    torch.save(wrap(official_checkpoint(official_tracker_layout(), 1)["model_state_dict"]), path)
    assert sum(p.numel() for p in load_tracker(path).parameters()) == TRACKER_PARAMS


class Payload:
    """Anything that is not a tensor or plain value; weights_only must refuse to build it."""

    def __reduce__(self) -> tuple:
        return (print, ("this must never run",))


def test_bad_files_raise_one_error_naming_the_path(tmp_path: Path, checkpoints: dict[str, Path]) -> None:
    junk, code, nan, wrong = (tmp_path / n for n in ("junk.pth", "code.pth", "nan.pth", "wrong.pth"))
    junk.write_bytes(b"\x80\x02not really a checkpoint" * 10)
    torch.save({"model_state_dict": Payload()}, code)
    state = random_state(official_tracker_layout(), 2)
    state["point_feat.conv1.weight"][0, 0, 0] = float("nan")
    torch.save(state, nan)
    state = random_state(official_tracker_layout(), 2)
    state["point_feat.conv1.weight"] = torch.zeros(64, 3, 1)
    torch.save(state, wrong)
    cases = [(load_tracker, tmp_path / "absent.pth", "not found"), (load_tracker, junk, "not a readable"),
             (load_tracker, code, "not a readable"), (load_tracker, nan, "NaN"),
             (load_tracker, wrong, "shape mismatches"),
             (load_segmenter, checkpoints["tracker"], "is this the tracker")]
    for loader, path, message in cases:
        with pytest.raises(AmodalkitError, match=message) as info:
            loader(path)
        assert info.value.path == str(path)


def blob_output(h: int, w: int, blobs: list[tuple[slice, slice, tuple[float, float], float, float]],
                low: tuple[slice, slice] | None = None) -> torch.Tensor:
    """A hand-made (5, H, W) output: each blob's pixels embed at its centre with its sigma and seed.

    A blob is (rows, cols, (ex, ey) embedding centre, sigma, seed probability); its first
    pixel gets the seed probability + 0.005 so it is picked first. `low` pixels are
    foreground with seed 0.8 (never a seed) and embed where they are.
    """
    grid = embedding_grid(h, w)
    out = torch.zeros(5, h, w)
    out[4] = -8.0
    for rows, cols, (ex, ey), sigma, prob in blobs:
        out[0, rows, cols] = torch.atanh(ex - grid[0, rows, cols])
        out[1, rows, cols] = torch.atanh(ey - grid[1, rows, cols])
        out[2:4, rows, cols] = sigma
        out[4, rows, cols] = math.log(prob / (1 - prob))
        first = (rows.start, cols.start)
        out[4, first[0], first[1]] = math.log((prob + 0.005) / (0.995 - prob))
    if low is not None:
        out[4][low] = math.log(0.8 / 0.2)
    return out


def test_cluster_finds_the_hand_computed_instances() -> None:
    h, w = 60, 96
    grid = embedding_grid(h, w)
    centre = lambda r, c: (float(grid[0, r, c]), float(grid[1, r, c]))  # noqa: E731
    a, b = (slice(5, 20), slice(5, 20)), (slice(30, 44), slice(60, 74))
    c, f = (slice(45, 55), slice(5, 15)), (slice(5, 10), slice(40, 50))
    ca = centre(12, 12)
    blobs = [(*c, centre(50, 10), 1.0, 0.99),  # 100 px: largest seed but too small, only marked as seen
             (*a, ca, 1.0, 0.985),  # 225 px: instance 1
             (*b, centre(37, 67), 1.0, 0.975),  # 196 px: instance 2
             # 50 px embedded 0.008 from A's centre with a wider sigma: the claim is mostly A, rejected
             (*f, (ca[0] + 0.008, ca[1]), 0.8, 0.95)]
    out = blob_output(h, w, blobs, low=(slice(30, 50), slice(20, 30)))
    dets = cluster(out)
    assert len(dets) == 2
    for det, (rows, cols), score in zip(dets, (a, b), (0.99, 0.98)):
        expected = np.zeros((h, w), bool)
        expected[rows, cols] = True
        assert np.array_equal(det.mask, expected) and det.score == pytest.approx(score, abs=1e-5)
    assert cluster(out[None], threshold=0.999) == []
    assert cluster(torch.full((5, h, w), -8.0)) == []
    with pytest.raises(AmodalkitError, match=r"\(5, H, W\)"):
        cluster(torch.zeros(3, h, w))


def test_later_instances_overwrite_earlier_ones_like_the_official_label_map() -> None:
    h, w = 40, 64
    grid = embedding_grid(h, w)
    e1 = (float(grid[0, 10, 10]), float(grid[1, 10, 10]))
    near, far = (e1[0] + 0.008, e1[1]), (e1[0] + 0.016, e1[1])
    first, second = (slice(2, 22), slice(2, 22)), (slice(22, 38), slice(2, 22))
    dets = cluster(blob_output(h, w, [(*first, e1, 1.0, 0.985), (*second, near, 0.8, 0.975)]))
    # the second seed claims its own 320 px and the first's 400: 319 of 720 unclustered, rejected
    assert len(dets) == 1 and dets[0].mask.sum() == 400
    core, fringe = (slice(2, 12), slice(2, 22)), (slice(12, 20), slice(2, 22))
    blobs = [(*core, e1, 1.0, 0.985), (*fringe, (e1[0] + 0.004, e1[1]), 1.0, 0.95),
             (*second, far, 0.8, 0.975)]
    dets = cluster(blob_output(h, w, blobs))
    # claim 1 is core + fringe (360 px); claim 2, fringe + second (480 px, 319 new), takes the fringe over
    assert [int(d.mask.sum()) for d in dets] == [200, 480]
    assert dets[0].mask[core].all() and dets[1].mask[fringe].all() and dets[1].mask[second].all()
    assert not (dets[0].mask & dets[1].mask).any()


def test_instance_points_sample_the_official_point_clouds() -> None:
    h, w = 40, 64
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.arange(h)[:, None]  # R = row
    image[..., 1] = np.arange(w)[None, :]  # G = column
    image[..., 2] = 7
    mine, other = np.zeros((h, w), bool), np.zeros((h, w), bool)
    mine[10:20, 20:40] = True
    other[10:20, 40:50] = True
    points, boxes = instance_points(image, [mine, other], np.random.RandomState(0))
    assert points.shape == (2, 1500, 8) and points.dtype == np.float32
    assert np.allclose(boxes[0], [20 / 1242, 10 / 375, 39 / 1242, 19 / 375])
    fg, bg = points[0, :1000], points[0, 1000:]
    assert np.allclose(fg[:, 0], 7 / 255) and np.all(fg[:, 5:] == 0)
    rows, cols = np.rint(fg[:, 2] * 255), np.rint(fg[:, 1] * 255)
    assert np.allclose(rows, 14.5 + 128 * fg[:, 3], atol=1e-3)
    assert np.allclose(cols, 29.5 + 128 * fg[:, 4], atol=1e-3)
    assert mine[rows.astype(int), cols.astype(int)].all() and len(set(zip(rows, cols))) > 150
    rows, cols = (np.rint(bg[:, 2] * 255).astype(int), np.rint(bg[:, 1] * 255).astype(int))
    assert rows.min() >= 8 and rows.max() <= 21 and cols.min() >= 16 and cols.max() <= 43
    assert not mine[rows, cols].any()
    on_other = other[rows, cols]
    assert on_other.any() and (~on_other).any()
    assert np.allclose(bg[on_other, 5:], CATEGORY_CODES[2])
    assert np.allclose(bg[~on_other, 5:], CATEGORY_CODES[0])
    again, _ = instance_points(image, [mine, other], np.random.RandomState(0))
    assert np.array_equal(points, again)


def test_instance_points_keep_the_official_edge_clipping() -> None:
    h, w = 30, 40
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.arange(h)[:, None]
    bottom, last_row = np.zeros((h, w), bool), np.zeros((h, w), bool)
    bottom[20:30, 5:15] = True
    last_row[29, 20:30] = True
    points, _ = instance_points(image, [bottom, last_row], np.random.RandomState(0))
    assert np.rint(points[0, :1000, 2] * 255).max() == 28  # the crop stops one row short of the edge
    assert np.all(np.rint(points[1, :1000, 2] * 255) == 29)  # unless the whole mask would be lost


def test_tracker_links_a_toy_sequence() -> None:
    rng = np.random.default_rng(0)
    e1, e2, far = rng.normal(size=32), rng.normal(size=32), rng.normal(size=32) + 40
    m1, m2, m3 = (np.zeros((8, 8), bool) for _ in range(3))
    m1[:4, :4], m2[4:, 4:], m3[:4, 4:] = True, True, True
    linker = PointTrackTracker()
    assert linker.step(0, np.stack([e1, e2]), [m1, m2]) == [1, 2]
    assert linker.step(1, np.stack([e2, e1]), [m2, m1]) == [2, 1]
    assert linker.step(2, np.stack([far, e1]), [m3, m1]) == [3, 1]
    assert linker.step(3, np.zeros((0, 32)), []) == []
    # 8.5 apart: 1.009 * (8.81 - 8.5) = 0.31 is below the threshold 0.817, the IoU term decides
    shifted = e1 + 8.5 * np.eye(32)[0]
    assert linker.step(4, shifted[None], [m1]) == [1]
    assert linker.step(5, (shifted + 8.5 * np.eye(32)[0])[None], [m2]) == [4]
    # track 1 was last seen at t=4, track 3 at t=2: at t=34 only track 1 is still alive
    assert linker.step(34, np.stack([far, shifted]), [m3, m1]) == [5, 1]


def test_tracker_maximizes_the_total_similarity() -> None:
    linker = PointTrackTracker()
    masks = [np.ones((2, 2), bool)] * 2
    linker.step(0, np.zeros((2, 32)), masks)
    linker.similarity = lambda *_: np.array([[9.0, 8.9], [8.95, 1.0]])  # greedy would take 9 then 1
    assert linker.step(1, np.zeros((2, 32)), masks) == [2, 1]
    linker.similarity = lambda *_: np.array([[9.0, 0.5], [0.5, 0.8]])  # 0.8 is not above 0.8166
    assert linker.step(2, np.zeros((2, 32)), masks) == [1, 3]


class BlobSegmenter(nn.Module):
    """A stand-in segmenter: two square blobs that move 2 px right per call, as raw outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(1, 3, H, W)`` -> ``(1, 5, H, W)``."""
        h, w = x.shape[2:]
        grid = embedding_grid(h, w)
        s = 2 * self.calls
        self.calls += 1
        blobs = []
        for r, c in ((4, 4 + s), (24, 40 - s)):
            blobs.append((slice(r, r + 14), slice(c, c + 14), (float(grid[0, r + 7, c + 7]),
                                                               float(grid[1, r + 7, c + 7])), 1.0, 0.97))
        return blob_output(h, w, blobs)[None]


class ZeroTracker(nn.Module):
    """A stand-in point network: every instance embeds at the origin, so mask IoU decides."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """``(N, 1500, 8)``, ``(N, 4)`` -> ``(N, 32)`` zeros."""
        assert points.shape[1:] == (1500, 8) and boxes.shape[1] == 4
        return torch.zeros(len(points), 32)


def test_track_video_returns_instances_per_frame(checkpoints: dict[str, Path]) -> None:
    frames = np.zeros((4, 48, 64, 3), np.uint8)
    tracks = track_video(frames, BlobSegmenter(), ZeroTracker(), class_id=1)
    assert len(tracks) == 4 and all(len(f) == 2 for f in tracks)
    assert all(isinstance(i, Instance) and i.class_id == 1 and i.mask.shape == (48, 64)
               for f in tracks for i in f)
    assert [[i.track_id for i in f] for f in tracks] == [[1, 2]] * 4
    assert tracks[3][0].mask[4, 10] and not tracks[0][0].mask[4, 19] and tracks[3][0].mask[4, 19]
    real = track_video(frames[:1], load_segmenter(checkpoints["segmenter"], pad_to=None),
                       load_tracker(checkpoints["tracker"]))
    assert len(real) == 1 and all(isinstance(i, Instance) for i in real[0])
    with pytest.raises(AmodalkitError, match="uint8"):
        track_video(frames.astype(np.float32), BlobSegmenter(), ZeroTracker())


def _write_frames(folder: Path, n: int = 4, size: tuple[int, int] = (48, 64)) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for t in range(n):
        cv2.imwrite(str(folder / f"{t:06d}.png"), rng.integers(0, 255, (*size, 3), dtype=np.uint8))
    return str(folder / "*.png")


def _tracks(capsys: pytest.CaptureFixture[str], frames: str, out: Path, *flags: str) -> tuple[int, str, str]:
    from cli_helpers import run

    return run(capsys, "tracks", "--frames", frames, "--segment", "pointtrack", *flags, "--out", str(out))


def test_cli_tracks_segment_pointtrack(tmp_path: Path, checkpoints: dict[str, Path],
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from cli_helpers import assert_one_line_error

    from amodalkit.io.shard_read import ShardReader
    from amodalkit.preprocess.tracks import pointtrack

    frames = _write_frames(tmp_path / "f")
    seg, trk = str(checkpoints["segmenter"]), str(checkpoints["tracker"])
    code, _, err = _tracks(capsys, frames, tmp_path / "real.h5", "--seg-checkpoint", seg,
                           "--track-checkpoint", trk, "--quiet")
    assert code == 0, err
    with ShardReader(tmp_path / "real.h5") as r:
        assert r.provenance["source"] == "pointtrack" and r.meta(0)["num_frames"] == 4
    monkeypatch.setattr(pointtrack, "load_segmenter", lambda path, device: BlobSegmenter())
    monkeypatch.setattr(pointtrack, "load_tracker", lambda path, device: ZeroTracker())
    for tracker, extra in (("pointtrack", ["--track-checkpoint", trk]), ("builtin", [])):
        shard = tmp_path / f"{tracker}.h5"
        code, _, err = _tracks(capsys, frames, shard, "--seg-checkpoint", seg, *extra, "--tracker", tracker,
                               "--flow", "dis", "--quiet")
        assert code == 0, err
        with ShardReader(shard) as r:
            video = r.read_video(0)
        assert video.num_objects == 2 and video.presence.all() and video.flow is not None
        assert r.provenance["tracker"] == tracker
    code, _, err = _tracks(capsys, frames, tmp_path / "x.h5")
    assert_one_line_error(code, err, "--seg-checkpoint best_seed_model.pthCar and --track-checkpoint")
    code, _, err = _tracks(capsys, frames, tmp_path / "y.h5", "--seg-checkpoint", seg, "--tracker", "builtin",
                           "--class", "pedestrian")
    assert_one_line_error(code, err, "cars only")
    code, _, err = _tracks(capsys, frames, tmp_path / "z.h5", "--seg-checkpoint", seg, "--mots", "a.txt")
    assert_one_line_error(code, err, "--segment replaces --mots")
