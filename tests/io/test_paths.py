"""Path safety: containment of paths read from files, outputs never over inputs, outputs checked first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from amodalkit.errors import AmodalkitError
from amodalkit.io.paths import check_relative, check_writable, refuse_overwrite, resolve_inside, safe_name


@pytest.mark.parametrize("relative", ["/etc/passwd", "../x", "a/../../x", "a/..", "..\\x", "C:\\x", "\\x",
                                      "", "a\x00b"])
def test_resolve_inside_refuses_escapes(tmp_path: Path, relative: str) -> None:
    with pytest.raises(AmodalkitError) as err:
        resolve_inside(tmp_path, relative, tmp_path / "registry.json", "file")
    assert err.value.path == str(tmp_path / "registry.json")


def test_resolve_inside_accepts_paths_inside(tmp_path: Path) -> None:
    assert resolve_inside(tmp_path, "a/b.bin", None) == tmp_path / "a" / "b.bin"
    assert resolve_inside(tmp_path, "a/./b.bin", None) == tmp_path / "a" / "b.bin"
    assert str(check_relative("x/y.png", None)) == "x/y.png"


def test_resolve_inside_refuses_symlink_escape(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside)
    (root / "inner").symlink_to(root)
    with pytest.raises(AmodalkitError, match="symbolic link"):
        resolve_inside(root, "link/x.bin", "src.json")
    assert resolve_inside(root, "inner/x.bin", None) == root / "inner" / "x.bin"


def test_resolve_inside_follows_a_linked_root(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    assert resolve_inside(tmp_path / "alias", "x.bin", None) == tmp_path / "alias" / "x.bin"


@pytest.mark.parametrize("name", ["a/b", "..", ".", ".hidden", "", "a\\b", "x\x00"])
def test_safe_name_refuses_anything_but_a_plain_name(name: str) -> None:
    with pytest.raises(AmodalkitError):
        safe_name(name, "--split", "src.json")


def test_safe_name_accepts_plain_names() -> None:
    assert safe_name("savos-cpu.safetensors", "file") == "savos-cpu.safetensors"


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.h5", "b.h5"):
        (folder / name).write_bytes(b"input")
    return folder


def test_output_equal_to_an_input_is_refused(inputs: Path, tmp_path: Path) -> None:
    a = inputs / "a.h5"
    with pytest.raises(AmodalkitError, match="would overwrite an input file") as err:
        refuse_overwrite({"--json": a}, [a])
    assert err.value.path == str(a)
    (tmp_path / "hard.h5").hardlink_to(a)
    (tmp_path / "soft.h5").symlink_to(a)
    for out in (tmp_path / "hard.h5", tmp_path / "soft.h5", inputs / "." / "a.h5"):
        with pytest.raises(AmodalkitError, match="--out would overwrite"):
            refuse_overwrite({"--out": out}, [a])
    assert a.read_bytes() == b"input"


def test_inputs_named_by_globs_and_folders(inputs: Path) -> None:
    for given in (str(inputs / "*.h5"), inputs, str(inputs)):
        with pytest.raises(AmodalkitError, match="would overwrite"):
            refuse_overwrite({"--out": inputs / "b.h5"}, [given])
    refuse_overwrite({"--out": inputs / "new.h5"}, [str(inputs / "*.h5"), inputs, None])


def test_outputs_equal_to_each_other_are_refused(tmp_path: Path) -> None:
    with pytest.raises(AmodalkitError, match="--pred-out and --out are the same file"):
        refuse_overwrite({"--out": tmp_path / "x.json", "--pred-out": tmp_path / "sub" / ".." / "x.json"}, [])
    refuse_overwrite({"--out": tmp_path / "x.json", "--pred-out": None}, [])


def test_output_folders_must_not_hold_inputs(inputs: Path, tmp_path: Path) -> None:
    with pytest.raises(AmodalkitError, match="holds an input file"):
        refuse_overwrite({"--out": tmp_path}, [inputs / "a.h5"], output_folders=True)
    refuse_overwrite({"--out": tmp_path / "run"}, [inputs / "a.h5"], output_folders=True)


def test_check_writable(tmp_path: Path) -> None:
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    check_writable(tmp_path / "new" / "deeper" / "m.json")
    check_writable(tmp_path / "new" / "run", folder=True)
    with pytest.raises(AmodalkitError, match="is not a folder"):
        check_writable(afile / "m.json", "--json file")
    with pytest.raises(AmodalkitError, match="is not a folder"):
        check_writable(afile / "sub" / "m.json")
    with pytest.raises(AmodalkitError, match="is a folder"):
        check_writable(tmp_path)
    with pytest.raises(AmodalkitError, match="exists and is not a folder"):
        check_writable(afile, folder=True)
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_check_writable_read_only_folder(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(AmodalkitError, match="not writable"):
            check_writable(locked / "m.json")
    finally:
        locked.chmod(0o755)
