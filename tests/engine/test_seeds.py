"""`train --seeds`, and the determinism promise: same machine, threads and seed give the same weights."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error, run
from safetensors.torch import load_file

from amodalkit.engine.seeds import mean_sd

UNET = ["--model", "unet", "--crop", "16x16", "--channels", "4,8", "--batch-size", "16", "--max-steps", "3"]
SAVOS = ["--model", "savos", "--preset", "small", "--crop", "16x32", "--channels", "4,8,8,8", "--hidden", "8",
         "--clip-len", "3", "--batch-size", "4", "--max-steps", "2"]


def _sha(path: Path) -> str:
    """sha256 of a checkpoint's tensors (its metadata names the run folder, which differs)."""
    tensors = load_file(str(path))
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + tensors[name].numpy().tobytes())
    return digest.hexdigest()


def _train(capsys: pytest.CaptureFixture[str], data: Path, out: Path, *flags: str) -> None:
    code, _, err = run(capsys, "train", *flags, "--data", str(data / "train-*.h5"), "--out", str(out),
                       "--epochs", "1", "--device", "cpu", "--threads", "1", "--quiet")
    assert code == 0, err


@pytest.mark.parametrize("flags", [UNET, SAVOS], ids=["unet", "savos"])
def test_same_seed_same_threads_same_weights(cg_savos: Path, tmp_path: Path, flags: list[str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _train(capsys, cg_savos, tmp_path / "a", *flags, "--seed", "3")
    _train(capsys, cg_savos, tmp_path / "b", *flags, "--seed", "3")
    _train(capsys, cg_savos, tmp_path / "c", *flags, "--seed", "4")
    a, b, c = (_sha(tmp_path / r / "best.safetensors") for r in "abc")
    assert a == b and a != c


def test_seeds_train_one_run_each_and_record_the_spread(cg_savos: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    _train(capsys, cg_savos, tmp_path / "many", *UNET, "--seeds", "0,5")
    _train(capsys, cg_savos, tmp_path / "one", *UNET, "--seed", "5")
    record = json.loads((tmp_path / "many" / "seeds.json").read_text())
    assert record["seeds"] == [0, 5] and record["best_loss"]["n"] == 2
    losses = [record["runs"][s]["best_loss"] for s in ("0", "5")]
    assert record["best_loss"]["values"] == losses and record["best_loss"]["sd"] > 0
    one = _sha(tmp_path / "one" / "best.safetensors")
    assert _sha(tmp_path / "many" / "seed-5" / "best.safetensors") == one
    code, _, err = run(capsys, "train", *UNET, "--seeds", "0,0", "--data", str(cg_savos), "--out",
                       str(tmp_path / "x"))
    assert_one_line_error(code, err, "--seeds needs distinct seeds")
    code, _, err = run(capsys, "train", *UNET, "--seeds", "1", "--seed", "2", "--data", str(cg_savos),
                       "--out", str(tmp_path / "y"))
    assert_one_line_error(code, err, "--seeds replaces --seed")


def test_mean_sd() -> None:
    assert mean_sd([1.0, 3.0]) == {"mean": 2.0, "sd": pytest.approx(2 ** 0.5), "n": 2, "values": [1.0, 3.0]}
    assert mean_sd([4.0])["sd"] == 0.0
