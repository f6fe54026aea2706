"""What decides a benchmark's numbers: the training budget per model and the benchmark config."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.protocols import DEFAULT_PROTOCOL
from amodalkit.models.registry import list_models
from amodalkit.models.savos.config import ABLATIONS
from amodalkit.models.savos.config import MODEL_NAME as SAVOS

SPLITS = ("train", "val", "test")


@dataclass
class TrainBudget:
    """How one trained method is trained: epochs, batch, learning rate and model config overrides.

    ``options`` are the model's ``amodalkit train`` options as keywords (its spec's
    ``build_config``, e.g. ``preset`` or ``crop``); ``max_steps`` caps the optimizer steps
    (0 = no cap; the default SaVos budget trains whole epochs).
    """

    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    lr_schedule: str = "constant"
    ema: float = 0.0
    max_steps: int = 0
    options: dict = field(default_factory=dict)


def default_budgets() -> dict[str, TrainBudget]:
    """The CPU recipes: SaVos as the shipped zoo model (``cpu`` preset, weight average 0.99, 12 epochs)."""
    budgets = {name: TrainBudget(batch_size=64) for name in list_models(trained=True)}
    budgets[SAVOS] = TrainBudget(epochs=12, ema=0.99, options={"preset": "cpu"})
    return budgets


@dataclass
class BenchmarkConfig:
    """Everything that decides a benchmark's numbers (saved as RESULTS_DIR/config.json).

    ``budget_minutes`` caps each trained method's training time: no epoch starts that the
    mean epoch time so far says would end past it (0 = train all ``epochs``). ``ablations``
    lists the SaVos ablation switches to train with the savos budget.
    """

    data: str
    out: str
    methods: list[str] = field(default_factory=list_models)
    device: str = "auto"
    seed: int = 0
    #: several seeds: every trained row trained and scored once per seed, reported as mean ± sd
    seeds: list[int] = field(default_factory=list)
    budget_minutes: float = 15.0
    train: dict[str, TrainBudget] = field(default_factory=default_budgets)
    ablations: list[str] = field(default_factory=list)
    tta: bool = False
    tta_max_iters: int = 20
    figure_frames: int = 6
    #: scoring rules for every row (amodalkit.evaluation.protocols): strict or official
    protocol: str = DEFAULT_PROTOCOL
    #: a flow backend: the data are copied to OUT/data-BACKEND and filled with it first ("" = as stored)
    flow: str = ""
    #: weights of a network --flow backend (flownet2, ptlflow:NAME)
    flow_checkpoint: str = ""
    #: trainings at once, in worker processes (cores // jobs threads each; round-robin over GPUs)
    jobs: int = 1
    quiet: bool = False

    def validate(self) -> None:
        """Raise AmodalkitError on unknown methods or impossible budgets."""
        known = list_models()
        unknown = sorted(set(self.methods) - set(known))
        if unknown or not self.methods:
            raise AmodalkitError(f"unknown method(s) {unknown}; --methods takes a comma-separated list "
                                 f"of {', '.join(known)}")
        if self.protocol not in ("strict", "official"):
            raise AmodalkitError(f"unknown scoring protocol {self.protocol!r}; choose strict or official")
        bad = sorted(set(self.ablations) - set(ABLATIONS))
        if bad:
            raise AmodalkitError(f"unknown SaVos ablation(s) {bad}; choose from {', '.join(ABLATIONS)}")
        if (self.ablations or self.tta) and SAVOS not in self.methods:
            raise AmodalkitError("--ablations and --tta compare against savos; add savos to --methods")
        for name in list_models(trained=True):
            if name in self.methods and name not in self.train:
                raise AmodalkitError(f"no training budget for {name!r}")
        for name, b in self.train.items():
            if b.epochs < 1 or b.batch_size < 1 or b.lr <= 0 or b.max_steps < 0:
                raise AmodalkitError(f"{name}: epochs and batch size must be at least 1, lr positive")
        if self.budget_minutes < 0 or self.tta_max_iters < 1 or self.figure_frames < 1 or self.jobs < 1:
            raise AmodalkitError("--budget-minutes must be >= 0; --jobs, --tta-max-iters, figure frames >= 1")
        if len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise AmodalkitError(f"--seeds needs distinct seeds >= 0, got {self.seeds}")

    def data_dir(self) -> Path:
        """The shards every row trains and is scored on: ``data``, or its flow-filled copy under ``out``."""
        if not self.flow:
            return Path(self.data)
        return Path(self.out) / ("data-" + self.flow.replace(":", "-"))

    def seed_list(self) -> list[int]:
        """The seeds every trained row runs with (``seeds``, or just ``seed``)."""
        return list(self.seeds) or [self.seed]

    def record(self) -> dict:
        """The JSON form saved as config.json (without settings that do not change numbers).

        ``jobs`` is left out so that a run can resume with another; the threads each training
        used are in its ``benchmark_progress.json`` (they can change the last bits of the weights).
        """
        data = asdict(self)
        data.pop("quiet")
        data.pop("jobs")
        return json.loads(json.dumps(data))


def parse_epochs(values: tuple[str, ...] | list[str]) -> dict[str, int]:
    """``N`` (every trained method) or ``NAME=N`` items -> {name: epochs}."""
    out: dict[str, int] = {}
    for value in values:
        name, sep, number = value.rpartition("=")
        try:
            epochs = int(number)
        except ValueError as exc:
            raise AmodalkitError(f"--epochs takes N or NAME=N, got {value!r}") from exc
        trained = list_models(trained=True)
        if sep and name not in trained:
            raise AmodalkitError(f"--epochs {value!r}: {name!r} is not trained; "
                                 f"choose from {', '.join(trained)}")
        for key in ([name] if sep else trained):
            out[key] = epochs
    return out


def benchmark_config(data: str | Path, out: str | Path, methods: str | None = None,
                epochs: tuple[str, ...] | list[str] = (), ablations: bool = False,
                **settings: object) -> BenchmarkConfig:
    """A BenchmarkConfig from CLI-style values: comma-separated methods, ``--epochs`` items, a flag."""
    budgets = default_budgets()
    for name, n in parse_epochs(epochs).items():
        budgets[name].epochs = n
    known = list_models()
    names = known if methods is None else [m.strip() for m in methods.split(",") if m.strip()]
    names.sort(key=lambda m: known.index(m) if m in known else len(known))
    return BenchmarkConfig(data=str(Path(data).resolve()), out=str(Path(out).resolve()), methods=names,
                           train=budgets, ablations=list(ABLATIONS) if ablations else [], **settings)
