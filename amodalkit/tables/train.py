"""Training a row's run inside a benchmark: one loop with a time budget, resumed when interrupted."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import write_json
from amodalkit.models.registry import get_model_spec
from amodalkit.tables.config import BenchmarkConfig, TrainBudget
from amodalkit.tables.plan import Row

PROGRESS = "benchmark_progress.json"


def _train_run(cfg: BenchmarkConfig, run_dir: Path, budget: TrainBudget, model_name: str,
               model_config: object, threads: int = 0) -> Path:
    """Train one run up to ``budget.epochs``, the time budget or the step cap; return its best checkpoint.

    One loop with a :class:`~amodalkit.engine.hooks.TimeBudget` hook: no epoch starts that
    the mean epoch time so far says would end past ``budget_minutes``. The hook's seconds
    live in the run's ``last.state.pt``, so an interrupted benchmark resumes the run
    (``--resume`` once it holds a committed epoch) and keeps counting the same budget.
    ``RUN/benchmark_progress.json`` records the finished run: epochs done, training seconds,
    why training stopped early (None, "time budget" or "max steps"), the CPU threads it used
    and the summary; a run it does not record as finished is resumed. ``threads`` 0 lets the
    trainer pick (every core).
    """
    import torch

    from amodalkit.engine import TimeBudget, TrainConfig, Trainer, make_task
    from amodalkit.engine.runlog import holds_run

    progress_path = run_dir / PROGRESS
    spent, done, stopped = 0.0, 0, None
    if progress_path.is_file():
        try:
            progress = json.loads(progress_path.read_text())
            spent, done = float(progress["train_seconds"]), int(progress["epochs_run"])
            stopped = progress["stopped"]
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise AmodalkitError(f"unreadable training progress ({exc}); delete it to resume the run",
                                 progress_path) from exc
    if not stopped and done < budget.epochs:
        data = cfg.data_dir()
        tc = TrainConfig(data=[str(p) for p in sorted(data.glob("train-*.h5"))],
                         val=[str(p) for p in sorted(data.glob("val-*.h5"))], out=str(run_dir),
                         epochs=budget.epochs, batch_size=budget.batch_size, lr=budget.lr, seed=cfg.seed,
                         lr_schedule=budget.lr_schedule, schedule_epochs=budget.epochs, ema=budget.ema,
                         max_steps=budget.max_steps, device=cfg.device, resume=holds_run(run_dir),
                         threads=threads, quiet=cfg.quiet)
        clock = TimeBudget(cfg.budget_minutes * 60)
        clock.spent, clock.epochs = spent, done
        trainer = Trainer(tc, make_task(model_name, model_config), hooks=[clock])
        try:
            summary = trainer.fit()
        finally:
            trainer.close()
        write_json(progress_path, {"epochs_run": summary["last_epoch"], "train_seconds": clock.spent,
                                   "stopped": summary["stopped"], "threads": torch.get_num_threads(),
                                   "summary": summary})
    best = run_dir / "best.safetensors"
    if not best.is_file():
        raise AmodalkitError("the training run ended without a best.safetensors checkpoint", run_dir)
    return best


def train_row_run(cfg: BenchmarkConfig, row: Row, run_dir: Path, threads: int = 0) -> Path:
    """Train a row's run with its model's budget (plus the row's ablation); returns the best checkpoint."""
    budget = cfg.train[row.method]
    options = {**budget.options, **({row.ablation: True} if row.ablation else {})}
    return _train_run(cfg, run_dir, budget, row.method, get_model_spec(row.method).build_config(**options),
                      threads)


def row_run_dir(cfg: BenchmarkConfig, row: Row, seed: int) -> Path:
    """Where a trained row's run for `seed` lives: ``runs/ROW``, or ``runs/ROW/seed-N`` with several seeds."""
    run_dir = Path(cfg.out) / "runs" / str(row.run)
    return run_dir if len(cfg.seed_list()) == 1 else run_dir / f"seed-{seed}"


def _finished(run_dir: Path) -> bool:
    """Whether the run's progress file records it as done (an unreadable one is left to the scoring pass)."""
    return (run_dir / PROGRESS).is_file()


def _train_task(task: tuple[BenchmarkConfig, Row, Path, int], device: str) -> dict:
    """One worker's training (a :func:`~amodalkit.execution.run_on_devices` task) on `device`."""
    cfg, row, run_dir, threads = task
    return {"run_dir": str(train_row_run(replace(cfg, device=device), row, run_dir, threads).parent)}


def train_rows_in_parallel(cfg: BenchmarkConfig, rows: list[Row], jobs: int) -> int:
    """Train every unfinished run of `rows` (each seed), `jobs` at a time in worker processes.

    Each CPU worker gets ``cores // jobs`` threads; with GPUs the workers go round-robin over
    them. Scoring then runs in this process and finds the runs finished. Returns the number trained.
    """
    from amodalkit.execution import run_on_devices, worker_devices

    threads = max(1, (os.cpu_count() or 1) // jobs)
    tasks, seen = [], set()
    for row in rows:
        for seed in cfg.seed_list() if row.run else ():
            run_dir = row_run_dir(cfg, row, seed)
            if run_dir not in seen and not _finished(run_dir):
                seen.add(run_dir)
                tasks.append((replace(cfg, seed=seed, quiet=True), row, run_dir, threads))
    jobs = min(jobs, len(tasks))
    if jobs > 0:
        run_on_devices(_train_task, tasks, worker_devices(cfg.device, jobs), quiet=cfg.quiet, unit="training")
    return len(tasks)
