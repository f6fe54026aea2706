"""The restricted unpickler: numpy arrays and plain containers load, anything else is refused unrun."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from amodalkit.errors import AmodalkitError
from amodalkit.io.safe_pickle import load_arrays_pickle


def _payload() -> dict:
    return {"mask": np.arange(12, dtype=np.uint8).reshape(3, 4), "box": [np.int64(3), np.float64(0.25)],
            "dt": np.dtype("f4"), "ids": {1, 2}, "raw": b"\x00\x01", "name": "fish", "pair": (1, 2.5),
            "none": None, "flag": True}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_arrays_and_containers_round_trip(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(_payload(), protocol=protocol))
    data = load_arrays_pickle(path)
    assert np.array_equal(data["mask"], _payload()["mask"]) and data["mask"].dtype == np.uint8
    assert data["box"] == [3, 0.25] and isinstance(data["box"][0], np.int64)
    assert data["dt"] == np.dtype("f4") and data["ids"] == {1, 2} and data["raw"] == b"\x00\x01"
    assert data["pair"] == (1, 2.5) and data["none"] is None and data["flag"] is True


def test_numpy1_module_names_load(tmp_path: Path) -> None:
    blob = pickle.dumps({"m": np.ones((2, 2), bool), "s": np.float64(0.5)}, protocol=2)
    assert b"numpy._core.multiarray" in blob
    path = tmp_path / "np1.pkl"
    path.write_bytes(blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    data = load_arrays_pickle(path)
    assert data["m"].all() and data["m"].shape == (2, 2) and data["s"] == 0.5


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_disallowed_class_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([1, _Evil(marker)]))
    with pytest.raises(AmodalkitError, match=r"evil\.pkl.*system is not allowed"):
        load_arrays_pickle(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"x": Path("/tmp")}))
    with pytest.raises(AmodalkitError, match="Path is not allowed"):
        load_arrays_pickle(path, "SaVos pickle")


@pytest.mark.parametrize("blob", [b"\x80\x04garbage", b"", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00]"])
def test_corrupt_files_name_the_path(tmp_path: Path, blob: bytes) -> None:
    path = tmp_path / "bad.pkl"
    path.write_bytes(blob)
    with pytest.raises(AmodalkitError, match=r"bad\.pkl: not a readable test pickle"):
        load_arrays_pickle(path, "test pickle")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(AmodalkitError, match=r"nope\.pkl: not a readable pickle"):
        load_arrays_pickle(tmp_path / "nope.pkl")
