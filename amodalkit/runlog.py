"""The run folder's per-epoch files shared by every trainer: ``last.state.pt`` and ``log.jsonl``."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from amodalkit.atomic import atomic_path


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
