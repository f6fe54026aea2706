"""Every reader, fed mutated copies of a valid file, returns valid data or raises AmodalkitError.

Each example runs in a forked child under a memory cap (see harness.py): truncations, byte
flips, values of the wrong type, huge declared sizes and non-finite numbers must never
raise another exception, crash, hang or allocate gigabytes.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from dataset_fixtures import FishbowlRelease, _kins_annotations, scene_masks, write_fishbowl
from harness import FUZZ, byte_mutations, json_mutations, run_capped
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save

from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import write_shard
from amodalkit.io.shards import REQUIRED_FIELDS, Video, validate_video
from amodalkit.ops.masks import rle_encode

H, W = 40, 120
REPO_REGISTRY = Path(__file__).resolve().parents[2] / "zoo" / "registry.json"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for the valid files and, below it, one fresh folder per example."""
    return tmp_path_factory.mktemp("fuzz")


def _example_file(work: Path, name: str, data: bytes) -> Path:
    path = Path(tempfile.mkdtemp(dir=work)) / name
    path.write_bytes(data)
    return path


def _check(work: Path, name: str, data: bytes, reader: Callable[[Path], object]) -> None:
    path = _example_file(work, name, data)
    try:
        run_capped(reader, path)
    finally:
        shutil.rmtree(path.parent)


# -- shards ---------------------------------------------------------------------------------------------


def _video() -> Video:
    rng = np.random.default_rng(0)
    t, k, h, w = 3, 2, 6, 8
    ids = rng.integers(0, k + 1, (t, h, w)).astype(np.uint16)
    return Video(name="v0", frames=rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8), visible_ids=ids,
                 amodal=np.stack([ids == i + 1 for i in range(k)]), amodal_annotated=np.ones((k, t), bool),
                 presence=np.ones((k, t), bool), track_ids=np.arange(k, dtype=np.int64),
                 source_frame_ids=np.array(["a", "b", "c"], dtype=object),
                 flow=rng.normal(size=(t - 1, h, w, 2)).astype(np.float16),
                 flow_backward=rng.normal(size=(t - 1, h, w, 2)).astype(np.float16),
                 object_class=np.ones(k, np.int32), provenance={"seed": 1}, flow_backend="exact")


@pytest.fixture(scope="module")
def valid_shard(work: Path) -> Path:
    return write_shard(work / "valid.h5", [_video()], {"writer": "fuzz"})


ATTR_PLACES = ["/", "videos/v0"]
ATTR_NAMES = ["schema", "schema_version", "n_videos", "provenance", "flow_backend"]
ATTR_VALUES = st.sampled_from(["1", "abc", "{", "[1]", "amodalkit-shard", b"\xff\xfe", -1, 2**40, 3.5,
                               np.array([1, 2]), np.array([b"a", b"b"]), np.float64("nan")])
DATASET_DAMAGE = ["group", "scalar", "wrong_shape", "huge", "nan", "big_ids", "delete", "wrong_dtype",
                  "empty"]


def _damage_dataset(f: h5py.File, name: str, kind: str) -> None:
    full = f"videos/v0/{name}"
    ds = f[full]
    shape, dtype = ds.shape, ds.dtype
    if kind == "nan" and dtype.kind == "f":
        ds[(0,) * len(shape)] = np.nan
        return
    if kind == "big_ids" and name == "visible_ids":
        ds[0, 0, 0] = 60000
        return
    del f[full]
    if kind == "group":
        f.create_group(full)
    elif kind == "scalar":
        f.create_dataset(full, data=np.int64(7))
    elif kind == "wrong_shape" and dtype.kind == "O":
        f.create_dataset(full, data=np.array(["x"] * (shape[0] + 1), dtype=object), dtype=h5py.string_dtype())
    elif kind == "wrong_shape":
        f.create_dataset(full, data=np.zeros(tuple(s + 1 for s in shape) or (2,), dtype))
    elif kind == "huge" and len(shape) >= 1 and dtype.kind != "O":
        big = tuple(s * 5000 + 5000 for s in shape)
        f.create_dataset(full, shape=big, dtype=dtype, chunks=tuple(min(s, 64) for s in big),
                         compression="gzip")
    elif kind == "wrong_dtype":
        f.create_dataset(full, data=np.zeros(shape, np.float64))
    elif kind == "empty":
        f.create_dataset(full, shape=(0,) * max(len(shape), 1), dtype=np.uint8)


def _shard_mutation(valid: bytes, work: Path) -> st.SearchStrategy[bytes]:
    def apply(damage: Callable[[h5py.File], None]) -> bytes:
        path = _example_file(work, "m.h5", valid)
        with h5py.File(path, "a") as f:
            damage(f)
        data = path.read_bytes()
        shutil.rmtree(path.parent)
        return data

    attrs = st.tuples(st.sampled_from(ATTR_PLACES), st.sampled_from(ATTR_NAMES), ATTR_VALUES).map(
        lambda t: apply(lambda f: f[t[0]].attrs.__setitem__(t[1], t[2])))
    datasets = st.tuples(st.sampled_from([*REQUIRED_FIELDS, "flow", "flow_backward", "object_class"]),
                         st.sampled_from(DATASET_DAMAGE)).map(
        lambda t: apply(lambda f: _damage_dataset(f, *t)))
    return st.one_of(attrs, datasets, byte_mutations(valid))


def read_shard(path: Path) -> None:
    from amodalkit.evaluation.shard_stats import summarize_shard

    with ShardReader(path) as r:
        for i in range(len(r)):
            validate_video(r.read_video(i), path)
    summarize_shard(path)


@FUZZ
@given(data=st.data())
def test_shard_reader(work: Path, valid_shard: Path, data: st.DataObject) -> None:
    _check(work, "s.h5", data.draw(_shard_mutation(valid_shard.read_bytes(), work)), read_shard)


# -- flow files -----------------------------------------------------------------------------------------


def read_flow_file(path: Path) -> None:
    from amodalkit.io.flowio import read_flow

    flow, valid = read_flow(path)
    assert flow.ndim == 3 and flow.shape[2] == 2 and valid.shape == flow.shape[:2]
    assert np.isfinite(flow).all()


def _flo(width: int, height: int, values: np.ndarray) -> bytes:
    header = np.array([202021.25], "<f4").tobytes() + struct.pack("<ii", width, height)
    return header + values.astype("<f4").tobytes()


FLO_VALUES = np.random.default_rng(0).normal(0, 5, (4, 5, 2)).astype(np.float32)


def _flo_mutations() -> st.SearchStrategy[bytes]:
    valid = _flo(5, 4, FLO_VALUES)
    sides = st.one_of(st.integers(-3, 8), st.sampled_from([2**31 - 1, -(2**31), 65536, 99999, 60000]))
    header = st.tuples(sides, sides).map(lambda wh: _flo(*wh, FLO_VALUES))
    values = st.sampled_from([np.nan, np.inf, -np.inf, 1e10, 1.7e9])
    specials = st.lists(st.tuples(st.integers(0, 39), values), min_size=1, max_size=6)
    nan = specials.map(lambda s: _flo(5, 4, _put(FLO_VALUES, s)))
    return st.one_of(header, nan, byte_mutations(valid))


def _put(values: np.ndarray, edits: list[tuple[int, float]]) -> np.ndarray:
    out = values.copy().reshape(-1)
    for i, v in edits:
        out[i] = v
    return out.reshape(values.shape)


@FUZZ
@given(data=_flo_mutations())
def test_flo_reader(work: Path, data: bytes) -> None:
    _check(work, "f.flo", data, read_flow_file)


@pytest.fixture(scope="module")
def kitti_png(work: Path) -> Path:
    from amodalkit.io.flowio import write_kitti_png

    return write_kitti_png(work / "k.png", FLO_VALUES)


def _with_ihdr(png: bytes, width: int, height: int, depth: int, colour: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    crc = zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", crc)
    return png[:8] + chunk + png[8 + 25:]


@FUZZ
@given(data=st.data())
def test_kitti_png_reader(work: Path, kitti_png: Path, data: st.DataObject) -> None:
    valid = kitti_png.read_bytes()
    sides = st.one_of(st.integers(0, 10), st.sampled_from([25000, 65535, 2**31 - 1, 100000]))
    forged = st.tuples(sides, sides, st.sampled_from([1, 8, 16]), st.sampled_from([0, 2, 6])).map(
        lambda t: _with_ihdr(valid, *t))
    _check(work, "k.png", data.draw(st.one_of(forged, byte_mutations(valid))), read_flow_file)


# -- KITTI-MOTS / PointTrack text ---------------------------------------------------------------------------


def _mots_text() -> str:
    lines = []
    for t in range(3):
        _, visible, _ = scene_masks(t)
        for k, name in enumerate(("A", "B", "C")):
            lines.append(f"{t} {1001 + k} 1 {H} {W} {rle_encode(visible[name])['counts']}")
    return "\n".join(lines) + "\n"


TOKENS = st.one_of(st.sampled_from(["-1", "abc", "60000", "4294967296", "99999999999999999999", "", "0",
                                    "1.5", "é", "10000", "2001", "\x00"]), st.text(max_size=6))


def _mots_mutations() -> st.SearchStrategy[bytes]:
    text = _mots_text()
    lines = text.splitlines()

    def replace(t: tuple[int, int, str]) -> bytes:
        fields = lines[t[0]].split(" ")
        fields[t[1]] = t[2]
        return "\n".join([*lines[:t[0]], " ".join(fields), *lines[t[0] + 1:]]).encode("utf-8", "replace")

    fields = st.tuples(st.integers(0, len(lines) - 1), st.integers(0, 5), TOKENS).map(replace)
    return st.one_of(fields, byte_mutations(text.encode()))


def read_tracks_file(path: Path) -> None:
    from amodalkit.preprocess.tracks.formats import read_pointtrack_txt, read_tracks

    for size in (None, (H, W)):
        instances, _ = read_tracks(path, "auto", size=size)
        assert all(inst.mask.shape == (H, W) for frame in instances for inst in frame) or size is None
    read_pointtrack_txt(path)


@FUZZ
@given(data=_mots_mutations())
def test_mots_and_pointtrack_readers(work: Path, data: bytes) -> None:
    _check(work, "0002.txt", data, read_tracks_file)


# -- KINS JSON ----------------------------------------------------------------------------------------------


def _kins_document(version: str) -> dict:
    images, anns = _kins_annotations(version)
    return {"images": images[:2], "annotations": [a for a in anns if a["image_id"] in (100, 101)][:5],
            "categories": [{"id": 4, "name": "car"}]}


def read_kins_file(path: Path) -> None:
    from amodalkit.datasets.kins import load_kins

    kf = load_kins(path)
    for a in kf.annotations:
        assert a.amodal_mask(H, W).shape == (H, W) and a.inmodal_mask(H, W).shape == (H, W)


@FUZZ
@given(data=st.one_of(json_mutations(_kins_document("2020")), json_mutations(_kins_document("original"))))
def test_kins_reader(work: Path, data: bytes) -> None:
    _check(work, "update_train_2020.json", data, read_kins_file)


# -- FISHBOWL JSON ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fishbowl(work: Path) -> FishbowlRelease:
    return write_fishbowl(work / "fishbowl")


def _read_fishbowl_sample(path: Path, release: FishbowlRelease, mutated_render: bool) -> None:
    from amodalkit.datasets.fishbowl import FishbowlSample, read_sample

    root = release.savos_split.parent
    renders = sorted((root / "test_objects").glob("00000_object*/objects.json"))
    folder = path.parent
    if mutated_render:
        shutil.copy(release.savos_split / "00000" / "objects.json", folder / "visible.json")
        (folder / "objects.json").rename(folder / "render.json")
        (folder / "visible.json").rename(folder / "objects.json")
        render_dir = folder / f"00000_object{json.loads((renders[0]).read_text())[0]['id']}"
        render_dir.mkdir()
        (folder / "render.json").rename(render_dir / "objects.json")
        renders = [render_dir / "objects.json", *renders[1:]]
    sample = FishbowlSample("00000", folder, None, root / "test_frames" / "00000", renders)
    validate_video(read_sample(sample), path)


@FUZZ
@given(data=st.data(), render=st.booleans())
def test_fishbowl_reader(work: Path, fishbowl: FishbowlRelease, data: st.DataObject, render: bool) -> None:
    root = fishbowl.savos_split.parent
    source = next((root / "test_objects").glob("00000_object*/objects.json")) if render \
        else fishbowl.savos_split / "00000" / "objects.json"
    mutated = data.draw(json_mutations(json.loads(source.read_text())))
    path = _example_file(work, "objects.json", mutated)
    try:
        run_capped(_read_fishbowl_sample, path, fishbowl, render)
    finally:
        shutil.rmtree(path.parent)


# -- checkpoints ---------------------------------------------------------------------------------------------


def _tiny_savos() -> tuple[dict, dict[str, torch.Tensor]]:
    from amodalkit.models.savos.config import SavosConfig
    from amodalkit.models.savos.net import SavosNet

    net = SavosNet(SavosConfig(crop_size=(8, 8), channels=(4, 4, 4), hidden=8))
    return asdict(net.config), {k: v.detach().clone() for k, v in net.state_dict().items()}


CONFIG, STATE = _tiny_savos()
META = {"format": "amodalkit-checkpoint", "format_version": "1", "model": "savos",
        "config": json.dumps(CONFIG), "extra": "{}"}


def _checkpoint(meta: dict, state: dict[str, torch.Tensor]) -> bytes:
    return save(state, metadata=meta)


def _checkpoint_mutations() -> st.SearchStrategy[bytes]:
    valid = _checkpoint(META, STATE)
    keys = sorted(STATE)
    config = json_mutations(CONFIG).map(
        lambda b: _checkpoint({**META, "config": b.decode("utf-8", "replace")}, STATE))
    words = st.sampled_from(["", "abc", "2", "-1", "99999999999999999999", "unet", "deocclusion", "{}", "[]",
                             "é"])
    meta = st.tuples(st.sampled_from(sorted(META)), words).map(
        lambda t: _checkpoint({**META, t[0]: t[1]}, STATE))

    def tensor_change(t: tuple[str, str]) -> bytes:
        state = dict(STATE)
        v = state[t[0]]
        if t[1] == "shape":
            state[t[0]] = torch.zeros(v.numel() + 1)
        elif t[1] == "nan":
            state[t[0]] = torch.full_like(v, float("nan")) if v.is_floating_point() else v
        elif t[1] == "dtype":
            state[t[0]] = v.to(torch.int64)
        elif t[1] == "drop":
            del state[t[0]]
        return _checkpoint(META, state)

    changes = st.sampled_from(["shape", "nan", "dtype", "drop"])
    tensors = st.tuples(st.sampled_from(keys), changes).map(tensor_change)
    header = st.integers(0, 2**64 - 1).map(lambda n: struct.pack("<Q", n) + valid[8:])
    return st.one_of(config, meta, tensors, header, byte_mutations(valid))


def load_checkpoint_file(path: Path) -> None:
    from amodalkit.models.registry import method_from_checkpoint

    method_from_checkpoint(path)


@FUZZ
@given(data=_checkpoint_mutations())
def test_checkpoint_reader(work: Path, data: bytes) -> None:
    _check(work, "m.safetensors", data, load_checkpoint_file)


# -- zoo registry ------------------------------------------------------------------------------------------


def read_registry(path: Path) -> None:
    from amodalkit import zoo

    os.environ["AMODALKIT_ZOO_REGISTRY"] = str(path)
    os.environ["AMODALKIT_CACHE"] = str(path.parent / "cache")
    entries = zoo.load_registry()
    zoo.format_registry(entries)
    for name in entries:
        zoo.get_entry(name)


@FUZZ
@given(data=json_mutations(json.loads(REPO_REGISTRY.read_text())))
def test_zoo_registry_reader(work: Path, data: bytes) -> None:
    _check(work, "registry.json", data, read_registry)
