"""Registry of amodal methods: a plain dict from name to constructor."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from amodalkit.errors import AmodalkitError
from amodalkit.models.base import AmodalMethod
from amodalkit.models.baselines.convex import ConvexHull
from amodalkit.models.baselines.temporal import TemporalAggregation


def _savos(**kwargs: object) -> AmodalMethod:
    """SaVos, imported lazily so torch loads only for the trained methods."""
    from amodalkit.models.savos.method import SavosMethod

    return SavosMethod(**kwargs)


def _deocclusion(**kwargs: object) -> AmodalMethod:
    """Self-Deocclusion (PCNet-M style), imported lazily like SaVos."""
    from amodalkit.models.baselines.deocclusion import DeocclusionMethod

    return DeocclusionMethod(**kwargs)


def _unet(**kwargs: object) -> AmodalMethod:
    """The supervised U-Net oracle, imported lazily like SaVos."""
    from amodalkit.models.baselines.unet import UNetMethod

    return UNetMethod(**kwargs)


METHODS: dict[str, Callable[..., AmodalMethod]] = {
    "convex": ConvexHull,
    "temporal": TemporalAggregation,
    "savos": _savos,
    "deocclusion": _deocclusion,
    "unet": _unet,
}


def build_method(name: str, **kwargs: object) -> AmodalMethod:
    """Construct the method registered under `name`."""
    if name not in METHODS:
        raise AmodalkitError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name](**kwargs)


def method_from_checkpoint(path: str | Path, device: str = "cpu") -> AmodalMethod:
    """Rebuild the trained method a checkpoint holds (its ``model`` field picks the class)."""
    from amodalkit.io.checkpoint import read_checkpoint

    ck = read_checkpoint(path)
    if ck.model == "savos":
        from amodalkit.models.savos.method import method_from_savos_checkpoint

        return method_from_savos_checkpoint(ck, path, device)
    if ck.model == "deocclusion":
        from amodalkit.models.baselines.deocclusion import method_from_deocclusion_checkpoint

        return method_from_deocclusion_checkpoint(ck, path, device)
    if ck.model == "unet":
        from amodalkit.models.baselines.unet import method_from_unet_checkpoint

        return method_from_unet_checkpoint(ck, path, device)
    raise AmodalkitError(f"checkpoint holds a {ck.model!r} model, which no registered method loads", path)
