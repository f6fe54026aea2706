"""amodalkit: amodal video object segmentation datasets, preprocessing and models (SaVos)."""

from __future__ import annotations

import importlib
from types import ModuleType

from amodalkit.errors import AmodalkitError
from amodalkit.io.shard_read import ShardReader, open_shard
from amodalkit.io.shard_write import write_shard
from amodalkit.io.shards import Video

__all__ = ["AmodalkitError", "ShardReader", "Video", "__version__", "open_shard", "write_shard", "zoo"]
__version__ = "0.1.0"

#: submodules reachable as attributes without an explicit import (loaded on first use: torch is heavy)
LAZY_SUBMODULES = ("zoo",)


def __getattr__(name: str) -> ModuleType:
    """``amodalkit.zoo`` without ``import amodalkit.zoo`` (PEP 562)."""
    if name in LAZY_SUBMODULES:
        return importlib.import_module(f"amodalkit.{name}")
    raise AttributeError(f"module 'amodalkit' has no attribute {name!r}")
