"""``amodalkit benchmark``: train what needs training, score every method, write the comparison.

The input is a folder of shards as ``amodalkit gen-chewing-gum DIR`` writes them::

    DIR/train-00000.h5 ...   training videos (self-supervised and framewise trainings)
    DIR/val-00000.h5 ...     validation videos (checkpoint selection)
    DIR/test-00000.h5 ...    test videos (every score)

The results folder::

    RESULTS_DIR/
      config.json            BenchmarkConfig; a rerun must use the same one
      methods/ROW.json       one finished row: metrics, timings, training summary, commands
      runs/ROW/              training run folders (amodalkit.engine.runlog layout), resumed when interrupted;
                             with ``jobs`` > 1 they train in worker processes first, then every row is scored
      results.json           config + every row
      results.md             the paper's Table 1 layout (+ training and inference cost)
      ablations.md           the paper's Table 2 layout (with ablations)
      figure.png             the 2 test videos where the method families differ most, errors coloured,
                             each row with its mIoU on that video

A rerun skips rows whose ``methods/ROW.json`` exists and resumes interrupted trainings.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from amodalkit.engine.seeds import mean_sd
from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import evaluate_method
from amodalkit.io.atomic import atomic_path, remove_stale_temps, write_json
from amodalkit.io.shards import Video
from amodalkit.models.base import AmodalMethod
from amodalkit.tables.commands import benchmark_command, row_commands
from amodalkit.tables.config import BenchmarkConfig
from amodalkit.tables.flow_copy import prepare_flow_copy
from amodalkit.tables.plan import Row, build_row_method, claim_results_dir, find_splits, plan_rows
from amodalkit.tables.report import format_ablations_md, format_results_md, write_figure
from amodalkit.tables.train import PROGRESS, row_run_dir, train_row_run, train_rows_in_parallel


class TimedMethod(AmodalMethod):
    """Wraps a method and clocks its predictions (seconds and object-frames predicted)."""

    def __init__(self, inner: AmodalMethod) -> None:
        self.inner = inner
        self.name = inner.name
        self.fields = inner.fields
        self.videos_per_batch = inner.videos_per_batch
        self.seconds = 0.0
        self.object_frames = 0

    def predict_video(self, video: Video) -> np.ndarray:
        return self.predict_videos([video])[0]

    def predict_videos(self, videos: Sequence[Video]) -> list[np.ndarray]:
        t0 = time.perf_counter()
        out = self.inner.predict_videos(videos)
        self.seconds += time.perf_counter() - t0
        self.object_frames += sum(v.num_objects * v.num_frames for v in videos)
        return out

    def describe(self) -> dict:
        return self.inner.describe()


def _finite(data: object) -> object:
    """NaN / inf -> None, recursively, so results.json is strict JSON."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    return data


def run_row(cfg: BenchmarkConfig, row: Row, test: list[Path]) -> dict:
    """Train (or finish training) if the row needs it, score it on the test shards; return its entry.

    A trained row with several seeds trains and scores once per seed (``runs/ROW/seed-N``); its
    entry holds each seed's scores under ``per_seed``, their mean as ``metrics`` and mean, sample
    sd and values under ``spread``.
    """
    if row.run is None:
        return score_row(cfg, row, test, None)
    seeds = cfg.seed_list()
    entries = []
    for seed in seeds:
        run_dir = row_run_dir(cfg, row, seed)
        seeded = replace(cfg, seed=seed)
        entries.append(score_row(seeded, row, test, run_dir, train_row_run(seeded, row, run_dir)))
    return entries[0] if len(entries) == 1 else combine_seeds(entries, seeds)


def combine_seeds(entries: list[dict], seeds: list[int]) -> dict:
    """One row's entry over several seeds: mean metrics, their spread, and every seed's own entry."""
    keys = list(entries[0]["metrics"])
    spread = {k: mean_sd([e["metrics"][k] for e in entries]) for k in keys}
    own = ("metrics", "training", "train_seconds", "eval_seconds", "commands")
    per_seed = {str(s): {k: e[k] for k in own} for s, e in zip(seeds, entries, strict=True)}
    combined = dict(entries[0])
    combined |= {"metrics": {k: spread[k]["mean"] for k in keys}, "spread": spread, "seed": seeds,
                 "per_seed": per_seed,
                 "train_seconds": sum(e["train_seconds"] or 0.0 for e in entries),
                 "eval_seconds": sum(e["eval_seconds"] for e in entries)}
    return _finite(combined)


def score_row(cfg: BenchmarkConfig, row: Row, test: list[Path], run_dir: Path | None,
              checkpoint: Path | None = None) -> dict:
    """Score one row (with its trained checkpoint from `run_dir`, if any) and build its entry."""
    training = None
    if run_dir is not None:
        budget = cfg.train[row.method]
        training = {**json.loads((run_dir / PROGRESS).read_text()), "run_dir": str(run_dir),
                    "checkpoint": str(checkpoint), "budget": asdict(budget)}
    timed = TimedMethod(build_row_method(cfg, row, checkpoint))
    t0 = time.perf_counter()
    result = evaluate_method(timed, test, quiet=cfg.quiet, data=str(cfg.data_dir() / "test-*.h5"),
                             protocol=cfg.protocol)
    eval_seconds = time.perf_counter() - t0
    train_seconds = None if training is None or row.tta else training["train_seconds"]
    entry = {
        "row": row.name, "label": row.label, "method": row.method, "options": row.options,
        "ablation": row.ablation, "tta": row.tta,
        "metrics": {k: result[k] for k in ("frame_miou_full", "frame_miou_occluded", "object_miou_full",
                                           "object_miou_occluded")},
        "paper": None if row.paper is None else {"full": row.paper[0], "occluded": row.paper[1],
                                                 "dataset": "FISHBOWL" if row.ablation else "Chewing Gum"},
        "evaluation": result, "training": training, "train_seconds": train_seconds,
        "eval_seconds": eval_seconds, "predict_seconds": timed.seconds,
        "object_frames_per_s": timed.object_frames / timed.seconds if timed.seconds > 0 else None,
        "seed": cfg.seed, "command": benchmark_command(cfg),
        "commands": row_commands(cfg, row, None if training is None else training["epochs_run"]),
    }
    return _finite(entry)


def run_benchmark(cfg: BenchmarkConfig) -> dict:
    """Produce every row (skipping finished ones), the figure and the tables; return results.json's data."""
    cfg.validate()
    out = Path(cfg.out)
    rows = plan_rows(cfg)
    claim_results_dir(cfg)
    if cfg.flow:
        prepare_flow_copy(cfg)
    splits = find_splits(cfg, rows)
    methods_dir = out / "methods"
    remove_stale_temps(out)
    remove_stale_temps(methods_dir)
    if cfg.jobs > 1:
        train_rows_in_parallel(cfg, [r for r in rows if not (methods_dir / f"{r.name}.json").is_file()],
                               cfg.jobs)
    entries = {}
    bar = tqdm(rows, desc="benchmark", unit="method", disable=cfg.quiet)
    for row in bar:
        bar.set_postfix_str(row.name)
        path = methods_dir / f"{row.name}.json"
        if path.is_file():
            try:
                entries[row.name] = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise AmodalkitError(f"unreadable method result ({exc}); delete it to redo the row",
                                     path) from exc
            continue
        entries[row.name] = run_row(cfg, row, splits["test"])
        write_json(path, entries[row.name])
    results = {"config": cfg.record(), "command": benchmark_command(cfg), "methods": entries,
               "figure": write_figure(cfg, rows, entries, splits["test"])}
    write_json(out / "results.json", results)
    _write_text(out / "results.md", format_results_md(results))
    if cfg.ablations:
        _write_text(out / "ablations.md", format_ablations_md(results))
    return results


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
