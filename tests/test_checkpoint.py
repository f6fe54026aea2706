from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from amodalkit.checkpoint import load_state_strict, read_checkpoint, save_checkpoint
from amodalkit.errors import AmodalkitError


def test_round_trip_with_sidecar(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "m.safetensors", "savos", {"width": 8}, net.state_dict(), {"epoch": 3})
    ck = read_checkpoint(path, expect_model="savos")
    assert ck.config == {"width": 8} and ck.extra == {"epoch": 3}
    other = torch.nn.Linear(3, 2)
    load_state_strict(other, ck.state_dict, path)
    assert torch.equal(other.weight, net.weight)
    assert json.loads((tmp_path / "m.json").read_text())["config"] == {"width": 8}


def test_half_precision_loads_into_float_model(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "m.safetensors", "savos", {}, net.state_dict(), half=True)
    ck = read_checkpoint(path)
    assert ck.state_dict["weight"].dtype == torch.float16
    other = torch.nn.Linear(3, 2)
    load_state_strict(other, ck.state_dict, path)
    assert other.weight.dtype == torch.float32
    assert torch.allclose(other.weight, net.weight, atol=1e-3)


def test_errors_name_the_file(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    path = save_checkpoint(tmp_path / "m.safetensors", "savos", {}, net.state_dict())
    with pytest.raises(AmodalkitError, match="expected 'unet'"):
        read_checkpoint(path, expect_model="unet")
    with pytest.raises(AmodalkitError, match="missing"):
        load_state_strict(torch.nn.Sequential(torch.nn.Linear(3, 2)), read_checkpoint(path).state_dict, path)
    with pytest.raises(AmodalkitError, match="has shape"):
        load_state_strict(torch.nn.Linear(4, 2), read_checkpoint(path).state_dict, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AmodalkitError, match="truncated or corrupt") as err:
        read_checkpoint(path)
    assert str(path) in str(err.value)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(AmodalkitError, match="not an amodalkit checkpoint"):
        read_checkpoint(plain)
    with pytest.raises(AmodalkitError, match="does not exist"):
        read_checkpoint(tmp_path / "none.safetensors")
