"""Digests of a folder's shards, to check that every executor writes the same bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path


def shard_files(folder: Path) -> list[Path]:
    """The finished shards of `folder` in name order (temporary dotfiles of killed writers left out)."""
    return sorted(p for p in folder.glob("*.h5") if not p.name.startswith("."))


def file_digests(folder: Path) -> dict[str, str]:
    """sha256 of each shard file's bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in shard_files(folder)}
