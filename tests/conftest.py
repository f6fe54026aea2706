"""Shared fixtures: tiny Chewing Gum sets written once per test session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from amodalkit.datasets.chewing_gum import generate_dataset, make_config


@pytest.fixture(scope="session")
def cg_savos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A savos2022-preset set: 4 train, 2 val, 6 test videos, 3 videos per shard."""
    out = tmp_path_factory.mktemp("cg_savos")
    generate_dataset(out, make_config("savos2022"), {"train": 4, "val": 2, "test": 6}, seed=0,
                     videos_per_shard=3, quiet=True)
    return out


@pytest.fixture(scope="session")
def cg_default(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default-preset set: 3 test videos in one shard."""
    out = tmp_path_factory.mktemp("cg_default")
    generate_dataset(out, make_config("default"), {"train": 0, "val": 0, "test": 3}, seed=1, quiet=True)
    return out


@pytest.fixture(scope="session")
def cluster() -> Iterator[str]:
    """A LocalCluster of two single-threaded worker processes; its scheduler address."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as c:
        yield c.scheduler_address
