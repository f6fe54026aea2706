from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from amodalkit.data.frame_crops import FrameCropConfig, FrameCrops
from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.metrics import iou
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import write_shard
from amodalkit.ops.boxes import CropBox
from amodalkit.ops.frame_cut import crop_object_frame


def _reference_crop(frame: np.ndarray, ids: np.ndarray, obj: int, amodal: np.ndarray,
                    box: CropBox) -> torch.Tensor:
    """The same object-frame cropped from whole-frame channels with CropBox.crop: (6, h, w)."""
    own = ids == obj + 1
    occluder = (ids != 0) & ~own
    full = np.concatenate([frame.transpose(2, 0, 1) / 255, own[None], occluder[None], amodal[None]])
    return box.crop(torch.from_numpy(full.astype(np.float32))[None])[0]


def test_crop_matches_cropbox_and_pastes_back(cg_savos: Path) -> None:
    with ShardReader(cg_savos / "test-00000.h5") as r:
        v = r.read_video(0)
    vis = v.visible_masks()
    for k, t in zip(*np.nonzero(vis.any(axis=(-2, -1)))):
        item = crop_object_frame(v.visible_ids[t], k, (32, 32), 1.5, frame=v.frames[t], amodal=v.amodal[k, t])
        box = CropBox.from_tensor(item["box"], v.size, (32, 32))
        assert box == CropBox.around(vis[k, t], (32, 32), 1.5)
        ref = _reference_crop(v.frames[t], v.visible_ids[t], k, v.amodal[k, t], box)
        got = torch.cat([item["image"], item["visible"][None], item["occluder"][None], item["amodal"][None]])
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=0)
        assert torch.all(item["amodal"] >= item["visible"] - 1e-6)
        back = box.paste_back(item["visible"].numpy()) > 0.5
        assert float(iou(back, vis[k, t])) > 0.8


def test_index_covers_visible_object_frames(cg_savos: Path) -> None:
    ds = FrameCrops(cg_savos / "test-*.h5", FrameCropConfig(crop_size=(16, 16)))
    expected = 0
    for p in sorted(cg_savos.glob("test-*.h5")):
        with ShardReader(p) as r:
            expected += sum(int(v.visible_masks().any(axis=(-2, -1)).sum()) for v in r)
    assert len(ds) == expected
    item = ds[len(ds) - 1]
    assert set(item) == {"image", "visible", "occluder", "box", "key"}
    assert item["image"].shape == (3, 16, 16) and item["visible"].shape == item["occluder"].shape == (16, 16)
    assert float(item["visible"].max()) > 0.5
    assert ds.crop_box(item).crop_size == (16, 16)
    batch = next(iter(DataLoader(ds, batch_size=5)))
    assert batch["visible"].shape == (5, 16, 16) and batch["key"].shape == (5, 4)


def test_amodal_is_read_only_when_asked(cg_savos: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    read = ShardReader.read_field

    def no_amodal(self: ShardReader, index: int, name: str, selection: object = ()) -> np.ndarray:
        assert name not in ("amodal", "amodal_annotated"), "read the amodal ground truth"
        return read(self, index, name, selection)

    with monkeypatch.context() as m:
        m.setattr(ShardReader, "read_field", no_amodal)
        ds = FrameCrops(cg_savos / "train-*.h5", FrameCropConfig(with_image=False))
        items = [ds[i] for i in range(0, len(ds), 7)]
    assert all(set(it) == {"visible", "occluder", "box", "key"} for it in items)
    labelled = FrameCrops(cg_savos / "train-*.h5", FrameCropConfig(with_amodal=True))
    assert len(labelled) == len(ds) and "amodal" in labelled[0]
    with ShardReader(cg_savos / "train-00000.h5") as r:
        videos = [v.evolve(amodal_annotated=np.zeros_like(v.amodal_annotated)) for v in r]
    write_shard(tmp_path / "unlabelled.h5", videos)
    assert len(FrameCrops(tmp_path / "unlabelled.h5", FrameCropConfig(with_amodal=True))) == 0
    assert len(FrameCrops(tmp_path / "unlabelled.h5")) > 0


def test_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(AmodalkitError, match="no such file") as exc:
        FrameCrops(tmp_path / "missing.h5")
    assert "missing.h5" in str(exc.value)
    with pytest.raises(AmodalkitError, match="crop size"):
        FrameCropConfig(crop_size=(1, 16))
    with pytest.raises(AmodalkitError, match="empty mask"):
        crop_object_frame(np.zeros((8, 8), np.uint16), 0, (8, 8))
