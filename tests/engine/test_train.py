from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from amodalkit.cli.app import main
from amodalkit.datasets.chewing_gum import generate_dataset, make_config
from amodalkit.engine import TrainConfig, train_model
from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import evaluate_method
from amodalkit.io.checkpoint import read_checkpoint
from amodalkit.io.shards import expand_shard_paths
from amodalkit.models.registry import build_method, method_from_checkpoint
from amodalkit.models.savos.config import SavosConfig

TINY = SavosConfig(crop_size=(16, 32), channels=(8, 8, 8, 16), hidden=16, clip_len=10)
TINY_ARGS = ["--crop", "16x32", "--channels", "8,8,8,16", "--hidden", "16", "--clip-len", "10"]


def train(cfg: TrainConfig, model_config: SavosConfig) -> dict:
    """SaVos through the one training loop."""
    return train_model(cfg, "savos", model_config)


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cg_train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """savos2022 videos for a short training that must beat the convex baseline."""
    out = tmp_path_factory.mktemp("cg_train")
    generate_dataset(out, make_config("savos2022"), {"train": 24, "val": 2, "test": 8}, seed=3,
                     videos_per_shard=24, quiet=True)
    return out


def test_short_training_beats_convex_on_occluded_miou(cg_train: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = SavosConfig(crop_size=(16, 16), channels=(16, 32, 32, 64), hidden=64, clip_len=0, crop_mode="track")
    run = tmp_path / "run"
    summary = train(TrainConfig(data=[str(cg_train / "train-*.h5")], val=[str(cg_train / "val-*.h5")],
                                out=str(run), epochs=20, batch_size=8, lr=2e-3, quiet=True), cfg)
    log = _log(run)
    assert [r["epoch"] for r in log] == list(range(1, 21))
    assert log[-1]["train_loss"] < 0.7 * log[0]["train_loss"]
    assert log[-1]["val_loss"] < log[0]["val_loss"]
    assert summary["selected_on"] == "val"
    test = expand_shard_paths(str(cg_train / "test-*.h5"))
    savos = evaluate_method(method_from_checkpoint(run / "best.safetensors"), test, quiet=True)
    convex = evaluate_method(build_method("convex"), test, quiet=True)
    assert savos["frame_miou_occluded"] > convex["frame_miou_occluded"] + 0.15, (savos, convex)
    assert savos["frame_miou_full"] > 0.85


def test_resume_continues_from_last_epoch(cg_savos: Path, tmp_path: Path) -> None:
    def cfg(out: Path, epochs: int, resume: bool = False) -> TrainConfig:
        return TrainConfig(data=[str(cg_savos / "train-*.h5")], val=[str(cg_savos / "val-*.h5")],
                           out=str(out), epochs=epochs, batch_size=16, lr=1e-3, seed=5, resume=resume,
                           quiet=True, lr_schedule="cosine", schedule_epochs=2)

    train(cfg(tmp_path / "straight", 2), TINY)
    train(cfg(tmp_path / "split", 1), TINY)
    assert len(_log(tmp_path / "split")) == 1
    with pytest.raises(AmodalkitError, match="--resume"):
        train(cfg(tmp_path / "split", 2), TINY)
    with pytest.raises(AmodalkitError, match="differ"):
        train(cfg(tmp_path / "split", 2, resume=True), SavosConfig(**{**TINY.__dict__, "hidden": 8}))
    train(cfg(tmp_path / "split", 2, resume=True), TINY)
    log = _log(tmp_path / "split")
    assert [r["epoch"] for r in log] == [1, 2]
    assert [r["lr"] for r in log] == pytest.approx([1e-3, 5e-4])
    a = read_checkpoint(tmp_path / "straight" / "last.safetensors")
    b = read_checkpoint(tmp_path / "split" / "last.safetensors")
    assert a.extra["epoch"] == b.extra["epoch"] == 2
    for k, v in a.state_dict.items():
        torch.testing.assert_close(v, b.state_dict[k], msg=k)
    straight = [r["train_loss"] for r in _log(tmp_path / "straight")]
    assert straight == pytest.approx([r["train_loss"] for r in log])
    with pytest.raises(AmodalkitError, match="nothing to resume"):
        train(cfg(tmp_path / "fresh", 1, resume=True), TINY)


def test_ema_weights_are_saved_and_resume_exactly(cg_savos: Path, tmp_path: Path) -> None:
    def cfg(out: Path, epochs: int, ema: float = 0.9, resume: bool = False) -> TrainConfig:
        return TrainConfig(data=[str(cg_savos / "train-*.h5")], val=[str(cg_savos / "val-*.h5")],
                           out=str(out), epochs=epochs, batch_size=16, lr=1e-3, seed=5, ema=ema,
                           resume=resume, quiet=True)

    train(cfg(tmp_path / "straight", 2), TINY)
    train(cfg(tmp_path / "split", 1), TINY)
    with pytest.raises(AmodalkitError, match="--ema"):
        train(cfg(tmp_path / "split", 2, ema=0.0, resume=True), TINY)
    train(cfg(tmp_path / "split", 2, resume=True), TINY)
    saved = read_checkpoint(tmp_path / "straight" / "last.safetensors").state_dict
    raw = torch.load(tmp_path / "straight" / "last.state.pt", weights_only=True)["raw_model"]
    assert any(not torch.equal(v, raw[k]) for k, v in saved.items())
    resumed = read_checkpoint(tmp_path / "split" / "last.safetensors").state_dict
    for k, v in saved.items():
        torch.testing.assert_close(v, resumed[k], msg=k)
    with pytest.raises(AmodalkitError, match="--ema"):
        TrainConfig(data=["x"], out="y", ema=1.0).validate()


def test_ddp_gloo_two_processes(cg_savos: Path, tmp_path: Path) -> None:
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "amodalkit", "train", "--data", str(cg_savos / "train-*.h5"),
           "--val", str(cg_savos / "val-*.h5"), "--out", str(run), "--epochs", "2", "--batch-size", "8",
           "--device", "cpu", "--quiet", *TINY_ARGS]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    log = _log(run)
    assert [r["epoch"] for r in log] == [1, 2]
    assert log[0]["train_clips_per_s"] > 0
    assert read_checkpoint(run / "best.safetensors").model == "savos"


def test_cli_train_then_evaluate_with_tta(cg_savos: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "cli"
    code = main(["train", "--model", "savos", "--data", str(cg_savos / "train-*.h5"), "--out", str(run),
                 "--epochs", "1", "--batch-size", "16", "--threads", "1", "--quiet", "--no-bidirectional",
                 *TINY_ARGS])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "best epoch 1 (train loss" in out
    assert json.loads((run / "config.json").read_text())["model_config"]["no_bidirectional"] is True
    js = tmp_path / "r.json"
    code = main(["evaluate", "--model", "savos", "--checkpoint", str(run / "best.safetensors"), "--data",
                 str(cg_savos / "test-00000.h5"), "--tta", "--tta-max-iters", "2", "--json", str(js),
                 "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "with test-time adaptation" in out
    result = json.loads(js.read_text())
    assert result["method"] == "savos" and result["tta"]["method"] == "savos"
    assert 0 <= result["frame_miou_occluded"] <= 1 and 0 <= result["tta"]["frame_miou_occluded"] <= 1
    assert result["tta"]["tta"]["videos"] == 3 and result["tta"]["tta"]["mean_iterations"] <= 2
    missing = str(tmp_path / "none.safetensors")
    for args, needle in [(["--model", "savos"], "--checkpoint"),
                         (["--model", "convex", "--tta"], "--tta"),
                         (["--model", "savos", "--checkpoint", missing], "does not exist")]:
        code = main(["evaluate", *args, "--data", str(cg_savos / "test-00000.h5"), "--quiet"])
        _, err = capsys.readouterr()
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
