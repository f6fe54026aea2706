"""Registry of amodal methods: a plain dict from name to constructor."""

from __future__ import annotations

from collections.abc import Callable

from amodalkit.errors import AmodalkitError
from amodalkit.models.base import AmodalMethod
from amodalkit.models.baselines.convex import ConvexHull
from amodalkit.models.baselines.temporal import TemporalAggregation

METHODS: dict[str, Callable[..., AmodalMethod]] = {
    "convex": ConvexHull,
    "temporal": TemporalAggregation,
}


def build_method(name: str, **kwargs: object) -> AmodalMethod:
    """Construct the method registered under `name`."""
    if name not in METHODS:
        raise AmodalkitError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return METHODS[name](**kwargs)
