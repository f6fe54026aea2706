"""Path safety shared by every command: paths read from files stay inside their root, outputs
never overwrite inputs or each other, and every output location is checked before work starts.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath

from amodalkit.errors import AmodalkitError

PathLike = str | Path


def check_relative(relative: str, source: PathLike | None, what: str = "path") -> PurePosixPath:
    """`relative` as a relative path with no ``..`` part; refuse absolute, empty or NUL paths."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise AmodalkitError(f"{what} {relative!r:.80} is not a usable relative path", source)
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or relative.startswith(("/", "\\")):
        raise AmodalkitError(f"{what} {relative!r:.80} is an absolute path; it must be relative", source)
    if ".." in posix.parts or ".." in windows.parts:
        raise AmodalkitError(f"{what} {relative!r:.80} climbs out of its folder with '..'", source)
    return posix


def resolve_inside(root: PathLike, relative: str, source: PathLike | None, what: str = "path") -> Path:
    """``root / relative``, refused unless inside `root` (no absolute path, ``..`` or symlink escape)."""
    rel = check_relative(relative, source, what)
    target = Path(root) / rel
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(target))
    if real != real_root and not real.is_relative_to(real_root):
        raise AmodalkitError(f"{what} {relative!r:.80} leads outside {root} through a symbolic link "
                             f"(to {real})", source)
    return target


def safe_name(name: str, what: str, source: PathLike | None = None) -> str:
    """`name` when it is one plain file-name component: no separator, no ``..``, not hidden."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise AmodalkitError(f"{what} {name!r:.80} is not a usable file name", source)
    if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise AmodalkitError(f"{what} {name!r:.80} must be a plain file name (no '/', '\\', '..' or "
                             "leading '.')", source)
    return name


def expand_inputs(inputs: Iterable[PathLike | None]) -> list[Path]:
    """Existing input files named by paths, globs or folders (a folder stands for the files in it)."""
    found: list[Path] = []
    for item in inputs:
        if item is None:
            continue
        text = str(item)
        candidates = [Path(p) for p in glob.glob(text)] if glob.has_magic(text) else [Path(text)]
        for p in candidates:
            if p.is_dir():
                found.extend(c for c in p.iterdir() if c.is_file())
            elif p.exists():
                found.append(p)
    return found


def _keys(path: Path) -> set[object]:
    """What identifies a file: its resolved path and, when it exists, (device, inode)."""
    keys: set[object] = {os.path.realpath(path)}
    try:
        st = os.stat(path)
    except OSError:
        return keys
    keys.add((st.st_dev, st.st_ino))
    return keys


def refuse_overwrite(outputs: Mapping[str, PathLike | None] | Iterable[tuple[str, PathLike | None]],
                     inputs: Iterable[PathLike | None], output_folders: bool = False) -> None:
    """Refuse outputs that are an input (same file, also through links, globs and folders) or each other.

    `outputs` maps option names to paths (or is a list of such pairs). With `output_folders`
    the outputs are folders, which must neither be nor hold an input file.
    """
    pairs = outputs.items() if isinstance(outputs, Mapping) else outputs
    outs = [(label, Path(p)) for label, p in pairs if p is not None]
    seen: dict[object, str] = {}
    for label, out in outs:
        keys = _keys(out)
        for key in keys:
            if key in seen:
                raise AmodalkitError(f"{label} and {seen[key]} are the same file; give them different "
                                     "paths", out)
        seen.update(dict.fromkeys(keys, label))
    files = expand_inputs(inputs)
    by_key = {key: inp for inp in files for key in _keys(inp)}
    for label, out in outs:
        for key in _keys(out):
            if key in by_key:
                raise AmodalkitError(f"{label} would overwrite an input file ({by_key[key]}); choose "
                                     f"another {label}", out)
        if output_folders:
            real_out = Path(os.path.realpath(out))
            for inp in files:
                if Path(os.path.realpath(inp)).is_relative_to(real_out):
                    raise AmodalkitError(f"{label} holds an input file ({inp}); choose another {label}", out)


#: a URL given as an output, also after ``Path`` collapsed its ``//`` (``s3://b/x`` -> ``s3:/b/x``)
OUTPUT_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:/")


def check_writable(path: PathLike, what: str = "output", folder: bool = False) -> None:
    """Fail now, before any work, when the output file (or `folder`) at `path` could not be written."""
    if OUTPUT_URL.match(str(path)):
        raise AmodalkitError(f"{what} must be a local path: inputs may be URLs, outputs are written "
                             "locally (copy them to the store afterwards)", str(path))
    p = Path(path)
    if folder:
        if p.exists() and not p.is_dir():
            raise AmodalkitError(f"{what} exists and is not a folder", p)
        parent = p
    else:
        if p.is_dir():
            raise AmodalkitError(f"{what} is a folder, expected a file name", p)
        parent = p.parent
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise AmodalkitError(f"cannot create the {what} here: {parent} is not a folder", p)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise AmodalkitError(f"cannot write the {what}: folder {parent} is not writable", p)
