from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run

from amodalkit.datasets.chewing_gum import generate_dataset, make_config
from amodalkit.engine import TrainConfig, train_model
from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import evaluate_method
from amodalkit.io.checkpoint import read_checkpoint
from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shard_write import write_shard
from amodalkit.io.shards import expand_shard_paths
from amodalkit.models.baselines.deocclusion import DeocclusionConfig, DeocclusionMethod, DeocclusionNet
from amodalkit.models.baselines.unet import UNet, UNetConfig, UNetMethod
from amodalkit.models.registry import build_method, get_model_spec, method_from_checkpoint

TINY = DeocclusionConfig(crop_size=(16, 16), channels=(4, 8, 8))


def train_framewise(cfg: TrainConfig, model_name: str, model_config: object, max_steps: int = 0) -> dict:
    """A per-frame baseline through the one training loop, with a step cap."""
    return train_model(replace(cfg, max_steps=max_steps), model_name, model_config)


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cg_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """savos2022 videos of 24 frames: 8 train, 2 val, 6 test (about 380 training object-frames)."""
    out = tmp_path_factory.mktemp("cg_frames")
    generate_dataset(out, make_config("savos2022", frames=24), {"train": 8, "val": 2, "test": 6}, seed=4,
                     videos_per_shard=8, quiet=True)
    return out


@pytest.fixture(scope="module")
def unlabelled(cg_frames: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The train and val shards with the amodal ground truth erased (zeros, never annotated)."""
    out = tmp_path_factory.mktemp("unlabelled")
    for path in sorted(cg_frames.glob("train-*.h5")) + sorted(cg_frames.glob("val-*.h5")):
        with ShardReader(path) as r:
            videos = [v.evolve(amodal=np.zeros_like(v.amodal),
                               amodal_annotated=np.zeros_like(v.amodal_annotated)) for v in r]
        write_shard(out / path.name, videos)
    return out


def test_unet_cli_train_then_evaluate_beats_untrained_and_convex(cg_frames: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "unet"
    code, out, err = run(capsys, "train", "--model", "unet", "--data", str(cg_frames / "train-*.h5"),
                         "--val", str(cg_frames / "val-*.h5"), "--out", str(run_dir), "--epochs", "8",
                         "--batch-size", "32", "--lr", "3e-3", "--threads", "1", "--quiet")
    assert code == 0, err
    assert "best epoch" in out and "(val loss" in out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"] == "unet" and UNetConfig.from_dict(config["model_config"]) == UNetConfig()
    log = _log(run_dir)
    assert [r["epoch"] for r in log] == list(range(1, 9))
    assert log[-1]["train_loss"] < 0.6 * log[0]["train_loss"] and log[-1]["val_loss"] < log[0]["val_loss"]
    ck = read_checkpoint(run_dir / "best.safetensors")
    assert ck.model == "unet" and UNetConfig.from_dict(ck.config) == UNetConfig()
    assert ck.extra["epoch"] == min(log, key=lambda r: r["val_loss"])["epoch"]
    js = tmp_path / "unet.json"
    best = str(run_dir / "best.safetensors")
    code, out, err = run(capsys, "evaluate", "--model", "unet", "--checkpoint", best, "--data",
                         str(cg_frames / "test-*.h5"), "--json", str(js), "--quiet")
    assert code == 0, err
    trained = json.loads(js.read_text())
    assert trained["method"] == "unet" and UNetConfig.from_dict(trained["config"]) == UNetConfig()
    test = expand_shard_paths(str(cg_frames / "test-*.h5"))
    torch.manual_seed(0)
    untrained = evaluate_method(UNetMethod(UNet(UNetConfig())), test, quiet=True)
    convex = evaluate_method(build_method("convex"), test, quiet=True)
    assert trained["frame_miou_occluded"] > untrained["frame_miou_occluded"] + 0.1, (trained, untrained)
    assert trained["frame_miou_occluded"] > convex["frame_miou_occluded"] + 0.05, (trained, convex)
    assert trained["frame_miou_full"] > 0.85


def test_deocclusion_never_reads_amodal(unlabelled: Path, cg_frames: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    read = ShardReader.read_field

    def no_amodal(self: ShardReader, index: int, name: str, selection: object = ()) -> np.ndarray:
        assert name not in ("amodal", "amodal_annotated"), "Self-Deocclusion read the amodal ground truth"
        return read(self, index, name, selection)

    run_dir = tmp_path / "deocc"
    cfg = TrainConfig(data=[str(unlabelled / "train-*.h5")], val=[str(unlabelled / "val-*.h5")],
                      out=str(run_dir), epochs=6, batch_size=32, lr=3e-3, quiet=True)
    with monkeypatch.context() as m:
        m.setattr(ShardReader, "read_field", no_amodal)
        summary = train_framewise(cfg, "deocclusion", DeocclusionConfig())
    assert summary["selected_on"] == "val" and summary["run_dir"] == str(run_dir)
    log = _log(run_dir)
    assert log[-1]["train_loss"] < 0.75 * log[0]["train_loss"] and log[-1]["val_loss"] < log[0]["val_loss"]
    assert summary["best_loss"] == min(r["val_loss"] for r in log)
    method = method_from_checkpoint(run_dir / "best.safetensors")
    assert isinstance(method, DeocclusionMethod)
    test = expand_shard_paths(str(cg_frames / "test-*.h5"))
    trained = evaluate_method(method, test, quiet=True)
    torch.manual_seed(0)
    untrained = evaluate_method(DeocclusionMethod(DeocclusionNet(DeocclusionConfig())), test, quiet=True)
    convex = evaluate_method(build_method("convex"), test, quiet=True)
    assert trained["frame_miou_occluded"] > untrained["frame_miou_occluded"] + 0.1, (trained, untrained)
    assert trained["frame_miou_occluded"] > convex["frame_miou_occluded"] + 0.1, (trained, convex)


def test_resume_and_step_cap_match_an_uninterrupted_run(cg_frames: Path, tmp_path: Path) -> None:
    def cfg(out: Path, epochs: int, resume: bool = False) -> TrainConfig:
        return TrainConfig(data=[str(cg_frames / "train-*.h5")], val=[str(cg_frames / "val-*.h5")],
                           out=str(out), epochs=epochs, batch_size=64, lr=1e-3, seed=5, resume=resume,
                           quiet=True)

    straight = train_framewise(cfg(tmp_path / "straight", 2), "deocclusion", TINY)
    train_framewise(cfg(tmp_path / "split", 1), "deocclusion", TINY)
    with pytest.raises(AmodalkitError, match="--resume"):
        train_framewise(cfg(tmp_path / "split", 2), "deocclusion", TINY)
    with pytest.raises(AmodalkitError, match="differ"):
        train_framewise(cfg(tmp_path / "split", 2, resume=True), "deocclusion",
                        DeocclusionConfig(**{**asdict(TINY), "p_no_occlusion": 0.5}))
    with pytest.raises(AmodalkitError, match="'deocclusion' run"):
        train_framewise(cfg(tmp_path / "split", 2, resume=True), "unet",
                        UNetConfig(crop_size=(16, 16), channels=(4, 8, 8)))
    resumed = train_framewise(cfg(tmp_path / "split", 2, resume=True), "deocclusion", TINY)
    assert resumed["steps"] == straight["steps"] == 2 * _log(tmp_path / "split")[0]["steps"]
    a = read_checkpoint(tmp_path / "straight" / "last.safetensors")
    b = read_checkpoint(tmp_path / "split" / "last.safetensors")
    assert a.extra["epoch"] == b.extra["epoch"] == 2
    for k, v in a.state_dict.items():
        torch.testing.assert_close(v, b.state_dict[k], msg=k)
    assert [r["val_loss"] for r in _log(tmp_path / "straight")] == pytest.approx(
        [r["val_loss"] for r in _log(tmp_path / "split")])
    capped = train_framewise(cfg(tmp_path / "capped", 5), "deocclusion", TINY, max_steps=3)
    assert capped["steps"] == 3 and [r["epoch"] for r in _log(tmp_path / "capped")] == [1]
    again = train_framewise(cfg(tmp_path / "capped", 5, resume=True), "deocclusion", TINY, max_steps=3)
    assert again["steps"] == 3 and len(_log(tmp_path / "capped")) == 1
    with pytest.raises(AmodalkitError, match="nothing to resume"):
        train_framewise(cfg(tmp_path / "fresh", 1, resume=True), "deocclusion", TINY)


def test_option_and_data_errors(cg_frames: Path, unlabelled: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    base = ["train", "--data", str(cg_frames / "train-*.h5"), "--out", str(tmp_path / "r"), "--quiet"]
    code, _, err = run(capsys, *base, "--model", "unet", "--hidden", "64", "--no-flow")
    assert_one_line_error(code, err, "--hidden", "--no-flow", "SaVos")
    code, _, err = run(capsys, *base, "--model", "deocclusion", "--preset", "small")
    assert_one_line_error(code, err, "--preset")
    code, _, err = run(capsys, *base, "--model", "savos", "--max-steps", "-1")
    assert_one_line_error(code, err, "--max-steps")
    code, _, err = run(capsys, *base, "--model", "unet", "--crop", "30x32")
    assert_one_line_error(code, err, "crop size")
    unlabelled_train = str(unlabelled / "train-00000.h5")
    code, _, err = run(capsys, "train", "--model", "unet", "--data", unlabelled_train, "--out",
                       str(tmp_path / "u"), "--quiet")
    assert_one_line_error(code, err, "annotated amodal mask", unlabelled_train)
    code, _, err = run(capsys, "train", "--model", "deocclusion", "--data", str(tmp_path / "none-*.h5"),
                       "--out", str(tmp_path / "n"), "--quiet")
    assert_one_line_error(code, err, "none-*.h5")
    build = get_model_spec("deocclusion").build_config
    assert build(crop="16x16", channels="4,8", enlarge=2.0, no_image=True, preset="paper", clip_stride=0,
                 hidden=None) == DeocclusionConfig(crop_size=(16, 16), channels=(4, 8), enlarge=2.0)
    with pytest.raises(AmodalkitError, match="max-steps"):
        train_framewise(TrainConfig(data=[unlabelled_train], out=str(tmp_path / "m")), "deocclusion", TINY,
                        max_steps=-1)
    with pytest.raises(AmodalkitError, match="UNetConfig"):
        train_framewise(TrainConfig(data=[unlabelled_train], out=str(tmp_path / "m")), "unet", TINY)
