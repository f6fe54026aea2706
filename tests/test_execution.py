"""The execution layer: local processes and a Dask cluster write the same bytes as one process."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run
from shard_digests import file_digests, shard_files

from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import evaluate_method
from amodalkit.evaluation.protocols import get_protocol
from amodalkit.execution import SCHEDULER_ENV, run_tasks, scheduler_address
from amodalkit.io.shard_read import ShardReader
from amodalkit.models.registry import build_method

distributed = pytest.importorskip("distributed")

GEN = ["--preset", "savos2022", "--train", "0", "--val", "0", "--test", "6", "--videos-per-shard", "2",
       "--seed", "3", "--quiet"]


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
    assert file_digests(one) == file_digests(many) and len(file_digests(one)) == 3
    assert file_digests(one) == file_digests(jobs)
    assert run(capsys, "flow", str(one / "test-*.h5"), "--backend", "dis", "--quiet")[0] == 0
    code, out, err = run(capsys, "flow", str(many / "test-*.h5"), "--backend", "dis", "--scheduler", cluster,
                         "--quiet")
    assert code == 0 and "3 shards" in out, err
    assert run(capsys, "flow", str(jobs / "test-*.h5"), "--backend", "dis", "--jobs", "2", "--quiet")[0] == 0
    assert file_digests(one) == file_digests(many) == file_digests(jobs)
    assert len(_flows(one)) == 12


def test_scheduler_from_the_environment_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(SCHEDULER_ENV, "tcp://127.0.0.1:1")
    assert scheduler_address(None) == "tcp://127.0.0.1:1" and scheduler_address("tcp://h:2") == "tcp://h:2"
    code, _, err = run(capsys, "gen-chewing-gum", str(tmp_path / "x"), *GEN)
    assert_one_line_error(code, err, "cannot reach the Dask scheduler", "tcp://127.0.0.1:1")
    monkeypatch.delenv(SCHEDULER_ENV)
    assert scheduler_address(None) is None


METRICS = ("frame_miou_full", "frame_miou_occluded", "object_miou_full", "object_miou_occluded", "n_videos",
           "n_frames", "n_object_frames", "n_occluded_object_frames")


def _metrics(result: dict) -> dict:
    return {k: result[k] for k in METRICS}


def test_evaluate_map_reduce_gives_the_one_process_numbers(cluster: str, cg_savos: Path) -> None:
    shards = [cg_savos / "train-00000.h5", cg_savos / "val-00000.h5", cg_savos / "test-00000.h5",
              cg_savos / "test-00001.h5"]
    for name, options in (("convex", {}), ("temporal", {"k": 3})):
        one = evaluate_method(build_method(name, **options), shards, quiet=True)
        local = evaluate_method(build_method(name, **options), shards, quiet=True, jobs=2)
        dask = evaluate_method(build_method(name, **options), shards, quiet=True, scheduler=cluster)
        assert _metrics(one) == _metrics(local) == _metrics(dask)  # exactly, not approximately
        assert one["n_videos"] == 11 and one["flow"] == local["flow"] == dask["flow"]
    with pytest.raises(AmodalkitError, match="--jobs"):
        evaluate_method(build_method("convex"), shards, quiet=True, jobs=0)


def test_gpu_tasks_are_refused_on_a_cluster_without_gpu_workers(cluster: str) -> None:
    with pytest.raises(AmodalkitError, match="GPU=1"):
        run_tasks(str, [1, 2], scheduler=cluster, quiet=True, resources={"GPU": 1})
    assert run_tasks(str, [1, 2], scheduler=cluster, quiet=True) == ["1", "2"]


def test_evaluate_reads_shards_at_fsspec_urls(cg_savos: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    for path in sorted(cg_savos.glob("test-*.h5")):
        memory.pipe(f"/cg/{path.name}", path.read_bytes())
    memory.pipe("/cg/.test-00009.tmp-1.h5", b"half written")
    try:
        local, remote = tmp_path / "local.json", tmp_path / "remote.json"
        code, _, err = run(capsys, "evaluate", "--model", "convex", "--data", str(cg_savos / "test-*.h5"),
                           "--json", str(local), "--quiet")
        assert code == 0, err
        code, _, err = run(capsys, "evaluate", "--model", "convex", "--data", "memory://cg/test-*.h5",
                             "--json", str(remote), "--quiet")
        assert code == 0, err
        a, b = json.loads(local.read_text()), json.loads(remote.read_text())
        assert _metrics(a) == _metrics(b) and b["shards"] == ["memory:///cg/test-00000.h5",
                                                              "memory:///cg/test-00001.h5"]
        code, out, _ = run(capsys, "info", "memory://cg/test-00000.h5")
        assert code == 0 and "memory:///cg/test-00000.h5" in out and "videos / frames       3 /" in out
        code, _, err = run(capsys, "flow", "memory://cg/test-00000.h5", "--backend", "dis")
        assert_one_line_error(code, err, "reads local shards only", "memory://cg/test-00000.h5")
        code, _, err = run(capsys, "evaluate", "--model", "convex", "--data", "memory://cg/nothing-*.h5")
        assert_one_line_error(code, err, "no shard matches this URL", "memory://cg/nothing-*.h5")
        code, _, err = run(capsys, "evaluate", "--model", "convex", "--data", "memory://cg",
                           "--json", "memory://out/result.json")
        assert_one_line_error(code, err, "--json file must be a local path")
        memory.pipe("/bad/test-00000.h5", b"not hdf5")
        code, _, err = run(capsys, "evaluate", "--model", "convex", "--data", "memory://bad/test-00000.h5")
        assert_one_line_error(code, err, "memory:///bad/test-00000.h5", "not a readable")
    finally:
        memory.rm("/cg", recursive=True)
        if memory.exists("/bad"):
            memory.rm("/bad", recursive=True)


def _kill_a_busy_worker(address: str, out: Path, total: int, killed: list[int]) -> None:
    """Kill (SIGKILL) the first worker seen running a task while shards are still missing."""
    with distributed.Client(address, timeout=10) as client:
        for _ in range(2000):
            busy = [w for w, keys in client.processing().items() if keys]
            if busy and len(shard_files(out)) < total:
                pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
                os.kill(pid, signal.SIGKILL)
                killed.append(len(shard_files(out)))
                return
            time.sleep(0.01)


def test_a_killed_worker_s_shards_are_recomputed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gen = ["--preset", "savos2022", "--train", "0", "--val", "0", "--test", "48", "--videos-per-shard", "4",
           "--seed", "5", "--quiet"]
    one, many = tmp_path / "one", tmp_path / "many"
    assert run(capsys, "gen-chewing-gum", str(one), *gen)[0] == 0
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as cluster:
        address = cluster.scheduler_address
        killed: list[int] = []
        killer = threading.Thread(target=_kill_a_busy_worker, args=(address, many, 12, killed))
        killer.start()
        code, _, err = run(capsys, "gen-chewing-gum", str(many), *gen, "--scheduler", address)
        killer.join()
    assert code == 0, err
    assert killed and killed[0] < 12  # the worker died with shards still to write
    assert file_digests(many) == file_digests(one) and len(file_digests(one)) == 12


def test_evaluate_on_one_worker_per_gpu_gives_the_one_process_numbers(
        cg_savos: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-GPU path, run on two CPU 'devices': same numbers in shard order, the method back home."""
    import torch

    from amodalkit.evaluation import evaluate as evaluate_module
    from amodalkit.models.savos.config import SavosConfig
    from amodalkit.models.savos.method import SavosMethod
    from amodalkit.models.savos.net import SavosNet

    torch.manual_seed(0)
    method = SavosMethod(model=SavosNet(SavosConfig.cpu()))
    shards = sorted(cg_savos.glob("test-*.h5"))
    one = evaluate_method(method, shards, quiet=True)
    method.device = torch.device("cuda")  # as a CUDA method would report; nothing runs on it here
    monkeypatch.setattr(evaluate_module, "worker_devices", lambda device, jobs: ["cpu", "cpu:0"][:jobs])
    moved: list[str] = []
    monkeypatch.setattr(SavosMethod, "to_device", lambda self, device: moved.append(str(device)))
    assert evaluate_module.gpu_workers(method, 2) == ["cpu", "cpu:0"]
    parts = evaluate_module.score_on_devices(method, get_protocol("official"), None, [str(p) for p in shards],
                                             ["cpu", "cpu:0"], quiet=True)
    assert [p["shard"] for p in parts] == [str(p) for p in shards]
    acc = parts[0]["accumulator"].merge(parts[1]["accumulator"])
    assert _metrics({**acc.result()}) == _metrics(one)
    assert moved == ["cpu", "cuda"]  # sent out on the CPU, back on its device afterwards
