from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from amodalkit.errors import AmodalkitError
from amodalkit.io.shard_read import ShardReader
from amodalkit.models.baselines.deocclusion import (
    DeocclusionConfig,
    DeocclusionMethod,
    DeocclusionNet,
    deocclusion_loss,
    surrogate_occluders,
    synthesize_occlusion,
)
from amodalkit.models.baselines.framewise import inference_copy, save_framewise
from amodalkit.models.registry import build_method, method_from_checkpoint

TINY = DeocclusionConfig(crop_size=(16, 16), channels=(4, 8, 8))


def _squares(n: int, size: int = 16) -> torch.Tensor:
    """n crops, crop i holding an axis-aligned square of side i + 3 in its centre: (n, size, size)."""
    out = torch.zeros(n, size, size)
    for i in range(n):
        a = (size - (i + 3)) // 2
        out[i, a:a + i + 3, a:a + i + 3] = 1
    return out


def test_surrogate_occluder_is_another_crops_mask_moved_by_whole_pixels() -> None:
    vis = _squares(6)
    occ = surrogate_occluders(vis, 0.0, torch.Generator().manual_seed(0))
    areas = vis.sum(dim=(1, 2))
    for i in range(6):
        match = torch.nonzero(torch.isclose(areas, occ[i].sum())).flatten().tolist()
        assert match and match[0] != i
    shifted = surrogate_occluders(vis, 0.5, torch.Generator().manual_seed(1))
    assert set(torch.unique(shifted).tolist()) <= {0.0, 1.0}
    assert not torch.equal(shifted, occ)
    again = surrogate_occluders(vis, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(shifted, again)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_synthesized_cases_erase_or_slide_under(p: float) -> None:
    vis = _squares(8)
    cfg = DeocclusionConfig(crop_size=(16, 16), channels=(4, 8), p_no_occlusion=p, max_shift=0.3)
    vis_in, occ_in, target = synthesize_occlusion(vis, cfg, torch.Generator().manual_seed(2))
    assert torch.equal(target, vis)
    if p == 0.0:
        assert torch.all(vis_in <= vis) and torch.all(vis_in * occ_in == 0)
        assert (vis_in.sum(dim=(1, 2)) < vis.sum(dim=(1, 2))).any()
    else:
        assert torch.equal(vis_in, vis) and torch.all(occ_in * vis == 0) and occ_in.sum() > 0


def test_no_occlusion_case_is_drawn_at_its_rate() -> None:
    vis = torch.ones(400, 16, 16)
    cfg = DeocclusionConfig(crop_size=(16, 16), channels=(4, 8), p_no_occlusion=0.25)
    vis_in, occ_in, _ = synthesize_occlusion(vis, cfg, torch.Generator().manual_seed(3))
    below = (vis_in == 1).all(dim=2).all(dim=1)
    assert torch.all(occ_in[below] == 0) and torch.all(occ_in[~below].sum(dim=(1, 2)) > 0)
    assert 0.18 < float(below.float().mean()) < 0.32


def test_loss_reads_visible_only_and_falls_when_fitting() -> None:
    torch.manual_seed(0)
    net = DeocclusionNet(TINY)
    batch = {"visible": _squares(8)}
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for step in range(30):
        loss = deocclusion_loss(net, batch, torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_config_checks() -> None:
    for bad in ({"p_no_occlusion": 1.5}, {"max_shift": -0.1}, {"crop_size": (18, 18)}, {"channels": ()}):
        with pytest.raises(AmodalkitError):
            DeocclusionConfig(**{"channels": (4, 8, 8), **bad})
    assert DeocclusionConfig.from_dict(asdict(TINY)) == TINY
    with pytest.raises(AmodalkitError, match="unknown"):
        DeocclusionConfig.from_dict({**asdict(TINY), "hidden": 3})


def test_predict_video_one_batch_full_resolution(cg_savos: Path) -> None:
    torch.manual_seed(0)
    method = DeocclusionMethod(DeocclusionNet(TINY))
    assert method.fields == ()
    calls = []
    method.runner.register_forward_hook(lambda *_: calls.append(1))
    with ShardReader(cg_savos / "test-00000.h5") as r:
        video = r.read_video(0, method.fields)
    pred = method.predict_video(video)
    assert len(calls) == 1
    vis = video.visible_masks()
    assert pred.shape == vis.shape and pred.dtype == np.float32
    assert pred.min() >= 0 and pred.max() <= 1
    ids = video.visible_ids[None]
    others = (ids != 0) & ~vis
    assert not method.occluders_only  # the official paste rule is the scoring protocol's, not the method's
    method.occluders_only = True
    pasted = method.predict_video(video)
    assert pasted.shape == vis.shape
    np.testing.assert_array_equal(pasted[~others], vis[~others].astype(np.float32))
    np.testing.assert_array_equal(pasted[others], pred[others])
    assert not pasted[~vis.any(axis=(-2, -1))].any()


def test_inference_copy_matches_eval_network() -> None:
    torch.manual_seed(0)
    net = DeocclusionNet(DeocclusionConfig(crop_size=(16, 16), channels=(4, 8), use_image=True))
    x, img = torch.rand(6, 16, 16), torch.rand(6, 3, 16, 16)
    net.train()
    net(x, x, img)
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(inference_copy(net)(x, x, img), net(x, x, img), atol=1e-5, rtol=1e-5)
    with pytest.raises(AmodalkitError, match="image"):
        net(x, x)


def test_checkpoint_round_trip(cg_savos: Path, tmp_path: Path) -> None:
    torch.manual_seed(1)
    net = DeocclusionNet(TINY)
    net.train()
    net(_squares(4), _squares(4))
    path = save_framewise(tmp_path / "d.safetensors", "deocclusion", net.eval(), {"epoch": 3})
    method = method_from_checkpoint(path)
    assert isinstance(method, DeocclusionMethod) and method.describe()["config"] == asdict(TINY)
    with ShardReader(cg_savos / "test-00000.h5") as r:
        video = r.read_video(1)
    np.testing.assert_allclose(method.predict_video(video), DeocclusionMethod(net).predict_video(video),
                               atol=1e-6)
    with pytest.raises(AmodalkitError, match="give a checkpoint"):
        build_method("deocclusion")
    save_framewise(tmp_path / "u.safetensors", "unet", net)
    with pytest.raises(AmodalkitError, match="expected 'deocclusion'") as exc:
        DeocclusionMethod(checkpoint=tmp_path / "u.safetensors")
    assert "u.safetensors" in str(exc.value)
