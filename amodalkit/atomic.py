"""Atomic file writes: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from amodalkit.errors import AmodalkitError

TMP_MARK = ".tmp-"


def temp_path_for(path: Path) -> Path:
    """A hidden temporary name in the same folder (same filesystem, so rename is atomic)."""
    return path.with_name(f".{path.stem}{TMP_MARK}{os.getpid()}{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to `path`, on failure delete it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AmodalkitError(f"cannot create output folder ({exc.strerror})", path.parent) from exc
    if not os.access(path.parent, os.W_OK):
        raise AmodalkitError("output folder is not writable", path.parent)
    tmp = temp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_json(path: str | Path, data: object) -> None:
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def remove_stale_temps(folder: str | Path) -> int:
    """Delete temporary files left by an interrupted run in `folder`; return how many."""
    folder = Path(folder)
    n = 0
    if folder.is_dir():
        for p in folder.glob(f".*{TMP_MARK}*"):
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    return n


def claim_output_dir(record_path: str | Path, record: dict, conflict: str) -> None:
    """Refuse to mix runs: if `record_path` holds another record raise `conflict`, else write it.

    Generators and builders write such a record beside their shards so that a re-run into
    the same folder resumes the same job instead of mixing two datasets.
    """
    record_path = Path(record_path)
    if record_path.is_file():
        try:
            previous = json.loads(record_path.read_text())
        except (OSError, ValueError) as exc:
            raise AmodalkitError(f"unreadable run record ({exc})", record_path) from exc
        if previous == record:
            return
        keys = sorted(k for k in set(previous) | set(record) if previous.get(k) != record.get(k))
        raise AmodalkitError(f"{conflict} (settings that differ: {', '.join(keys)})", record_path.parent)
    write_json(record_path, record)
