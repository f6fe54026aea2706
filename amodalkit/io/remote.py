"""Shards at fsspec URLs (``s3://``, ``gs://``, ``https://``, ``memory://``): naming, globbing, opening.

A shard location is a local :class:`~pathlib.Path` or a :class:`RemoteShard`. h5py reads a
remote shard through the seekable file object fsspec gives (``h5py.File(fileobj)``), so only
the byte ranges of the chunks read are fetched, never the whole file first. Protocols other
than ``memory://``, ``file://`` and ``http(s)://`` need fsspec's own extras (``s3fs``,
``gcsfs``). Outputs are always local: a URL given as an output is refused where it is checked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from amodalkit.errors import AmodalkitError

URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(location: object) -> bool:
    """True for a ``scheme://`` string (or a :class:`RemoteShard`), false for a local path."""
    if isinstance(location, RemoteShard):
        return True
    return isinstance(location, str) and bool(URL_SCHEME.match(location))


def _filesystem(url: str) -> tuple[object, str]:
    """fsspec's filesystem and in-filesystem path of `url`, or a readable error naming the missing package."""
    try:
        import fsspec
    except ImportError as exc:
        raise AmodalkitError("reading shards from URLs needs fsspec: pip install fsspec", url) from exc
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise AmodalkitError(f"cannot open this URL's storage ({exc}); install its fsspec package "
                             "(s3fs for s3://, gcsfs for gs://)", url) from exc


@dataclass(frozen=True, order=True)
class RemoteShard:
    """A shard at an fsspec URL: the few ``Path`` facts the readers ask (name, suffix, exists)."""

    url: str

    def __str__(self) -> str:
        return self.url

    def __fspath__(self) -> str:
        raise TypeError(f"{self.url} is a URL, not a local path")

    @property
    def name(self) -> str:
        """The last component of the URL."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        """The file extension, with its dot (``.h5``)."""
        return Path(self.name).suffix

    def exists(self) -> bool:
        """True when the store holds a file here."""
        fs, path = _filesystem(self.url)
        try:
            return bool(fs.isfile(path))
        except OSError:
            return False

    def size(self) -> int:
        """The file's size in bytes, as the store reports it."""
        fs, path = _filesystem(self.url)
        return int(fs.size(path))

    def open(self) -> IO[bytes]:
        """A seekable binary file object reading the shard by byte ranges."""
        fs, path = _filesystem(self.url)
        try:
            return fs.open(path, "rb")
        except (OSError, ValueError) as exc:
            raise AmodalkitError(f"cannot open the shard ({exc})", self.url) from exc


ShardLocation = Path | RemoteShard


def as_shard_location(location: str | Path | RemoteShard) -> ShardLocation:
    """`location` as a :class:`RemoteShard` when it is a URL, else as a local ``Path``."""
    if isinstance(location, (Path, RemoteShard)):
        return location
    return RemoteShard(location) if is_url(location) else Path(location)


def expand_url(pattern: str) -> list[RemoteShard]:
    """Shards of a URL: a glob, a folder (its ``*.h5``) or one file; sorted, no dotfiles; none is an error."""
    fs, path = _filesystem(pattern)
    try:
        if any(c in path for c in "*?["):
            found = fs.glob(path)
        elif fs.isdir(path):
            found = fs.glob(path.rstrip("/") + "/*.h5")
        elif fs.isfile(path):
            found = [path]
        else:
            raise AmodalkitError("no such file at this URL", pattern)
    except OSError as exc:
        raise AmodalkitError(f"cannot list this URL ({exc})", pattern) from exc
    visible = [p for p in found if not p.rsplit("/", 1)[-1].startswith(".")]
    shards = sorted(RemoteShard(fs.unstrip_protocol(p)) for p in visible)
    if not shards:
        raise AmodalkitError("no shard matches this URL", pattern)
    return shards
