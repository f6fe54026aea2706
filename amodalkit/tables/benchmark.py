"""``amodalkit benchmark``: train what needs training, score every method, write the comparison.

The input is a folder of shards as ``amodalkit gen-chewing-gum DIR`` writes them::

    DIR/train-00000.h5 ...   training videos (self-supervised and framewise trainings)
    DIR/val-00000.h5 ...     validation videos (checkpoint selection)
    DIR/test-00000.h5 ...    test videos (every score)

The results folder::

    RESULTS_DIR/
      config.json            BenchmarkConfig; a rerun must use the same one
      methods/ROW.json       one finished row: metrics, timings, training summary, commands
      runs/ROW/              training run folders (amodalkit.engine.runlog layout), resumed when interrupted
      results.json           config + every row
      results.md             the paper's Table 1 layout (+ training and inference cost)
      ablations.md           the paper's Table 2 layout (with ablations)
      figure.png             the same frames of one test video, one row per method

A rerun skips rows whose ``methods/ROW.json`` exists and resumes interrupted trainings.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.evaluate import evaluate_method, predict_binary
from amodalkit.io.atomic import atomic_path, claim_output_dir, remove_stale_temps, write_json
from amodalkit.io.shards import ShardReader, Video
from amodalkit.models.base import AmodalMethod
from amodalkit.models.registry import get_model_spec, list_models
from amodalkit.models.savos.config import ABLATIONS
from amodalkit.models.savos.config import MODEL_NAME as SAVOS

SPLITS = ("train", "val", "test")
PROGRESS = "benchmark_progress.json"

#: Table 2 of the paper (FISHBOWL): the full model and its ablations, (full, occluded) mean IoU
PAPER_FISHBOWL_ABLATIONS = {SAVOS: (0.8863, 0.7155), "no_consistency": (0.8606, 0.6447),
                            "no_bidirectional": (0.8749, 0.6849), "no_temporal": (0.8785, 0.6894),
                            "no_flow": (0.8508, 0.6188), "no_image": (0.8673, 0.6634)}
ABLATION_LABELS = {"no_consistency": "w/o consistency loss", "no_bidirectional": "w/o bi-directional",
                   "no_temporal": "w/o temporal embedding", "no_flow": "w/o optical flow",
                   "no_image": "w/o image"}


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
    budget_minutes: float = 15.0
    train: dict[str, TrainBudget] = field(default_factory=default_budgets)
    ablations: list[str] = field(default_factory=list)
    tta: bool = False
    tta_max_iters: int = 20
    figure_frames: int = 6
    quiet: bool = False

    def validate(self) -> None:
        """Raise AmodalkitError on unknown methods or impossible budgets."""
        known = list_models()
        unknown = sorted(set(self.methods) - set(known))
        if unknown or not self.methods:
            raise AmodalkitError(f"unknown method(s) {unknown}; --methods takes a comma-separated list "
                                 f"of {', '.join(known)}")
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
        if self.budget_minutes < 0 or self.tta_max_iters < 1 or self.figure_frames < 1:
            raise AmodalkitError("--budget-minutes must be >= 0, --tta-max-iters and figure frames >= 1")

    def record(self) -> dict:
        """The JSON form saved as config.json (without settings that do not change numbers)."""
        data = asdict(self)
        data.pop("quiet")
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


def make_config(data: str | Path, out: str | Path, methods: str | None = None,
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


@dataclass(frozen=True)
class Row:
    """One line of the tables: a method with fixed options, maybe trained, maybe adapted at test time."""

    name: str
    method: str
    label: str
    options: dict = field(default_factory=dict)
    run: str | None = None
    tta: bool = False
    ablation: str | None = None
    paper: tuple[float, float] | None = None


def plan_rows(cfg: BenchmarkConfig) -> list[Row]:
    """The rows to produce, in the paper's order (Table 1, Table 4, then Table 2's ablations)."""
    rows = []
    for name in (m for m in list_models() if m in cfg.methods):
        spec = get_model_spec(name)
        for tr in spec.table:
            rows.append(Row(tr.name, name, tr.label, dict(tr.options), run=name if spec.trained else None,
                            paper=tr.paper))
        if name == SAVOS and cfg.tta:
            rows.append(Row("savos-tta", SAVOS, "SaVos + test-time adaptation", run=SAVOS, tta=True))
    for a in cfg.ablations:
        rows.append(Row(f"savos-{a}", SAVOS, f"SaVos {ABLATION_LABELS[a]}", run=f"savos-{a}", ablation=a,
                        paper=PAPER_FISHBOWL_ABLATIONS[a]))
    return rows


def find_splits(cfg: BenchmarkConfig, rows: list[Row]) -> dict[str, list[Path]]:
    """The shards of each split the rows need: test always, train and val when something trains."""
    data = Path(cfg.data)
    if not data.is_dir():
        raise AmodalkitError("no such data folder (make one with `amodalkit gen-chewing-gum DIR`)", data)
    needed = SPLITS if any(r.run for r in rows) else ("test",)
    splits = {}
    for split in needed:
        found = sorted(data.glob(f"{split}-*.h5"))
        if not found:
            raise AmodalkitError(f"no {split}-*.h5 shards in the data folder (the benchmark needs the "
                                 f"{', '.join(needed)} splits `amodalkit gen-chewing-gum DIR` writes)", data)
        splits[split] = found
    return splits


def claim_results_dir(cfg: BenchmarkConfig) -> None:
    """Write config.json, or check that the one already there is the same configuration."""
    claim_output_dir(Path(cfg.out) / "config.json", cfg.record(),
                     "this results folder holds a benchmark with other settings; rerun with the same "
                     "options to resume, or pick a new --out")


def _train_run(cfg: BenchmarkConfig, run_dir: Path, budget: TrainBudget, model_name: str,
               model_config: object) -> Path:
    """Train one run up to ``budget.epochs``, the time budget or the step cap; return its best checkpoint.

    One loop with a :class:`~amodalkit.engine.hooks.TimeBudget` hook: no epoch starts that
    the mean epoch time so far says would end past ``budget_minutes``. The hook's seconds
    live in the run's ``last.state.pt``, so an interrupted benchmark resumes the run
    (``--resume`` once it holds a committed epoch) and keeps counting the same budget.
    ``RUN/benchmark_progress.json`` records the finished run: epochs done, training seconds,
    why training stopped early (None, "time budget" or "max steps") and the summary; a run
    it does not record as finished is resumed.
    """
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
        data = Path(cfg.data)
        tc = TrainConfig(data=[str(p) for p in sorted(data.glob("train-*.h5"))],
                         val=[str(p) for p in sorted(data.glob("val-*.h5"))], out=str(run_dir),
                         epochs=budget.epochs, batch_size=budget.batch_size, lr=budget.lr, seed=cfg.seed,
                         lr_schedule=budget.lr_schedule, schedule_epochs=budget.epochs, ema=budget.ema,
                         max_steps=budget.max_steps, device=cfg.device, resume=holds_run(run_dir),
                         quiet=cfg.quiet)
        clock = TimeBudget(cfg.budget_minutes * 60)
        clock.spent, clock.epochs = spent, done
        trainer = Trainer(tc, make_task(model_name, model_config), hooks=[clock])
        try:
            summary = trainer.fit()
        finally:
            trainer.close()
        write_json(progress_path, {"epochs_run": summary["last_epoch"], "train_seconds": clock.spent,
                                   "stopped": summary["stopped"], "summary": summary})
    best = run_dir / "best.safetensors"
    if not best.is_file():
        raise AmodalkitError("the training run ended without a best.safetensors checkpoint", run_dir)
    return best


def train_row_run(cfg: BenchmarkConfig, row: Row, run_dir: Path) -> Path:
    """Train a row's run with its model's budget (plus the row's ablation); returns the best checkpoint."""
    budget = cfg.train[row.method]
    options = {**budget.options, **({row.ablation: True} if row.ablation else {})}
    return _train_run(cfg, run_dir, budget, row.method, get_model_spec(row.method).build_config(**options))


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


def build_row_method(cfg: BenchmarkConfig, row: Row, checkpoint: str | Path | None = None) -> AmodalMethod:
    """The method of a row: from the registry, or loaded back from its trained checkpoint."""
    from amodalkit.models.registry import build_method, method_from_checkpoint

    if row.run is None:
        return build_method(row.method, **row.options)
    from amodalkit.device import resolve_device

    if checkpoint is None:
        raise AmodalkitError(f"row {row.name!r} needs its trained checkpoint")
    method = method_from_checkpoint(checkpoint, device=str(resolve_device(cfg.device)))
    if method.name != row.method:
        raise AmodalkitError(f"the checkpoint holds a {method.name!r} model, not {row.method!r}", checkpoint)
    if row.tta:
        from amodalkit.models.savos.tta import TTAConfig

        method = method.with_tta(TTAConfig(max_iters=cfg.tta_max_iters))
    return method


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
             "--methods", ",".join(cfg.methods), "--device", cfg.device, "--seed", str(cfg.seed),
             "--budget-minutes", f"{cfg.budget_minutes:g}"]
    for name in list_models(trained=True):
        if name in cfg.methods:
            parts += ["--epochs", f"{name}={cfg.train[name].epochs}"]
    if cfg.ablations:
        parts.append("--ablations")
    if cfg.tta:
        parts += ["--tta", "--tta-max-iters", str(cfg.tta_max_iters)]
    return shlex.join(parts)


def row_commands(cfg: BenchmarkConfig, row: Row, epochs: int | None) -> dict[str, str]:
    """Stand-alone ``amodalkit train`` / ``evaluate`` commands that reproduce a row."""
    test = str(Path(cfg.data) / "test-*.h5")
    if row.run is None:
        return {"evaluate": shlex.join(["amodalkit", "evaluate", "--model", row.method, *_flags(row.options),
                                        "--data", test])}
    run = Path(cfg.out) / "runs" / row.run
    budget = cfg.train[row.method]
    options = {**budget.options, **({row.ablation: True} if row.ablation else {})}
    evaluate = ["amodalkit", "evaluate", "--model", row.method, "--checkpoint", str(run / "best.safetensors"),
                "--data", test, "--device", cfg.device]
    if row.tta:
        evaluate += ["--tta", "--tta-max-iters", str(cfg.tta_max_iters)]
    train = ["amodalkit", "train", "--model", row.method, "--data", str(Path(cfg.data) / "train-*.h5"),
             "--val", str(Path(cfg.data) / "val-*.h5"), "--out", str(run), "--epochs", str(epochs),
             "--batch-size", str(budget.batch_size), "--lr", f"{budget.lr:g}", "--seed", str(cfg.seed),
             "--device", cfg.device, *_flags(options)]
    if budget.lr_schedule != "constant":
        train += ["--lr-schedule", budget.lr_schedule, "--schedule-epochs", str(budget.epochs)]
    if budget.ema:
        train += ["--ema", f"{budget.ema:g}"]
    if budget.max_steps:
        train += ["--max-steps", str(budget.max_steps)]
    return {"train": shlex.join(train), "evaluate": shlex.join(evaluate)}


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
    """Train (or finish training) if the row needs it, score it on the test shards; return its entry."""
    checkpoint, training = None, None
    if row.run is not None:
        run_dir = Path(cfg.out) / "runs" / row.run
        checkpoint = train_row_run(cfg, row, run_dir)
        budget = cfg.train[row.method]
        training = {**json.loads((run_dir / PROGRESS).read_text()), "run_dir": str(run_dir),
                    "checkpoint": str(checkpoint), "budget": asdict(budget)}
    timed = TimedMethod(build_row_method(cfg, row, checkpoint))
    t0 = time.perf_counter()
    result = evaluate_method(timed, test, quiet=cfg.quiet, data=str(Path(cfg.data) / "test-*.h5"))
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


def pick_figure_video(test: list[Path]) -> tuple[Path, int]:
    """The video of the first test shard with the most hidden amodal pixels (shard, index)."""
    best = (-1, 0)
    with ShardReader(test[0]) as r:
        for i in range(len(r)):
            v = r.read_video(i, ("amodal", "amodal_annotated"))
            hidden = int((v.amodal & ~v.visible_masks() & v.amodal_annotated[:, :, None, None]).sum())
            best = max(best, (hidden, -i))
    return test[0], -best[1]


def write_figure(cfg: BenchmarkConfig, rows: list[Row], entries: dict[str, dict], test: list[Path]) -> dict:
    """figure.png: rows visible / ground truth / each method, columns the same frames of one test video."""
    from amodalkit.viz import save_video_picture

    shard, index = pick_figure_video(test)
    with ShardReader(shard) as r:
        video = r.read_video(index)
    preds = {}
    for row in tqdm(rows, desc="figure", unit="method", leave=False, disable=cfg.quiet):
        training = entries[row.name]["training"]
        method = build_row_method(cfg, row, None if training is None else training["checkpoint"])
        preds[row.name] = predict_binary(method, video)
    h, w = video.size
    scale = max(1, min(4, 200 // max(h, w)))
    path = Path(cfg.out) / "figure.png"
    save_video_picture(path, video.frames, video.visible_masks(), video.amodal, preds, cfg.figure_frames,
                       scale)
    return {"path": str(path), "shard": str(shard), "video_index": index, "video": video.name,
            "frames": cfg.figure_frames}


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    text = f"{value:.4f}"
    return text[1:] if text.startswith("0.") else text


def _metric_table(entries: list[dict], paper_title: str) -> list[str]:
    lines = [f"| method | frame Full | frame Occluded | object Full | object Occluded | {paper_title} Full "
             f"| {paper_title} Occluded |", "|---|---|---|---|---|---|---|"]
    for e in entries:
        m, p = e["metrics"], e["paper"] or {}
        lines.append(f"| {e['label']} | {_fmt(m['frame_miou_full'])} | {_fmt(m['frame_miou_occluded'])} "
                     f"| {_fmt(m['object_miou_full'])} | {_fmt(m['object_miou_occluded'])} "
                     f"| {_fmt(p.get('full'))} | {_fmt(p.get('occluded'))} |")
    return lines


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def format_results_md(results: dict) -> str:
    """results.md: Table 1 layout (frame- and object-level, paper column), then the cost of each row."""
    cfg = results["config"]
    entries = [e for e in results["methods"].values() if not e["ablation"]]
    first = entries[0]["evaluation"]
    lines = ["# Benchmark: amodal mean IoU on the test split", "",
             f"Data: `{cfg['data']}` ({first['n_videos']} test videos, {first['n_object_frames']} scored "
             f"object-frames, {first['n_occluded_object_frames']} with hidden pixels). Seed {cfg['seed']}.",
             f"Produced by `{results['command']}` (every setting in `config.json`).", "",
             "Frame-level mIoU is the paper's headline metric (mean over the objects of each frame, then "
             "over frames); object-level is the mean over object-frames. Occluded: IoU restricted to the "
             "pixels outside the visible mask, over object-frames with hidden ground truth. The paper "
             "column is Table 1's Chewing Gum result (SPEC section 7).", ""]
    lines += _metric_table(entries, "paper (Chewing Gum)")
    lines += ["", "| method | epochs | train (s) | evaluate (s) | inference object-frames/s |",
              "|---|---|---|---|---|"]
    for e in entries:
        t = e["training"]
        epochs = "—"
        if t is not None:
            epochs = f"{t['epochs_run']}" + (f" ({t['stopped']})" if t["stopped"] else "")
        fps = "—" if e["object_frames_per_s"] is None else f"{e['object_frames_per_s']:.0f}"
        train = "(shared with SaVos)" if e["tta"] else _seconds(e["train_seconds"])
        lines.append(f"| {e['label']} | {epochs} | {train} | {_seconds(e['eval_seconds'])} | {fps} |")
    lines += ["", "![methods side by side](figure.png)", ""]
    return "\n".join(lines)


def format_ablations_md(results: dict) -> str:
    """ablations.md: the paper's Table 2 layout, the FISHBOWL numbers for reference."""
    rows = [results["methods"][SAVOS]] + [e for e in results["methods"].values() if e["ablation"]]
    ref_full, ref_occluded = PAPER_FISHBOWL_ABLATIONS[SAVOS]
    full = {**rows[0], "label": "SaVos (full model)", "paper": {"full": ref_full, "occluded": ref_occluded}}
    lines = ["# SaVos ablations (the paper's Table 2)", "",
             f"Same data, seed and training budget as `savos`; produced by `{results['command']}`. "
             "The paper's numbers are FISHBOWL (Table 2), so compare the ordering, not the values.", ""]
    lines += _metric_table([full, *rows[1:]], "paper (FISHBOWL)")
    return "\n".join(lines) + "\n"


def run_benchmark(cfg: BenchmarkConfig) -> dict:
    """Produce every row (skipping finished ones), the figure and the tables; return results.json's data."""
    cfg.validate()
    out = Path(cfg.out)
    rows = plan_rows(cfg)
    splits = find_splits(cfg, rows)
    claim_results_dir(cfg)
    methods_dir = out / "methods"
    remove_stale_temps(out)
    remove_stale_temps(methods_dir)
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
