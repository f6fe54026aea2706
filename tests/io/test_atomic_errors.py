"""Errors while writing an output name the output, never the temporary file beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import TMP_MARK, atomic_path, write_json


def test_json_output_error_names_the_target(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    target.mkdir()
    with pytest.raises(AmodalkitError) as err:
        write_json(target, {"a": 1})
    assert str(err.value).startswith(f"{target}: cannot write the output")
    assert TMP_MARK not in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_errors_about_other_files_pass_through(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"x")
        (tmp_path / "missing-input").read_bytes()
    assert not list(tmp_path.iterdir())
