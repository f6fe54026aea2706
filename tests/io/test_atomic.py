"""Leftovers and concurrent runs: stale temporary files and the output-folder lock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import (
    LOCK_NAME,
    output_lock,
    pid_alive,
    remove_stale_temps,
    temp_owner,
    temp_path_for,
)
from amodalkit.io.shards import expand_shard_paths


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(proc.stdout)
    assert not pid_alive(pid)
    return pid


@pytest.fixture()
def holder(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen]]:
    """Another live process holding the output lock of tmp_path / 'out'."""
    out = tmp_path / "out"
    code = textwrap.dedent(f"""
        import sys
        from amodalkit.io.atomic import output_lock
        with output_lock({str(out)!r}):
            print("ready", flush=True)
            sys.stdin.read()
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield out, proc
    proc.stdin.close()
    proc.wait(timeout=30)


def test_temp_names_carry_their_owner(tmp_path: Path) -> None:
    tmp = temp_path_for(tmp_path / "test-00000.h5")
    assert tmp.name == f".test-00000.tmp-{os.getpid()}.h5"
    assert temp_owner(tmp.name) == os.getpid()
    assert temp_owner(".a.b.tmp-12.json") == 12
    assert temp_owner(".x.tmp-7") == 7
    assert temp_owner("test-00000.h5") is None
    assert temp_owner(".hidden") is None


def test_remove_stale_temps_spares_live_runs(tmp_path: Path) -> None:
    dead = dead_pid()
    stale = tmp_path / f".test-00000.tmp-{dead}.h5"
    mine = temp_path_for(tmp_path / "test-00001.h5")
    live = tmp_path / f".test-00002.tmp-{os.getppid()}.h5"
    other = tmp_path / ".notes"
    shard = tmp_path / "test-00003.h5"
    for p in (stale, mine, live, other, shard):
        p.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, shard.name])
    assert remove_stale_temps(tmp_path / "missing") == 0


def test_expansion_never_matches_temp_files_or_dotfiles(tmp_path: Path) -> None:
    (tmp_path / "test-00000.h5").write_bytes(b"x")
    (tmp_path / f".test-00001.tmp-{dead_pid()}.h5").write_bytes(b"half")
    (tmp_path / ".hidden.h5").write_bytes(b"x")
    want = [tmp_path / "test-00000.h5"]
    assert expand_shard_paths(tmp_path) == want
    assert expand_shard_paths(str(tmp_path / "*.h5")) == want
    with pytest.raises(AmodalkitError, match="no shard matches"):
        expand_shard_paths(str(tmp_path / ".*.h5"))
    assert expand_shard_paths([tmp_path, str(tmp_path / "*.h5"), want[0]]) == want


def test_lock_is_released_and_an_empty_new_folder_removed(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    with output_lock(out) as lock:
        assert lock == out / LOCK_NAME
        assert lock.read_text().strip() == str(os.getpid())
        with output_lock(out):
            assert lock.exists()
        assert lock.exists()
    assert not out.exists()
    with output_lock(tmp_path):
        (tmp_path / "kept.txt").write_text("x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt", "new"]


def test_lock_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(AmodalkitError, match="not a folder"):
        with output_lock(tmp_path / "f"):
            pass


def test_second_writer_is_refused_while_the_first_holds_the_folder(holder) -> None:
    out, proc = holder
    with pytest.raises(AmodalkitError, match=f"another amodalkit run \\(pid {proc.pid}\\)") as err:
        with output_lock(out):
            pass
    assert err.value.path == str(out)
    assert (out / LOCK_NAME).read_text().strip() == str(proc.pid)


def test_stale_lock_of_a_dead_run_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(f"{dead_pid()}\n")
    with output_lock(tmp_path) as lock:
        assert lock.read_text().strip() == str(os.getpid())
    assert not (tmp_path / LOCK_NAME).exists()
    (tmp_path / LOCK_NAME).write_text("garbage")
    with output_lock(tmp_path):
        pass


def test_lock_naming_a_live_pid_is_respected(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(f"{os.getppid()}\n")
    with pytest.raises(AmodalkitError, match=f"pid {os.getppid()}"):
        with output_lock(tmp_path):
            pass
