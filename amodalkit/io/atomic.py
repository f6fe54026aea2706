"""Atomic file writes: write to a temporary name beside the target, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from amodalkit.errors import AmodalkitError

try:
    import fcntl
except ImportError:
    fcntl = None

TMP_MARK = ".tmp-"
TEMP_RE = re.compile(r"^\..*\.tmp-(\d+)(\.[^.]*)?$")
LOCK_NAME = ".amodalkit.lock"


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
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if _about(exc, tmp):
            reason = str(exc.strerror or exc).replace(str(tmp), str(path)).replace(tmp.name, path.name)
            raise AmodalkitError(f"cannot write the output ({reason})", path) from exc
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _about(exc: OSError, tmp: Path) -> bool:
    """True when an OSError concerns the temporary file (so the message should name the target)."""
    names = {str(exc.filename), str(exc.filename2)}
    return str(tmp) in names or tmp.name in str(exc)


def write_json(path: str | Path, data: object) -> None:
    """Write `data` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def temp_owner(name: str) -> int | None:
    """Pid in a temporary name made by :func:`temp_path_for` (``.NAME.tmp-PID.ext``), else None."""
    m = TEMP_RE.match(name)
    return int(m.group(1)) if m else None


def is_hidden_or_temp(path: str | Path) -> bool:
    """True for dotfiles, which include every temporary file and lock of a run; expansion skips them."""
    return Path(path).name.startswith(".")


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def read_json(path: str | Path, what: str, missing: str | None = None) -> object:
    """Parse a JSON file; a missing or unreadable one is an AmodalkitError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise AmodalkitError(missing or f"{what} does not exist", path) from exc
    except (OSError, ValueError) as exc:
        raise AmodalkitError(f"not a readable {what} ({exc})", path) from exc


def remove_stale_temps(folder: str | Path) -> int:
    """Delete temporary files left in `folder` by dead runs (or by this process); return how many.

    A temporary file whose owner pid is alive belongs to a concurrent run and is kept.
    """
    folder = Path(folder)
    n = 0
    if folder.is_dir():
        for p in folder.glob(f".*{TMP_MARK}*"):
            pid = temp_owner(p.name)
            if pid is None or (pid != os.getpid() and pid_alive(pid)):
                continue
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


_HELD: dict[str, int] = {}


def _lock_owner(fd: int) -> int | None:
    """Pid written in an open lock file, None when empty or not a pid."""
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _busy(lock: Path, owner: int | None) -> AmodalkitError:
    who = f"pid {owner}" if owner is not None else "another process"
    return AmodalkitError(f"another amodalkit run ({who}) is writing into this folder; wait for it to end "
                          f"(or delete {lock.name} if that run is gone)", lock.parent)


def _acquire(lock: Path) -> int:
    """Open and lock `lock` for this process; raise when a live run holds it."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise AmodalkitError(f"cannot create the lock file ({exc.strerror})", lock.parent) from exc
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise _busy(lock, _lock_owner(fd)) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            owner = _lock_owner(fd)
            if owner is not None and owner != os.getpid() and pid_alive(owner):
                raise _busy(lock, owner)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise


@contextlib.contextmanager
def output_lock(folder: str | Path, name: str = LOCK_NAME) -> Iterator[Path]:
    """Hold `folder` (created if needed) for this run: refuse while another live run holds it.

    The lock is the file ``folder/name`` holding the owner's pid (and an advisory ``flock``
    where available); one left by a dead process is taken over. Re-entrant within a process.
    A folder it had to create is removed again when the run leaves it empty.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise AmodalkitError("output path exists and is not a folder", folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AmodalkitError(f"cannot create output folder ({exc.strerror})", folder) from exc
    lock = folder / name
    key = os.path.realpath(lock)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield lock
        finally:
            _HELD[key] -= 1
        return
    try:
        fd = _acquire(lock)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    _HELD[key] = 1
    try:
        yield lock
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
