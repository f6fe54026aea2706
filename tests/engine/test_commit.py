"""The epoch commit is atomic: a kill between any two file writes resumes exactly or is refused."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from cli_helpers import assert_one_line_error, run

from amodalkit.engine import TrainConfig, train_model
from amodalkit.engine.runlog import COMMIT, STAGE, STATE
from amodalkit.errors import AmodalkitError
from amodalkit.io.checkpoint import read_checkpoint
from amodalkit.models.savos.config import SavosConfig

TINY = SavosConfig(crop_size=(16, 32), channels=(8, 8, 8, 16), hidden=16, clip_len=10)
TINY_ARGS = ["--crop", "16x32", "--channels", "8,8,8,16", "--hidden", "16", "--clip-len", "10"]


class Killed(BaseException):
    """Stands for SIGKILL: nothing catches it."""


def _cfg(data: Path, out: Path, epochs: int, resume: bool = False) -> TrainConfig:
    return TrainConfig(data=[str(data / "train-*.h5")], val=[str(data / "val-*.h5")], out=str(out),
                       epochs=epochs, batch_size=16, lr=1e-3, seed=5, ema=0.9, resume=resume, quiet=True)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(run_dir / "last.safetensors").state_dict


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        torch.testing.assert_close(v, b[k], rtol=0, atol=0, msg=k)


def _kill_after(monkeypatch: pytest.MonkeyPatch, k: int) -> list[str]:
    """Let `k` files become visible (every write ends in ``os.replace``), then kill the run."""
    real = os.replace
    done: list[str] = []

    def replace(src: str | Path, dst: str | Path) -> None:
        if len(done) == k:
            raise Killed
        real(src, dst)
        done.append(str(dst))

    monkeypatch.setattr(os, "replace", replace)
    return done


@pytest.fixture(scope="module")
def runs(cg_savos: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """An uninterrupted 2-epoch run and a 1-epoch run to continue from."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("commit")
    train_model(_cfg(cg_savos, root / "straight", 2), "savos", TINY)
    train_model(_cfg(cg_savos, root / "one", 1), "savos", TINY)
    return {"straight": root / "straight", "one": root / "one"}


def test_kill_between_any_two_writes_resumes_exactly(runs: dict[str, Path], cg_savos: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    straight = _weights(runs["straight"])
    counted = tmp_path / "counted"
    shutil.copytree(runs["one"], counted)
    writes = _kill_after(monkeypatch, 10**6)
    train_model(_cfg(cg_savos, counted, 2, resume=True), "savos", TINY)
    monkeypatch.undo()
    names = [Path(w).name for w in writes]
    assert COMMIT in names and names.index(COMMIT) < len(names) - 1, names
    rolled_forward = 0
    for k in range(len(writes)):
        run_dir = tmp_path / f"k{k}"
        shutil.copytree(runs["one"], run_dir)
        with monkeypatch.context() as m:
            _kill_after(m, k)
            with pytest.raises(Killed):
                train_model(_cfg(cg_savos, run_dir, 2, resume=True), "savos", TINY)
        commit = json.loads((run_dir / COMMIT).read_text())
        rolled_forward += commit["epoch"] == 2 and (run_dir / STAGE).is_dir()
        assert commit["epoch"] == (2 if k > names.index(COMMIT) else 1), (k, names)
        summary = train_model(_cfg(cg_savos, run_dir, 2, resume=True), "savos", TINY)
        assert summary["best_epoch"] in (1, 2)
        _assert_same(straight, _weights(run_dir))
        log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
        assert [r["epoch"] for r in log] == [1, 2], k
        assert not (run_dir / STAGE).exists()
    assert rolled_forward >= 1


def test_changed_files_are_refused_by_name(runs: dict[str, Path], cg_savos: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "tampered"
    shutil.copytree(runs["one"], run_dir)
    (run_dir / STATE).write_bytes(b"garbage" * 50)
    args = ["train", "--data", str(cg_savos / "train-*.h5"), "--val", str(cg_savos / "val-*.h5"), "--out",
            str(run_dir), "--epochs", "2", "--batch-size", "16", "--lr", "1e-3", "--seed", "5",
            "--ema", "0.9", "--resume", "--quiet", *TINY_ARGS]
    code, _, err = run(capsys, *args)
    assert_one_line_error(code, err, str(run_dir / STATE), "changed", "epoch 1")
    last = run_dir / "last.safetensors"
    last.write_bytes(last.read_bytes()[:-10])
    code, _, err = run(capsys, *args)
    assert_one_line_error(code, err, str(run_dir), "last.safetensors (changed)", "last.state.pt (changed)")
    (run_dir / "best.safetensors").unlink()
    code, _, err = run(capsys, *args)
    assert_one_line_error(code, err, "best.safetensors (missing)")
    (run_dir / COMMIT).write_text("{not json")
    code, _, err = run(capsys, *args)
    assert_one_line_error(code, err, str(run_dir / COMMIT), "not a readable commit record")


def test_garbage_state_and_config_without_commit_record(runs: dict[str, Path], cg_savos: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "legacy"
    shutil.copytree(runs["one"], run_dir)
    (run_dir / COMMIT).unlink()
    args = ["train", "--data", str(cg_savos / "train-*.h5"), "--out", str(run_dir), "--epochs", "2",
            "--batch-size", "16", "--ema", "0.9", "--resume", "--quiet", *TINY_ARGS]
    state = (run_dir / STATE).read_bytes()
    (run_dir / STATE).write_bytes(state[: len(state) // 2])
    code, _, err = run(capsys, *args)
    assert_one_line_error(code, err, str(run_dir / STATE), "not a readable resume state")
    (run_dir / STATE).write_bytes(state)
    config = run_dir / "config.json"
    text = config.read_text()
    config.write_text(text[: len(text) // 2])
    code, _, err = run(capsys, *args)
    assert_one_line_error(code, err, str(config), "not a readable run config")
    config.write_text(text)
    shutil.copy(runs["straight"] / "last.safetensors", run_dir / "last.safetensors")
    with pytest.raises(AmodalkitError, match="different epochs") as exc:
        train_model(_cfg(cg_savos, run_dir, 2, resume=True), "savos", TINY)
    assert "last.safetensors 2, last.state.pt 1" in str(exc.value)


def test_a_fresh_start_never_overwrites_a_committed_run(runs: dict[str, Path], cg_savos: Path,
                                                        tmp_path: Path) -> None:
    run_dir = tmp_path / "kept"
    shutil.copytree(runs["one"], run_dir)
    (run_dir / "last.safetensors").unlink()
    before = (run_dir / COMMIT).read_bytes()
    with pytest.raises(AmodalkitError, match="--resume"):
        train_model(_cfg(cg_savos, run_dir, 2), "savos", TINY)
    assert (run_dir / COMMIT).read_bytes() == before
