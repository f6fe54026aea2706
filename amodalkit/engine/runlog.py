"""The run folder: its config, the atomic commit of each epoch's files, and the resume check.

::

    RUN_DIR/
      config.json            model name, model config, training settings, world size
      commit.json            the last committed epoch and the sha256 of every file below
      log.jsonl              one line per epoch: losses, steps, time, throughput
      best.safetensors       lowest selection loss (+ best.json)
      last.safetensors       the latest epoch (+ last.json)
      last.state.pt          optimizer, counters and hook state (tensors and plain data only)
      .commit/               an epoch's files while they are being written (hidden)

An epoch commits in three moves: every file is written into ``.commit/``, then
``commit.json`` names the epoch and the hash of each file (one atomic rename: the commit
point), then the files are renamed into place. A run killed before the commit point keeps
the previous epoch's files untouched; one killed during the renames is rolled forward on
``--resume`` from ``.commit/``. Resume refuses, naming the files, when a file matches
neither its committed hash nor the staged copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import atomic_path, read_json, write_json

COMMIT = "commit.json"
STAGE = ".commit"
STATE = "last.state.pt"
LOG = "log.jsonl"
COMMIT_FORMAT = "amodalkit-run-commit"

#: writer(path) writes one file of the epoch at `path` (and may write sidecars beside it)
Writer = Callable[[Path], object]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def holds_run(out: Path) -> bool:
    """Whether `out` already holds a run's checkpoints (a fresh start there is refused)."""
    return (out / COMMIT).exists() or (out / "last.safetensors").exists()


def write_run_config(out: Path, record: dict) -> None:
    """config.json of a new run; refuses a folder that already holds one."""
    if holds_run(out):
        raise AmodalkitError("the run folder already holds a run; pass --resume or choose a new --out", out)
    write_json(out / "config.json", record)


def log_lines(out: Path, epoch: int, record: dict) -> str:
    """log.jsonl's text after `epoch`: earlier epochs' lines (not those a resume re-ran) plus `record`."""
    log = out / LOG
    lines = log.read_text().splitlines() if log.exists() else []
    lines = [ln for ln in lines if ln.strip() and json.loads(ln)["epoch"] < epoch]
    lines.append(json.dumps(record, sort_keys=True))
    return "\n".join(lines) + "\n"


def read_commit(out: Path) -> dict | None:
    """commit.json of a run folder, None when there is none; AmodalkitError naming it when malformed."""
    path = out / COMMIT
    if not path.exists():
        return None
    try:
        commit = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise AmodalkitError(f"not a readable commit record ({exc})", path) from exc
    files = commit.get("files") if isinstance(commit, dict) else None
    if (not isinstance(commit, dict) or commit.get("format") != COMMIT_FORMAT
            or not isinstance(commit.get("epoch"), int) or not isinstance(files, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items())
            or any(Path(k).name != k or k.startswith(".") for k in files)):
        raise AmodalkitError("malformed commit record: expected format, epoch and files", path)
    return commit


def commit_epoch(out: Path, epoch: int, writers: Mapping[str, Writer]) -> dict:
    """Write an epoch's files (``name -> writer``) and commit them atomically; return the commit record.

    Files of the previous commit that this epoch does not rewrite (``best.safetensors``
    after an epoch that was not the best) are carried into the new record unchanged.
    """
    stage = out / STAGE
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    for name, write in writers.items():
        write(stage / name)
    hashes = {p.name: sha256_file(p) for p in sorted(stage.iterdir()) if not p.name.startswith(".")}
    previous = read_commit(out)
    files = {**(previous["files"] if previous else {}), **hashes}
    commit = {"format": COMMIT_FORMAT, "epoch": epoch, "files": dict(sorted(files.items()))}
    write_json(out / COMMIT, commit)
    for name in hashes:
        os.replace(stage / name, out / name)
    shutil.rmtree(stage, ignore_errors=True)
    return commit


def verify_commit(out: Path) -> tuple[dict, list[str]]:
    """Check every committed file against its hash; return the record and the files to roll forward.

    A file is consistent when it matches its hash in commit.json, or when it does not but
    its copy in ``.commit/`` does (a kill during the renames); anything else is refused.
    """
    path = out / COMMIT
    commit = read_commit(out)
    if commit is None:
        raise AmodalkitError("nothing to resume: no commit.json in the run folder", out)
    pending, bad = [], []
    for name, digest in commit["files"].items():
        final, staged = out / name, out / STAGE / name
        if final.is_file() and sha256_file(final) == digest:
            continue
        if staged.is_file() and sha256_file(staged) == digest:
            pending.append(name)
            continue
        bad.append(f"{name} ({'changed' if final.exists() else 'missing'})")
    if bad:
        where = out / bad[0].split(" ")[0] if len(bad) == 1 else out
        raise AmodalkitError(f"the run folder does not match its last commit (epoch {commit['epoch']} in "
                             f"{path.name}): {', '.join(bad)}; the files were changed after training wrote "
                             "them, so --resume would diverge: restore them or start a new --out", where)
    return commit, pending


def roll_forward(out: Path, pending: list[str]) -> None:
    """Finish an interrupted commit: move the staged files into place, drop the staging folder."""
    for name in pending:
        os.replace(out / STAGE / name, out / name)
    shutil.rmtree(out / STAGE, ignore_errors=True)


def discard_stage(out: Path) -> None:
    """Remove the staging folder of an epoch that never reached its commit point."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(out / STAGE)


def save_state(path: Path, state: dict) -> None:
    """Write a resume state (tensors and plain data only), atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def load_resume_state(path: Path) -> dict:
    """``torch.load`` of ``last.state.pt`` (tensors and plain data only); AmodalkitError naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise AmodalkitError("nothing to resume: no last.state.pt in the run folder", path) from exc
    except (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError) as exc:
        reason = str(exc).strip().split(". ")[0].splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AmodalkitError(f"not a readable resume state (truncated or corrupt: {reason})", path) from exc
    if not isinstance(state, dict):
        raise AmodalkitError(f"not a resume state: holds a {type(state).__name__}, not a dict", path)
    return state


def resumed_model_config(out: Path, model_name: str, config_class: Any, model_config: Any) -> Any:
    """For ``--resume``: the saved model config; refuses a missing run, another model or other options."""
    cfg_path = out / "config.json"
    if not (out / "last.state.pt").is_file() and not (out / COMMIT).is_file():
        raise AmodalkitError("nothing to resume: no last.state.pt in the run folder", out)
    saved = read_json(cfg_path, "run config", missing="nothing to resume: the run folder has no config.json")
    if not isinstance(saved, dict) or not isinstance(saved.get("model_config"), dict):
        raise AmodalkitError("malformed run config: expected a JSON object with a 'model_config' object",
                             cfg_path)
    if saved.get("model", model_name) != model_name:
        raise AmodalkitError(f"--resume of a {saved.get('model')!r} run with --model {model_name}", cfg_path)
    try:
        saved_model = config_class.from_dict(saved["model_config"])
    except AmodalkitError as exc:
        raise AmodalkitError(f"malformed run config: {exc}", cfg_path) from exc
    if asdict(saved_model) != asdict(model_config):
        raise AmodalkitError("--resume with model options that differ from the run's config.json; "
                             "drop the model options or start a new --out", cfg_path)
    return saved_model
