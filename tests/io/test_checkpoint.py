from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from amodalkit.errors import AmodalkitError
from amodalkit.io.checkpoint import load_state_strict, read_checkpoint, save_checkpoint


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


def _small_savos_config() -> dict:
    from dataclasses import asdict

    from amodalkit.models.savos.config import SavosConfig

    return asdict(SavosConfig(crop_size=(8, 8), channels=(4, 4, 4), hidden=8))


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"format_version": "abc"}, "'format_version' must be an integer"),
        ({"config": "[1, 2]"}, "must be JSON objects"),
        ({"extra": "{broken"}, "not valid JSON"),
    ],
)
def test_metadata_of_the_wrong_type_is_refused(tmp_path: Path, meta: dict, message: str) -> None:
    from bad_files import raw_checkpoint

    path = raw_checkpoint(tmp_path / "m.safetensors", {}, meta=meta)
    before = path.read_bytes()
    with pytest.raises(AmodalkitError, match=message) as err:
        read_checkpoint(path)
    assert str(path) in str(err.value) and path.read_bytes() == before


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.weight[0, 0] = float("nan")
    path = save_checkpoint(tmp_path / "m.safetensors", "savos", {}, net.state_dict())
    with pytest.raises(AmodalkitError, match="'weight' holds NaN or infinite") as err:
        read_checkpoint(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"crop_size": "abc"}, "invalid SaVos config"),
        ({"hidden": "big"}, "invalid SaVos config"),
        ({"crop_size": [8]}, "invalid SaVos config"),
        ({"hidden": 100000}, "at most 4096"),
    ],
)
def test_bad_configs_are_refused_with_the_path(tmp_path: Path, change: dict, message: str) -> None:
    from bad_files import raw_checkpoint

    from amodalkit.models.registry import method_from_checkpoint

    path = raw_checkpoint(tmp_path / "m.safetensors", {**_small_savos_config(), **change})
    with pytest.raises(AmodalkitError, match=message) as err:
        method_from_checkpoint(path)
    assert str(path) in str(err.value)


def test_config_is_compared_with_the_weights_before_the_model_is_built(tmp_path: Path) -> None:
    import resource

    from bad_files import raw_checkpoint

    from amodalkit.io.checkpoint import build_checked

    path = raw_checkpoint(tmp_path / "m.safetensors", {})
    state = read_checkpoint(path).state_dict
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(AmodalkitError, match="config does not match the weights") as err:
        build_checked(lambda: torch.nn.Linear(100_000, 100_000), state, path)  # 40 GB if built
    assert str(path) in str(err.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000
    big = _small_savos_config() | {"hidden": 4096, "channels": [4096, 4096, 4096]}
    from amodalkit.models.registry import method_from_checkpoint

    with pytest.raises(AmodalkitError, match="config does not match the weights"):
        method_from_checkpoint(raw_checkpoint(tmp_path / "big.safetensors", big))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000
