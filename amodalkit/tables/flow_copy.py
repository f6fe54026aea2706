"""``benchmark --flow BACKEND``: a copy of the data with every shard's flow estimated by one backend."""

from __future__ import annotations

import shutil
from pathlib import Path

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import atomic_path
from amodalkit.preprocess.flow.backends import get_flow_backend
from amodalkit.preprocess.flow.stage import fill_shards_flow
from amodalkit.tables.config import SPLITS, BenchmarkConfig


def prepare_flow_copy(cfg: BenchmarkConfig) -> Path:
    """Copy the train/val/test shards of ``cfg.data`` to ``cfg.data_dir()`` and fill them with ``cfg.flow``.

    Every method of the table then trains and is scored on the same estimated flow (the
    paper's protocol: no generator flow anywhere). Each shard is copied atomically and the
    flow stage skips shards that already hold this backend's flow, so a rerun resumes.
    """
    src, dst = Path(cfg.data), cfg.data_dir()
    if not src.is_dir():
        raise AmodalkitError("no such data folder (make one with `amodalkit gen-chewing-gum DIR`)", src)
    backend = get_flow_backend(cfg.flow, cfg.flow_checkpoint or None, cfg.device, "--flow-checkpoint")
    shards = sorted(p for split in SPLITS for p in src.glob(f"{split}-*.h5"))
    if not shards:
        raise AmodalkitError("no train-/val-/test-*.h5 shards to fill with flow", src)
    for p in [*shards, *src.glob("*.json")]:
        target = dst / p.name
        if not target.exists():
            with atomic_path(target) as tmp:
                shutil.copyfile(p, tmp)
    fill_shards_flow([dst / p.name for p in shards], backend, quiet=cfg.quiet)
    return dst
