"""The execution layer: local processes and a Dask cluster write the same bytes as one process."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run

from amodalkit.execution import SCHEDULER_ENV, scheduler_address
from amodalkit.io.shard_read import ShardReader

distributed = pytest.importorskip("distributed")

GEN = ["--preset", "savos2022", "--train", "0", "--val", "0", "--test", "6", "--videos-per-shard", "2",
       "--seed", "3", "--quiet"]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.h5"))}


def _attrs(obj: h5py.HLObject) -> bytes:
    return repr(sorted((k, str(v)) for k, v in obj.attrs.items())).encode()


def _member(name: str, obj: h5py.HLObject) -> bytes:
    data = obj[()] if isinstance(obj, h5py.Dataset) else np.zeros(0)
    shape = f"{data.dtype}{data.shape}".encode()
    values = repr(data.tolist()).encode() if data.dtype == object else np.ascontiguousarray(data).tobytes()
    return name.encode() + _attrs(obj) + shape + values


def _content(folder: Path) -> dict[str, str]:
    """sha256 of every dataset (dtype, shape, bytes) and attribute of each shard, in name order.

    Shards written by Dask workers hold the same content but not always the same file bytes:
    HDF5 placed their object headers at other addresses in some runs (an open determinism
    question, see the notes); local --jobs runs are byte-identical.
    """
    out = {}
    for path in sorted(folder.glob("*.h5")):
        parts: list[bytes] = []
        with h5py.File(path) as f:
            parts.append(_attrs(f))
            f.visititems(lambda name, obj, parts=parts: parts.append(_member(name, obj)))
        out[path.name] = hashlib.sha256(b"".join(parts)).hexdigest()
    return out


@pytest.fixture(scope="module")
def cluster() -> str:
    """A LocalCluster of two single-threaded worker processes; its scheduler address."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as c:
        yield c.scheduler_address


def _flows(folder: Path) -> list[np.ndarray]:
    out = []
    for path in sorted(folder.glob("*.h5")):
        with ShardReader(path) as reader:
            for i in range(len(reader)):
                video = reader.read_video(i, fields=("flow", "flow_backward"))
                assert video.flow_backend == "dis"
                out += [video.flow.astype(np.float32), video.flow_backward.astype(np.float32)]
    return out


def test_generator_and_flow_on_dask_match_one_process(cluster: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    one, many, jobs = tmp_path / "one", tmp_path / "many", tmp_path / "jobs"
    assert run(capsys, "gen-chewing-gum", str(one), *GEN)[0] == 0
    code, _, err = run(capsys, "gen-chewing-gum", str(many), *GEN, "--scheduler", cluster)
    assert code == 0, err
    assert run(capsys, "gen-chewing-gum", str(jobs), *GEN, "--jobs", "2")[0] == 0
    assert _content(one) == _content(many) and len(_content(one)) == 3
    assert _digests(one) == _digests(jobs)
    assert run(capsys, "flow", str(one / "test-*.h5"), "--backend", "dis", "--quiet")[0] == 0
    code, out, err = run(capsys, "flow", str(many / "test-*.h5"), "--backend", "dis", "--scheduler", cluster,
                         "--quiet")
    assert code == 0 and "3 shards" in out, err
    assert run(capsys, "flow", str(jobs / "test-*.h5"), "--backend", "dis", "--jobs", "2", "--quiet")[0] == 0
    for a, b, c in zip(_flows(one), _flows(many), _flows(jobs), strict=True):
        assert np.abs(a - b).mean() < 0.05 and np.abs(a - c).mean() < 0.05


def test_scheduler_from_the_environment_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://127.0.0.1:1")
    assert scheduler_address(None) == "tcp://127.0.0.1:1" and scheduler_address("tcp://h:2") == "tcp://h:2"
    code, _, err = run(capsys, "gen-chewing-gum", str(tmp_path / "x"), *GEN)
    assert_one_line_error(code, err, "cannot reach the Dask scheduler", "tcp://127.0.0.1:1")
    monkeypatch.delenv(SCHEDULER_ENV)
    assert scheduler_address(None) is None
