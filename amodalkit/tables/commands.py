"""The command lines that reproduce a benchmark and each of its rows."""

from __future__ import annotations

import shlex
from pathlib import Path

from amodalkit.models.registry import list_models
from amodalkit.tables.config import BenchmarkConfig
from amodalkit.tables.plan import Row


def _flags(options: dict) -> list[str]:
    """``amodalkit train`` flags of model options (its ``build_config`` keywords)."""
    out = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            out.append(flag)
        elif value is not False and value is not None:
            sep = "x" if key == "crop" else ","
            out += [flag, sep.join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    return out


def benchmark_command(cfg: BenchmarkConfig) -> str:
    """The ``amodalkit benchmark`` command line of a config (config.json holds every setting)."""
    parts = ["amodalkit", "benchmark", "--data", cfg.data, "--out", cfg.out,
             "--methods", ",".join(cfg.methods), "--device", cfg.device,
             *(["--seeds", ",".join(map(str, cfg.seeds))] if cfg.seeds else ["--seed", str(cfg.seed)]),
             "--budget-minutes", f"{cfg.budget_minutes:g}"]
    for name in list_models(trained=True):
        if name in cfg.methods:
            parts += ["--epochs", f"{name}={cfg.train[name].epochs}"]
    if cfg.ablations:
        parts.append("--ablations")
    if cfg.tta:
        parts += ["--tta", "--tta-max-iters", str(cfg.tta_max_iters)]
    parts += ["--protocol", cfg.protocol]
    if cfg.flow:
        parts += ["--flow", cfg.flow]
    if cfg.flow_checkpoint:
        parts += ["--flow-checkpoint", cfg.flow_checkpoint]
    if cfg.jobs != 1:  # trainings at once set each one's threads (cores // jobs), which can move its numbers
        parts += ["--jobs", str(cfg.jobs)]
    return shlex.join(parts)


def row_commands(cfg: BenchmarkConfig, row: Row, epochs: int | None) -> dict[str, str]:
    """Stand-alone ``amodalkit train`` / ``evaluate`` commands that reproduce a row."""
    data = cfg.data_dir()
    test = str(data / "test-*.h5")
    if row.run is None:
        return {"evaluate": shlex.join(["amodalkit", "evaluate", "--model", row.method, *_flags(row.options),
                                        "--data", test, "--protocol", cfg.protocol])}
    run = Path(cfg.out) / "runs" / row.run
    if len(cfg.seed_list()) > 1:
        run = run / f"seed-{cfg.seed}"
    budget = cfg.train[row.method]
    options = {**budget.options, **({row.ablation: True} if row.ablation else {})}
    evaluate = ["amodalkit", "evaluate", "--model", row.method, "--checkpoint", str(run / "best.safetensors"),
                "--data", test, "--device", cfg.device, "--protocol", cfg.protocol]
    if row.tta:
        evaluate += ["--tta", "--tta-max-iters", str(cfg.tta_max_iters)]
    train = ["amodalkit", "train", "--model", row.method, "--data", str(data / "train-*.h5"),
             "--val", str(data / "val-*.h5"), "--out", str(run), "--epochs", str(epochs),
             "--batch-size", str(budget.batch_size), "--lr", f"{budget.lr:g}", "--seed", str(cfg.seed),
             "--device", cfg.device, *_flags(options)]
    if budget.lr_schedule != "constant":
        train += ["--lr-schedule", budget.lr_schedule, "--schedule-epochs", str(budget.epochs)]
    if budget.ema:
        train += ["--ema", f"{budget.ema:g}"]
    if budget.max_steps:
        train += ["--max-steps", str(budget.max_steps)]
    return {"train": shlex.join(train), "evaluate": shlex.join(evaluate)}
