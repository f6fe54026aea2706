"""benchmark --flow: the data copied and filled with one backend, the original untouched."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

from amodalkit.io.shard_read import ShardReader
from amodalkit.tables.commands import benchmark_command, row_commands
from amodalkit.tables.config import benchmark_config
from amodalkit.tables.flow_copy import prepare_flow_copy
from amodalkit.tables.plan import plan_rows


def test_flow_copy_fills_every_split_and_leaves_the_data_alone(cg_savos: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(cg_savos, data)
    cfg = benchmark_config(data, tmp_path / "out", "convex,savos", flow="rigid:zero", protocol="strict",
                           quiet=True)
    assert cfg.data_dir() == tmp_path / "out" / "data-rigid-zero"
    copy = prepare_flow_copy(cfg)
    names = sorted(p.name for p in data.glob("*-*.h5"))
    assert sorted(p.name for p in copy.glob("*-*.h5")) == names
    for name in names:
        with ShardReader(copy / name) as r, ShardReader(data / name) as original:
            assert {r.meta(i)["flow_backend"] for i in range(len(r))} == {"rigid:zero"}
            assert {original.meta(i)["flow_backend"] for i in range(len(original))} == {"exact"}
    stamp = (copy / names[0]).stat().st_mtime_ns
    prepare_flow_copy(cfg)  # a rerun copies and fills nothing again
    assert (copy / names[0]).stat().st_mtime_ns == stamp
    command = benchmark_command(cfg)
    assert "--protocol strict" in command and "--flow rigid:zero" in command
    assert "--jobs" not in command and "--flow-checkpoint" not in command
    parallel = benchmark_command(replace(cfg, jobs=2, flow="flownet2", flow_checkpoint="w/FlowNet2.pth.tar"))
    assert "--jobs 2" in parallel and "--flow flownet2 --flow-checkpoint w/FlowNet2.pth.tar" in parallel
    savos = next(r for r in plan_rows(cfg) if r.method == "savos")
    commands = row_commands(cfg, savos, 3)
    assert str(copy / "train-*.h5") in commands["train"]
    assert "--protocol strict" in commands["evaluate"] and str(copy / "test-*.h5") in commands["evaluate"]
