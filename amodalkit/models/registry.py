"""One registry of amodal models: a :class:`ModelSpec` per name, registered where the model is defined.

Every model module ends with ``register_model(ModelSpec(...))`` (timm's ``register_model``,
torchvision's ``get_model`` / ``list_models``). A spec holds everything the CLI, the training
engine, the evaluator, the paper tables and the zoo need: how to build the inference method,
and for trained models the config class, the network, the training step, what data the
engine feeds it, whether it reads amodal labels, and how its checkpoint is saved and loaded.
Adding a model is one module plus one registration, and its module path in
:data:`MODEL_MODULES` (the list the registry imports on first use, so that naming a rule-based
method does not need torch until a trained model is asked for).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amodalkit.errors import AmodalkitError
from amodalkit.models.base import AmodalMethod

if TYPE_CHECKING:
    from torch import nn

    from amodalkit.io.checkpoint import Checkpoint
    from amodalkit.models.base import Batch, StepContext

#: the modules that register models, in the order the paper's tables list them
MODEL_MODULES = (
    "amodalkit.models.baselines.convex",
    "amodalkit.models.baselines.temporal",
    "amodalkit.models.baselines.deocclusion",
    "amodalkit.models.savos.method",
    "amodalkit.models.baselines.unet",
)

#: what the training engine feeds a trained model: object clips or per-frame object crops
DATA_KINDS = ("clips", "frame_crops")


@dataclass(frozen=True)
class TableRow:
    """One row a model contributes to the paper's Table 1: name, label, method options, paper numbers."""

    name: str
    label: str
    options: dict = field(default_factory=dict)
    #: the paper's (full, occluded) mean IoU on Chewing Gum, when it reports this row
    paper: tuple[float, float] | None = None


@dataclass(frozen=True)
class ModelSpec:
    """Everything known about one model name (trained models fill the second group of fields)."""

    name: str
    summary: str
    #: the inference method: built from options (rule-based) or from a trained network
    method: Callable[..., AmodalMethod]
    table: tuple[TableRow, ...] = ()
    #: the config dataclass saved with the weights (None for rule-based methods)
    config: type | None = None
    #: CLI-style options (``amodalkit train`` keywords) -> config
    build_config: Callable[..., Any] | None = None
    #: config -> network (weights from the global torch seed)
    net: Callable[[Any], nn.Module] | None = None
    #: (network, batch, config, context) -> losses, ``loss`` the one to backpropagate
    step: Callable[[nn.Module, Batch, Any, StepContext], Batch] | None = None
    #: (path, network, extra metadata) -> written checkpoint
    save: Callable[[Path, nn.Module, dict], object] | None = None
    #: (checkpoint read, its path, device) -> method
    load: Callable[[Checkpoint, str | Path, str], AmodalMethod] | None = None
    data: str = ""
    #: training reads the amodal ground truth (the supervised oracle only)
    reads_amodal: bool = False
    #: losses of ``step`` logged as ``train_KEY`` / ``val_KEY`` (``loss`` first)
    loss_keys: tuple[str, ...] = ("loss",)
    val_keys: tuple[str, ...] = ("loss",)

    @property
    def trained(self) -> bool:
        """Whether the model has weights (and so a training step and a checkpoint)."""
        return self.config is not None

    def __post_init__(self) -> None:
        if self.trained:
            missing = [k for k in ("build_config", "net", "step", "save", "load") if not getattr(self, k)]
            if missing or self.data not in DATA_KINDS:
                need = missing or f"data in {DATA_KINDS}"
                raise ValueError(f"trained model {self.name!r} needs {need}")


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Register a model under its name (once: a second spec for a name is a programming error)."""
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def _load_all() -> None:
    for module in MODEL_MODULES:
        importlib.import_module(module)


def _table_position(spec: ModelSpec) -> int:
    module = spec.method.__module__
    return MODEL_MODULES.index(module) if module in MODEL_MODULES else len(MODEL_MODULES)


def list_models(trained: bool | None = None) -> list[str]:
    """Registered model names in table order; ``trained`` True/False keeps only trained/rule-based ones."""
    _load_all()
    specs = sorted(_REGISTRY.values(), key=_table_position)
    return [s.name for s in specs if trained is None or s.trained == trained]


def get_model_spec(name: str) -> ModelSpec:
    """The spec of a registered model; an unknown name is an error listing the known ones."""
    _load_all()
    if name not in _REGISTRY:
        raise AmodalkitError(f"unknown model {name!r}; choose from {', '.join(list_models())}")
    return _REGISTRY[name]


def build_method(name: str, **options: object) -> AmodalMethod:
    """The method registered under `name`, built with its options (e.g. temporal's ``k``, a network)."""
    return get_model_spec(name).method(**options)


def method_from_checkpoint(path: str | Path, device: str = "cpu") -> AmodalMethod:
    """Rebuild the trained method a checkpoint holds (its ``model`` field names the spec)."""
    from amodalkit.io.checkpoint import read_checkpoint

    ck = read_checkpoint(path)
    _load_all()
    spec = _REGISTRY.get(ck.model)
    if spec is None or not spec.trained:
        raise AmodalkitError(f"checkpoint holds a {ck.model!r} model, which no registered model loads", path)
    return spec.load(ck, path, device)
