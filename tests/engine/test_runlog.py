"""The run folder's resume files: unreadable state and malformed config.json are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from amodalkit.engine.runlog import load_resume_state, resumed_model_config
from amodalkit.errors import AmodalkitError
from amodalkit.models.savos.config import SavosConfig


def _state(tmp_path: Path) -> Path:
    path = tmp_path / "last.state.pt"
    torch.save({"epoch": 3, "optimizer": {"lr": torch.tensor(1e-3)}}, path)
    return path


@pytest.mark.parametrize("damage", [lambda b: b[: len(b) // 2], lambda b: b"", lambda b: b"garbage" * 20,
                                    lambda b: b[:100]])
def test_unreadable_resume_state_names_the_file(tmp_path: Path, damage) -> None:
    path = _state(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    before = path.read_bytes()
    with pytest.raises(AmodalkitError, match="not a readable resume state") as err:
        load_resume_state(path)
    assert str(err.value).startswith(f"{path}: ") and "\n" not in str(err.value)
    assert path.read_bytes() == before


def test_resume_state_round_trip_and_wrong_content(tmp_path: Path) -> None:
    assert load_resume_state(_state(tmp_path))["epoch"] == 3
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(AmodalkitError, match="holds a list"):
        load_resume_state(tmp_path / "list.pt")


@pytest.mark.parametrize(
    ("text", "needle"),
    [("{not json", "not a readable run config"), ("[1]", "'model_config' object"),
     ('{"model": "savos", "model_config": 3}', "'model_config' object"),
     ('{"model": "savos", "model_config": {"crop_size": "abc"}}', "invalid SaVos config"),
     ('{"model": "savos", "model_config": {"bogus": 1}}', "unknown SaVos config keys")],
)
def test_malformed_config_json_names_the_file(tmp_path: Path, text: str, needle: str) -> None:
    _state(tmp_path)
    cfg = tmp_path / "config.json"
    cfg.write_text(text)
    with pytest.raises(AmodalkitError, match=needle) as err:
        resumed_model_config(tmp_path, "savos", SavosConfig, SavosConfig.small())
    assert str(err.value).startswith(f"{cfg}: ")
    assert cfg.read_text() == text


def test_resume_needs_config_json(tmp_path: Path) -> None:
    _state(tmp_path)
    with pytest.raises(AmodalkitError, match=r"no config\.json"):
        resumed_model_config(tmp_path, "savos", SavosConfig, SavosConfig.small())
    from dataclasses import asdict

    (tmp_path / "config.json").write_text(json.dumps({"model": "savos",
                                                      "model_config": asdict(SavosConfig.small())}))
    assert resumed_model_config(tmp_path, "savos", SavosConfig, SavosConfig.small()) == SavosConfig.small()
