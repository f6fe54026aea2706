"""The ``official`` SaVos preset: the released training scripts' settings, losses, schedule and selection."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import torch
from cli_helpers import run

from amodalkit.device import DistInfo
from amodalkit.engine import TrainConfig
from amodalkit.engine.hooks import epoch_lr
from amodalkit.engine.tasks import ClipsPerObjectSampler, make_task
from amodalkit.engine.trainer import Trainer
from amodalkit.errors import AmodalkitError
from amodalkit.models.savos.config import SavosConfig, build_config
from amodalkit.models.savos.loss import photometric_loss, savos_loss, selection_scores
from amodalkit.models.savos.net import SavosNet
from amodalkit.ops.warp import forward_warp

TINY = {"crop_size": (16, 32), "channels": (8, 8, 8, 16), "hidden": 16}
TINY_ARGS = ["--crop", "16x32", "--channels", "8,8,8,16", "--hidden", "16", "--clip-len", "10"]


def _batch(cfg: SavosConfig, b: int = 2, t: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.crop_size
    vis = (torch.rand(b, t, h, w, generator=g) > 0.6).float()
    weight = (torch.rand(b, t, h, w, generator=g) > 0.2).float()
    return {"image": torch.rand(b, 3, t, h, w, generator=g), "visible": vis,
            "flow": torch.randn(b, 2, t, h, w, generator=g),
            "flow_backward": torch.randn(b, 2, t, h, w, generator=g),
            "weight": torch.maximum(weight, vis), "valid": torch.ones(b, t, dtype=torch.bool)}


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_official_preset_builds_with_the_documented_values() -> None:
    cfg = build_config("official")
    assert cfg.crop_size == (64, 128) and cfg.enlarge == 1.5 and cfg.clip_len == 40
    assert (cfg.crop_mode, cfg.warp, cfg.mask_reduction, cfg.consistency_mode) == ("track", "official", "sum",
                                                                                   "cumulative")
    assert cfg.lambda_photometric == 0.1 and cfg.lambda_mask == cfg.lambda_consistency == 1.0
    assert (cfg.completor_input, cfg.motion_base, cfg.leaky_slope) == ("flow_x", "visible_flow", 0.01)
    assert SavosConfig.train_defaults("official") == {
        "batch_size": 12, "epochs": 20, "lr": 1e-4, "lr_schedule": "step", "lr_step_epochs": 20,
        "lr_gamma": 0.5, "clip_stride": 1, "clips_per_object": 1, "select_by": "val_amodal_iou"}
    kins = build_config("official", clip_len=30, lambda_photometric=0.0)
    assert kins.clip_len == 30 and kins.lambda_photometric == 0.0 and kins.mask_reduction == "sum"
    new = {"mask_reduction": "mean", "consistency_mode": "paper", "lambda_photometric": 0.0,
           "completor_input": "visible", "motion_base": "mean", "leaky_slope": 0.2}
    for preset in ("paper", "small", "cpu"):
        assert SavosConfig.train_defaults(preset) == {}
        assert {k: v for k, v in asdict(build_config(preset)).items() if k in new} == new
    old = {f.name: getattr(SavosConfig(), f.name) for f in fields(SavosConfig) if f.name not in new}
    assert SavosConfig.from_dict(old) == SavosConfig()
    for bad in ({"mask_reduction": "max"}, {"consistency_mode": "x"}, {"warp": "nearest"},
                {"lambda_photometric": -1.0}, {"completor_input": "image"}):
        with pytest.raises(AmodalkitError):
            SavosConfig(**bad)


def test_summed_bce_is_the_mean_times_the_pixel_count() -> None:
    torch.manual_seed(0)
    cfg = SavosConfig(**TINY)
    batch = _batch(cfg)
    out = SavosNet(cfg)(batch)
    mean = savos_loss(out, batch, cfg)["mask"]
    summed = savos_loss(out, batch, SavosConfig(**TINY, mask_reduction="sum"))["mask"]
    torch.testing.assert_close(summed, mean * 16 * 32)


def _moving_square(shift: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """A textured square moving `shift` pixels right per frame, and motions that follow it exactly."""
    t, h, w = 4, 16, 32
    g = torch.Generator().manual_seed(1)
    texture = torch.rand(3, h, w + t * shift, generator=g)
    image = torch.stack([texture[:, :, (t - i) * shift:(t - i) * shift + w] for i in range(t)], dim=1)
    vis = torch.zeros(t, h, w)
    for i in range(t):
        vis[i, 4:12, 6 + i * shift:14 + i * shift] = 1
    batch = {"image": image[None], "visible": vis[None], "valid": torch.ones(1, t, dtype=torch.bool)}
    fwd = torch.zeros(1, t, 2, h, w)
    fwd[:, :, 0] = shift
    return batch, {"forward_motion": fwd, "backward_motion": -fwd}


@pytest.mark.parametrize("warp", ["sample", "splat"])
def test_photometric_term_is_zero_for_a_perfect_warp_and_positive_otherwise(warp: str) -> None:
    cfg = SavosConfig(**TINY, warp=warp)
    batch, out = _moving_square(2)
    assert photometric_loss(out, batch, cfg).item() == pytest.approx(0.0, abs=1e-5)
    off = {k: v + torch.tensor([1.0, 0.5]).view(1, 1, 2, 1, 1) for k, v in out.items()}
    assert photometric_loss(off, batch, cfg).item() > 0.1
    motion = out["forward_motion"].clone().requires_grad_()
    photometric_loss({"forward_motion": motion + 0.5}, batch, cfg).backward()
    assert motion.grad is not None and motion.grad.abs().sum() > 0


def test_official_warp_is_the_released_half_pixel_grid_with_border_padding() -> None:
    g = torch.Generator().manual_seed(2)
    src = torch.rand(2, 3, 12, 16, generator=g)
    flow = torch.randn(2, 2, 12, 16, generator=g)
    official = forward_warp(src, flow, "official")
    shifted = forward_warp(src, flow + 0.5, "sample")
    torch.testing.assert_close(official[..., 3:-3, 3:-3], shifted[..., 3:-3, 3:-3])
    flat = torch.full((1, 1, 6, 6), 0.7)
    torch.testing.assert_close(forward_warp(flat, torch.full((1, 2, 6, 6), 4.0), "official"), flat)


def test_step_schedule_halves_the_lr_every_step_epochs() -> None:
    cfg = TrainConfig(data=["x"], out="y", lr=1e-3, lr_schedule="step", lr_step_epochs=2, lr_gamma=0.5)
    cfg.validate()
    ours = [epoch_lr(cfg, e) for e in range(1, 7)]
    assert ours == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])
    weight = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([weight], lr=1e-3)
    step = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    torchs = []
    for _ in range(6):
        torchs.append(opt.param_groups[0]["lr"])
        weight.sum().backward()
        opt.step()
        step.step()
    assert ours == pytest.approx(torchs)
    with pytest.raises(AmodalkitError, match="lr-step-epochs"):
        TrainConfig(data=["x"], out="y", lr_schedule="step", lr_step_epochs=0).validate()
    with pytest.raises(AmodalkitError, match="--val"):
        TrainConfig(data=["x"], out="y", select_by="val_amodal_iou").validate()


def test_selection_scores_paste_the_visible_mask_and_pool_over_frames() -> None:
    cfg = SavosConfig(**TINY)
    batch = _batch(cfg, b=2, t=3)
    amodal = torch.zeros(2, 3, 16, 32)
    amodal[:, :, 2:10, 4:20] = 1
    batch |= {"visible": amodal.clone(), "weight": torch.ones(2, 3, 16, 32), "amodal": amodal,
              "annotated": torch.tensor([[True, True, False], [True, False, False]])}
    batch["visible"][:, :, 2:10, 12:20] = 0
    batch["weight"][:, :, 2:10, 12:20] = 0
    has = torch.ones(2, 3, dtype=torch.bool)
    perfect = selection_scores({"prediction": amodal, "has_prediction": has}, batch)
    assert perfect["amodal_iou_sum"].item() == pytest.approx(3 / 2)
    assert perfect["amodal_iou_n"].item() == 3 / 2
    assert perfect["visible_iou_sum"].item() == pytest.approx(6 * 0.5 / 2)
    nothing = selection_scores({"prediction": torch.zeros_like(amodal), "has_prediction": has}, batch)
    assert nothing["amodal_iou_sum"].item() == pytest.approx(3 * 0.5 / 2)
    assert nothing["visible_iou_sum"].item() == pytest.approx(6 / 2)


def test_clips_per_object_sampler_draws_one_window_per_object() -> None:
    index = [(0, v, k, s, 10) for v in range(2) for k in range(3) for s in range(5)]
    one = DistInfo(rank=0, world=1, local_rank=0)
    sampler = ClipsPerObjectSampler(index, 1, seed=3, info=one, shuffle=True)
    draws = []
    for epoch in (1, 2):
        sampler.set_epoch(epoch)
        items = list(sampler)
        assert len(items) == len(sampler) == 6
        assert sorted(index[i][:3] for i in items) == sorted({e[:3] for e in index})
        draws.append(items)
    assert draws[0] != draws[1]
    val = ClipsPerObjectSampler(index, 1, seed=3, info=one, shuffle=False)
    val.set_epoch(1)
    first = list(val)
    val.set_epoch(5)
    assert list(val) == first
    ranks = [list(ClipsPerObjectSampler(index, 2, 3, DistInfo(rank=r, world=4, local_rank=r), True))
             for r in range(4)]
    assert [len(r) for r in ranks] == [3] * 4 and len({i for r in ranks for i in r}) == 12


def test_ground_truth_selection_picks_the_best_validation_iou(cg_savos: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = TrainConfig(data=[str(cg_savos / "train-*.h5")], val=[str(cg_savos / "val-*.h5")],
                      out=str(tmp_path / "r"), epochs=3, batch_size=16, select_by="val_amodal_iou",
                      quiet=True)
    trainer = Trainer(cfg, make_task("savos", SavosConfig(**TINY, clip_len=10)))
    assert "amodal" in trainer.val_set[0] and "amodal" not in trainer.train_set[0]
    ious, losses = iter([0.5, 0.8, 0.6]), iter([1.0, 2.0, 0.5])
    train = {k: 1.0 for k in trainer.task.loss_keys} | {"items": 1}
    monkeypatch.setattr(trainer, "train_epoch", lambda epoch: train)
    monkeypatch.setattr(trainer, "evaluate_loss", lambda epoch: {
        "loss": next(losses), "mask": 0.0, "consistency": 0.0, "amodal_iou": next(ious)})
    summary = trainer.fit()
    assert summary["best_epoch"] == 2 and summary["best_score"] == 0.8 and summary["best_loss"] == 2.0
    assert summary["selection_uses_amodal_ground_truth"] is True
    log = _log(tmp_path / "r")
    assert [r["best"] for r in log] == [True, True, False]
    assert all(r["select_by"] == "val_amodal_iou" and r["selection_uses_amodal_ground_truth"] for r in log)
    best = json.loads((tmp_path / "r" / "best.json").read_text())["extra"]
    assert best["epoch"] == 2 and best["selection"] == {"by": "val_amodal_iou", "value": 0.8,
                                                        "uses_amodal_ground_truth": True}


def test_cli_trains_two_epochs_with_the_official_preset(cg_savos: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "official"
    code, stdout, stderr = run(capsys, "train", "--model", "savos", "--preset", "official",
                               "--data", str(cg_savos / "train-*.h5"), "--val", str(cg_savos / "val-*.h5"),
                               "--out", str(out), "--epochs", "2", "--batch-size", "2", "--lr", "1e-3",
                               "--threads", "1", "--quiet", *TINY_ARGS)
    assert code == 0, stderr
    assert "amodal ground truth" in stderr and "not self-supervised" in stderr
    assert "val_amodal_iou" in stdout and "amodal ground truth" in stdout
    config = json.loads((out / "config.json").read_text())
    train, model = config["train"], config["model_config"]
    assert (train["lr_schedule"], train["lr_step_epochs"], train["lr_gamma"]) == ("step", 20, 0.5)
    assert (train["batch_size"], train["lr"], train["epochs"]) == (2, 1e-3, 2)
    assert (train["clip_stride"], train["clips_per_object"], train["select_by"]) == (1, 1, "val_amodal_iou")
    assert model["clip_len"] == 10 and model["mask_reduction"] == "sum" and model["warp"] == "official"
    log = _log(out)
    assert [r["epoch"] for r in log] == [1, 2] and all(r["lr"] == 1e-3 for r in log)
    assert log[1]["train_loss"] < log[0]["train_loss"]
    assert log[0]["train_photometric"] > 0 and 0 <= log[0]["val_amodal_iou"] <= 1
    assert all(r["selection_uses_amodal_ground_truth"] for r in log)
    best = json.loads((out / "best.json").read_text())["extra"]
    assert best["selection"]["uses_amodal_ground_truth"] is True
