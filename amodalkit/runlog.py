"""The run folder's files shared by every trainer: the resume check, ``last.state.pt`` and ``log.jsonl``."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from amodalkit.atomic import atomic_path
from amodalkit.errors import AmodalkitError


def save_epoch_files(out: Path, epoch: int, record: dict, state: dict) -> None:
    """Write the resume state and append the epoch's log line (dropping lines a resume re-ran), atomically."""
    with atomic_path(out / "last.state.pt") as tmp:
        torch.save(state, tmp)
    log = out / "log.jsonl"
    lines = log.read_text().splitlines() if log.exists() else []
    lines = [ln for ln in lines if ln.strip() and json.loads(ln)["epoch"] < epoch]
    lines.append(json.dumps(record, sort_keys=True))
    with atomic_path(log) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def resumed_model_config(out: Path, model_name: str, config_class: Any, model_config: Any) -> Any:
    """For ``--resume``: the saved model config; refuses a missing run, another model or other options."""
    cfg_path = out / "config.json"
    if not (out / "last.state.pt").is_file():
        raise AmodalkitError("nothing to resume: no last.state.pt in the run folder", out)
    saved = json.loads(cfg_path.read_text())
    if saved.get("model", model_name) != model_name:
        raise AmodalkitError(f"--resume of a {saved.get('model')!r} run with --model {model_name}", cfg_path)
    saved_model = config_class.from_dict(saved["model_config"])
    if asdict(saved_model) != asdict(model_config):
        raise AmodalkitError("--resume with model options that differ from the run's config.json; "
                             "drop the model options or start a new --out", cfg_path)
    return saved_model
