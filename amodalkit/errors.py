"""The one exception type for problems a user can fix (bad path, bad input, bad option)."""

from __future__ import annotations

from pathlib import Path


class AmodalkitError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits 2."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
