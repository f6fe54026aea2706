"""The one training loop: every model gets EMA, step cap, time budget, DDP; reductions stay on the device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from amodalkit.device import DistInfo, accumulator_dtype, all_reduce_sum, resolve_device
from amodalkit.engine import TimeBudget, TrainConfig, Trainer, make_task, train_model
from amodalkit.engine.hooks import Hook, WeightAverage
from amodalkit.errors import AmodalkitError
from amodalkit.io.checkpoint import read_checkpoint
from amodalkit.models.baselines.deocclusion import DeocclusionConfig
from amodalkit.models.baselines.unet import UNet, UNetConfig
from amodalkit.models.savos.config import SavosConfig

SAVOS = SavosConfig(crop_size=(16, 32), channels=(8, 8, 8, 16), hidden=16, clip_len=10)
UNET = UNetConfig(crop_size=(16, 16), channels=(4, 8, 8))
UNET_ARGS = ["--crop", "16x16", "--channels", "4,8,8"]


def _cfg(data: Path, out: Path, **changes: object) -> TrainConfig:
    base = TrainConfig(data=[str(data / "train-*.h5")], val=[str(data / "val-*.h5")], out=str(out), epochs=1,
                       batch_size=16, lr=1e-3, seed=5, quiet=True)
    return replace(base, **changes)


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = read_checkpoint(a).state_dict, read_checkpoint(b).state_dict
    for k, v in wa.items():
        torch.testing.assert_close(v, wb[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize(("model", "config"), [("savos", SAVOS), ("unet", UNET)])
def test_epoch_reductions_run_on_the_training_device(model: str, config: object, cg_savos: Path,
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    trainer = Trainer(_cfg(cg_savos, tmp_path / "run"), make_task(model, config))
    trainer.info = DistInfo(rank=0, world=2, local_rank=0)
    seen: list[torch.Tensor] = []

    def all_reduce(tensor: torch.Tensor, *args: object, **kwargs: object) -> None:
        seen.append(tensor)

    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    monkeypatch.setattr(torch.distributed, "barrier", lambda *args, **kwargs: None)
    trainer.fit()
    assert len(seen) == 2, "one reduction of the training sums and one of the validation sums"
    for tensor in seen:
        assert tensor.device == trainer.device
        assert tensor.dtype == accumulator_dtype(trainer.device)


def test_reduction_helper_keeps_the_device() -> None:
    seen: list[torch.device] = []
    original = torch.distributed.all_reduce
    try:
        torch.distributed.all_reduce = lambda t, *a, **k: seen.append(t.device)
        sums = torch.zeros(3, device="meta")
        assert all_reduce_sum(sums, DistInfo(world=2)) is sums
        assert all_reduce_sum(sums, DistInfo(world=1)) is sums
    finally:
        torch.distributed.all_reduce = original
    assert seen == [torch.device("meta")]
    assert accumulator_dtype(torch.device("cuda", 0)) == torch.float64
    assert accumulator_dtype(torch.device("mps")) == torch.float32


def test_no_host_sync_inside_the_epoch(cg_savos: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    trainer = Trainer(_cfg(cg_savos, tmp_path / "run", batch_size=4, ema=0.9, grad_clip=1.0),
                      make_task("savos", SAVOS))
    calls: list[str] = []
    for name in ("item", "tolist", "__float__", "__int__"):
        real = getattr(torch.Tensor, name)

        def spy(self: torch.Tensor, *args: object, _real=real, _name=name, **kwargs: object) -> object:
            caller = sys._getframe(1).f_code.co_filename
            if self.is_floating_point() and self.dim() <= 1 and "torch/optim" not in caller:
                calls.append(_name)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    result = trainer.train_epoch(1)
    monkeypatch.undo()
    # Adam's step counters are host tensors even on CUDA (not capturable): reading them is no sync
    assert trainer.steps > 2
    assert calls == ["tolist"], "the loss sums come to the host once, at the end of the epoch"
    assert result["items"] == len(trainer.train_set)


def test_device_rule_and_precision_checks(cg_savos: Path, tmp_path: Path) -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    for bad in ("tpu", "cuda:x", "cuda:-1", ""):
        with pytest.raises(AmodalkitError, match="--device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(AmodalkitError, match="no CUDA GPU"):
            resolve_device("cuda:0")
        with pytest.raises(AmodalkitError, match="fp16 trains on CUDA only"):
            Trainer(_cfg(cg_savos, tmp_path / "fp16", precision="fp16", device="cpu"),
                    make_task("unet", UNET))
    with pytest.raises(AmodalkitError, match="--precision"):
        _cfg(cg_savos, tmp_path, precision="fp8").validate()
    with pytest.raises(AmodalkitError, match="UNetConfig"):
        make_task("unet", DeocclusionConfig())
    with pytest.raises(AmodalkitError, match="rule-based"):
        make_task("convex", UNET)
    with pytest.raises(AmodalkitError, match="unknown model 'nope'; choose from convex, temporal"):
        make_task("nope", UNET)


def test_deterministic_flag(cg_savos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_kernel(*args: object) -> None:
        raise RuntimeError("upsample_bilinear2d_backward_out_cuda does not have a deterministic "
                           "implementation, but you set 'torch.use_deterministic_algorithms(True)'. "
                           "You can turn off ...")

    try:
        trainer = Trainer(_cfg(cg_savos, tmp_path / "det", deterministic=True), make_task("unet", UNET))
        assert torch.are_deterministic_algorithms_enabled()
        monkeypatch.setattr(trainer.task, "step", no_kernel)
        with pytest.raises(AmodalkitError, match="--deterministic: upsample_bilinear2d_backward") as exc:
            trainer.fit()
        assert "\n" not in str(exc.value) and "but you set" not in str(exc.value)
    finally:
        torch.use_deterministic_algorithms(False)
    assert json.loads((tmp_path / "det" / "config.json").read_text())["train"]["deterministic"] is True


def test_weight_average_matches_torch_averaged_model() -> None:
    torch.manual_seed(0)
    net = UNet(UNET)
    ours = WeightAverage(0.9, net)
    theirs = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(4):
        x = torch.rand(3, 16, 16)
        net(x, x, torch.rand(3, 3, 16, 16)).mean().backward()
        opt.step()
        ours.update(net)
        theirs.update_parameters(net)
    assert ours.steps == int(theirs.n_averaged) == 4
    expected = theirs.module.state_dict()
    for k, v in ours.module.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=0, msg=k)


def test_unet_cli_ema_resumes_exactly(cg_savos: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    def train(out: Path, epochs: int, *extra: str) -> None:
        code, out_text, err = run(capsys, "train", "--model", "unet", "--data", str(cg_savos / "train-*.h5"),
                                  "--val", str(cg_savos / "val-*.h5"), "--out", str(out), "--epochs",
                                  str(epochs), "--batch-size", "32", "--lr", "3e-3", "--ema", "0.99",
                                  "--threads", "1", "--quiet", *UNET_ARGS, *extra)
        assert code == 0, err
        assert "best epoch" in out_text

    train(tmp_path / "straight", 2)
    train(tmp_path / "split", 1)
    train(tmp_path / "split", 2, "--resume")
    _assert_same_weights(tmp_path / "straight" / "last.safetensors", tmp_path / "split" / "last.safetensors")
    saved = read_checkpoint(tmp_path / "straight" / "last.safetensors")
    assert saved.model == "unet" and saved.extra["train"]["ema"] == 0.99
    raw = torch.load(tmp_path / "straight" / "last.state.pt", weights_only=True)["raw_model"]
    assert any(not torch.equal(v, raw[k]) for k, v in saved.state_dict.items() if v.is_floating_point())
    assert [r["epoch"] for r in _log(tmp_path / "split")] == [1, 2]
    code, _, err = run(capsys, "train", "--model", "unet", "--data", str(cg_savos / "train-*.h5"), "--out",
                       str(tmp_path / "bad"), "--ema", "1.5", "--quiet", *UNET_ARGS)
    assert_one_line_error(code, err, "--ema")


def test_step_cap_and_time_budget_for_every_model(cg_savos: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = _cfg(cg_savos, tmp_path / "capped", epochs=3, batch_size=4, max_steps=2)
    capped = train_model(cfg, "savos", SAVOS)
    assert (capped["steps"], capped["stopped"], capped["last_epoch"]) == (2, "max steps", 1)
    assert [r["steps"] for r in _log(tmp_path / "capped")] == [2]
    clock = TimeBudget(1e-9)
    trainer = Trainer(_cfg(cg_savos, tmp_path / "budget", epochs=3), make_task("unet", UNET), hooks=[clock])
    summary = trainer.fit()
    assert (summary["stopped"], summary["last_epoch"], clock.epochs) == ("time budget", 1, 1)
    again = TimeBudget(1e-9)
    resumed = Trainer(_cfg(cg_savos, tmp_path / "budget", epochs=3, resume=True), make_task("unet", UNET),
                      hooks=[again])
    assert again.spent == clock.spent and resumed.fit()["last_epoch"] == 1


def test_persistent_workers_keep_the_order(cg_savos: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = DeocclusionConfig(crop_size=(16, 16), channels=(4, 8, 8))
    trainer = Trainer(_cfg(cg_savos, tmp_path / "w1", epochs=2, workers=1), make_task("deocclusion", config))
    assert trainer.train_loader.persistent_workers and trainer.val_loader.persistent_workers
    trainer.fit()
    train_model(_cfg(cg_savos, tmp_path / "w0", epochs=2), "deocclusion", config)
    _assert_same_weights(tmp_path / "w0" / "last.safetensors", tmp_path / "w1" / "last.safetensors")


@pytest.mark.parametrize("model", ["unet", "deocclusion"])
def test_ddp_gloo_two_processes_framewise(model: str, cg_savos: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "amodalkit", "train", "--model", model, "--data", str(cg_savos / "train-*.h5"),
           "--val", str(cg_savos / "val-*.h5"), "--out", str(run_dir), "--epochs", "2", "--batch-size", "16",
           "--device", "cpu", "--ema", "0.99", "--quiet", *UNET_ARGS]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    log = _log(run_dir)
    assert [r["epoch"] for r in log] == [1, 2]
    assert log[0]["train_items_per_s"] > 0 and log[1]["steps"] == 2 * log[0]["steps"]
    assert read_checkpoint(run_dir / "best.safetensors").model == model


class _GradNorms(Hook):
    """The total gradient norm each step left behind (grads stay until the next step zeroes them)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def after_step(self, trainer: Trainer) -> None:
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        per_tensor = torch.stack([torch.linalg.vector_norm(g) for g in grads])
        self.norms.append(float(torch.linalg.vector_norm(per_tensor)))


def test_grad_clip_bounds_every_step_s_gradient_norm(cg_savos: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    free, clipped = _GradNorms(), _GradNorms()
    Trainer(_cfg(cg_savos, tmp_path / "free", batch_size=4, max_steps=3), make_task("savos", SAVOS),
            hooks=[free]).fit()
    clip = min(free.norms) / 10
    Trainer(_cfg(cg_savos, tmp_path / "clipped", batch_size=4, max_steps=3, grad_clip=clip),
            make_task("savos", SAVOS), hooks=[clipped]).fit()
    assert len(clipped.norms) == 3 and all(n <= clip * (1 + 1e-4) for n in clipped.norms)
    assert all(n > clip for n in free.norms)
    saved = json.loads((tmp_path / "clipped" / "config.json").read_text())
    assert saved["train"]["grad_clip"] == clip
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(AmodalkitError, match="--grad-clip"):
            _cfg(cg_savos, tmp_path / "bad", grad_clip=bad).validate()
