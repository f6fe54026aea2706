"""One training loop for every trained model: Adam, hooks, DDP, atomic epoch commits, exact resume.

A model contributes a :class:`~amodalkit.engine.tasks.TrainTask` (network, datasets,
``step(batch) -> losses``); the loop adds the learning-rate schedule, an optional moving
average of the weights (``ema`` > 0: what is validated and saved), the step cap, the hooks
a caller passes (e.g. :class:`~amodalkit.engine.hooks.TimeBudget`), per-epoch selection of
the best checkpoint on the validation loss (training loss without ``val``; ``select_by``
picks the highest validation IoU a model's step scores instead, one of
:data:`SELECT_METRICS`, ``val_amodal_iou`` reading the amodal **ground truth** of ``val``),
and the run folder of :mod:`amodalkit.engine.runlog`.

Started by ``torchrun --nproc_per_node N -m amodalkit train ...`` it trains with
DistributedDataParallel (NCCL on GPUs, gloo on CPUs); only rank 0 writes files. Loss sums
stay on the training device through the epoch (one host copy at its end) and are reduced
across ranks there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from amodalkit.device import (
    PRECISIONS,
    accumulator_dtype,
    all_reduce_sum,
    autocast_for,
    barrier,
    check_device_name,
    check_precision,
    close_distributed,
    dist_info,
    grad_scaler_for,
    init_distributed,
    resolve_device,
    set_deterministic,
)
from amodalkit.engine import runlog
from amodalkit.engine.hooks import Hook, LRSchedule, ProgressLog, StepCap, WeightAverage
from amodalkit.engine.tasks import TrainTask, make_task
from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import remove_stale_temps
from amodalkit.io.checkpoint import load_state_strict, read_checkpoint
from amodalkit.models.base import StepContext

#: ``select_by`` -> the validation metric a model's step reports as ``NAME_sum`` and ``NAME_n``
SELECT_METRICS = {"val_amodal_iou": "amodal_iou", "val_visible_iou": "visible_iou"}
#: selections that read amodal ground truth (the run is then not self-supervised end to end)
GROUND_TRUTH_SELECTIONS = ("val_amodal_iou",)


@dataclass
class TrainConfig:
    """Training settings (the model's own settings live in its config dataclass)."""

    data: list[str]
    out: str
    val: list[str] = field(default_factory=list)
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-4
    seed: int = 0
    device: str = "auto"
    workers: int = 0
    threads: int = 0
    clip_stride: int = 0
    precision: str = "fp32"
    lr_schedule: str = "constant"
    schedule_epochs: int = 0
    lr_step_epochs: int = 20
    lr_gamma: float = 0.5
    select_by: str = "loss"
    clips_per_object: int = 0
    ema: float = 0.0
    grad_clip: float = 0.0
    max_steps: int = 0
    deterministic: bool = False
    resume: bool = False
    quiet: bool = False

    def validate(self) -> None:
        """Raise AmodalkitError on impossible settings."""
        if (self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or not math.isfinite(self.lr)
                or self.workers < 0 or self.threads < 0 or self.schedule_epochs < 0):
            raise AmodalkitError("--epochs and --batch-size must be at least 1, --lr positive, "
                                 "--workers, --threads and --schedule-epochs at least 0")
        if not 0.0 <= self.ema < 1.0:
            raise AmodalkitError(f"--ema must be a decay in [0, 1) (0 = off), got {self.ema}")
        if self.max_steps < 0:
            raise AmodalkitError("--max-steps must be 0 (no cap) or positive")
        if not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise AmodalkitError(f"--grad-clip must be 0 (off) or a positive norm, got {self.grad_clip}")
        if self.lr_schedule not in ("constant", "cosine", "step"):
            raise AmodalkitError(f"--lr-schedule must be constant, cosine or step, got {self.lr_schedule!r}")
        if self.lr_step_epochs < 1 or not 0 < self.lr_gamma <= 1 or self.clips_per_object < 0:
            raise AmodalkitError("--lr-step-epochs must be at least 1, --lr-gamma in (0, 1] and "
                                 "--clips-per-object at least 0")
        if self.select_by != "loss" and self.select_by not in SELECT_METRICS:
            choices = " or ".join(("loss", *SELECT_METRICS))
            raise AmodalkitError(f"--select-by must be {choices}, got {self.select_by!r}")
        if self.select_by != "loss" and not self.val:
            raise AmodalkitError(f"--select-by {self.select_by} (e.g. of --preset official) scores the --val "
                                 "shards: give --val, or --select-by loss")
        if self.precision not in PRECISIONS:
            raise AmodalkitError(f"--precision must be one of {', '.join(PRECISIONS)}, "
                                 f"got {self.precision!r}")
        check_device_name(self.device)


class _DistributedNet(DistributedDataParallel):
    """DistributedDataParallel that still exposes the wrapped network's ``config`` to losses."""

    @property
    def config(self) -> object:
        """The wrapped network's config."""
        return self.module.config


def _worker_init(worker_id: int) -> None:
    """DataLoader workers use one thread each, so they do not fight the training process for cores."""
    torch.set_num_threads(1)


class Trainer:
    """One training run: the task's data and network, the optimizer, the hooks and the run folder."""

    def __init__(self, cfg: TrainConfig, task: TrainTask, hooks: Sequence[Hook] = ()) -> None:
        cfg.validate()
        self.cfg, self.task = cfg, task
        self.info = dist_info()
        self.device = resolve_device(cfg.device, self.info)
        check_precision(cfg.precision, self.device)
        set_deterministic(cfg.deterministic)
        self.out = Path(cfg.out)
        self.state_path = self.out / runlog.STATE
        self._owns_group = init_distributed(self.device, self.info, cfg.threads)
        self.talks = self.info.main and not cfg.quiet
        self.start_epoch, self.steps = 1, 0
        self.last_epoch = 0
        self.best = (float("inf"), 0)
        self.best_val_loss: float | None = None
        self.stopped: str | None = None
        self._prepare_run_dir()
        torch.manual_seed(cfg.seed)
        self.net = task.build_net(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.scaler = grad_scaler_for(self.device, cfg.precision)
        self.ema = WeightAverage(cfg.ema, self.net) if cfg.ema > 0 else None
        self.hooks: list[Hook] = [LRSchedule(), *([StepCap(cfg.max_steps)] if cfg.max_steps else []),
                                  *([self.ema] if self.ema else []), *hooks, ProgressLog()]
        if cfg.resume:
            self._load_last()
        self.model: nn.Module = self.net
        if self.info.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = _DistributedNet(self.net, device_ids=ids)
        self.train_set, self.val_set = task.datasets(cfg, quiet=cfg.quiet or not self.info.main)
        self.train_loader = self._loader(self.train_set, shuffle=True)
        self.val_loader = self._loader(self.val_set, shuffle=False) if self.val_set is not None else None

    @property
    def scored_net(self) -> nn.Module:
        """The weights that are validated and saved: the moving average when ``ema`` is on."""
        return self.net if self.ema is None else self.ema.module

    def stop(self, reason: str) -> None:
        """End the run after the epoch under way (or before the next one starts)."""
        self.stopped = self.stopped or reason

    def _prepare_run_dir(self) -> None:
        task, cfg = self.task, self.cfg
        if cfg.resume:
            task.model_config = runlog.resumed_model_config(self.out, task.name, task.config_class,
                                                            task.model_config)
            return
        if runlog.holds_run(self.out):
            raise AmodalkitError("the run folder already holds a run; pass --resume or choose a new --out",
                                 self.out)
        if self.info.main:
            runlog.write_run_config(self.out, {"model": task.name, "model_config": asdict(task.model_config),
                                               "train": asdict(cfg), "world_size": self.info.world})
            remove_stale_temps(self.out)
            runlog.discard_stage(self.out)

    def _check_commit(self) -> int | None:
        """Verify the last commit on every rank, roll an interrupted one forward; its epoch (None: legacy)."""
        if not (self.out / runlog.COMMIT).exists():
            return None
        commit, pending = runlog.verify_commit(self.out)
        barrier(self.info)
        if self.info.main:
            runlog.roll_forward(self.out, pending)
            remove_stale_temps(self.out)
        barrier(self.info)
        return commit["epoch"]

    def _load_last(self) -> None:
        committed = self._check_commit()
        last = self.out / "last.safetensors"
        ck = read_checkpoint(last, expect_model=self.task.name)
        load_state_strict(self.scored_net, ck.state_dict, last)
        state = runlog.load_resume_state(self.state_path)
        if (self.ema is not None) != ("raw_model" in state):
            raise AmodalkitError("--resume must keep the run's --ema setting (on or off)", self.state_path)
        try:
            epoch = int(state["epoch"])
            for hook in self.hooks:
                hook.load_state_dict(self, state)
            self.opt.load_state_dict(state["optimizer"])
            if self.scaler is not None and "scaler" in state:
                self.scaler.load_state_dict(state["scaler"])
            self.steps = int(state.get("steps", 0))
            self.best = (float(state["best_loss"]), int(state["best_epoch"]))
            self.best_val_loss = state.get("best_val_loss")
            if state.get("select_by", "loss") != self.cfg.select_by:
                raise AmodalkitError("--resume must keep the run's --select-by", self.state_path)
        except (KeyError, TypeError, ValueError) as exc:
            raise AmodalkitError(f"not a resume state of this run ({type(exc).__name__}: {exc})",
                                 self.state_path) from exc
        if ck.extra.get("epoch") != epoch or committed not in (None, epoch):
            raise AmodalkitError(f"the run folder's files are of different epochs (last.safetensors "
                                 f"{ck.extra.get('epoch')}, last.state.pt {epoch}, commit.json {committed}); "
                                 "--resume would diverge: start a new --out", self.out)
        self.start_epoch, self.last_epoch = epoch + 1, epoch

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        cuda = self.device.type == "cuda"
        return DataLoader(dataset, batch_size=self.cfg.batch_size,
                          sampler=self.task.sampler(dataset, shuffle, self.cfg.seed, self.info),
                          num_workers=self.cfg.workers, collate_fn=self.task.collate_fn,
                          worker_init_fn=_worker_init, persistent_workers=self.cfg.workers > 0,
                          pin_memory=cuda)

    def _batches(self, loader: DataLoader, epoch: int, desc: str) -> tqdm:
        set_epoch = getattr(loader.sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
        return tqdm(loader, desc=desc, unit="batch", leave=False, disable=not self.talks)

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        keep = self.task.host_keys
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if k not in keep}

    def _context(self, phase: str, index: int) -> StepContext:
        autocast = partial(autocast_for, self.device, self.cfg.precision)
        return StepContext(phase, index, self.cfg.seed, autocast)

    def _weighted(self, losses: dict[str, torch.Tensor], keys: tuple[str, ...], n: int) -> torch.Tensor:
        """(len(keys) + 1,) on the device: each loss times the batch size, then the batch size."""
        dtype = accumulator_dtype(self.device)
        values = torch.stack([losses[k].detach().to(dtype) for k in keys])
        return torch.cat([values * n, values.new_full((1,), n)])

    def _means(self, sums: torch.Tensor, keys: tuple[str, ...]) -> dict[str, float]:
        """Reduce the sums over ranks (on the device), then one host copy: means and the item count."""
        *totals, n = all_reduce_sum(sums, self.info).tolist()
        return {k: v / max(n, 1) for k, v in zip(keys, totals, strict=True)} | {"items": int(n)}

    def _optimize(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        scaler = self.scaler
        (loss if scaler is None else scaler.scale(loss)).backward()
        if self.cfg.grad_clip:
            if scaler is not None:
                scaler.unscale_(self.opt)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)  # no host sync
        if scaler is None:
            self.opt.step()
        else:
            scaler.step(self.opt)
            scaler.update()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training set (or up to a stop); mean losses over all ranks and item count."""
        self.model.train()
        keys = self.task.loss_keys
        sums = torch.zeros(len(keys) + 1, dtype=accumulator_dtype(self.device), device=self.device)
        bar = self._batches(self.train_loader, epoch, f"{self.task.name} epoch {epoch}")
        show_loss = self.talks and self.device.type == "cpu"
        for batch in bar:
            if self.stopped:
                break
            batch = self._to_device(batch)
            try:
                losses = self.task.step(self.model, batch, self._context("train", self.steps))
                self._optimize(losses["loss"])
            except RuntimeError as exc:
                if self.cfg.deterministic and "deterministic" in str(exc):
                    reason = str(exc).splitlines()[0].split(", but you set")[0]
                    raise AmodalkitError(f"--deterministic: {reason}; train without --deterministic "
                                         "(docs/decisions.md, Determinism)") from exc
                raise
            self.steps += 1
            for hook in self.hooks:
                hook.after_step(self)
            sums += self._weighted(losses, keys, self.task.batch_items(batch))
            if show_loss:
                bar.set_postfix(loss=f"{float(losses['loss']):.4f}")
        bar.close()
        return self._means(sums, keys)

    @torch.no_grad()
    def evaluate_loss(self, epoch: int) -> dict[str, float]:
        """Mean losses of the scored weights over the validation set (and the ``select_by`` metric)."""
        self.model.eval()
        self.scored_net.eval()
        metric = SELECT_METRICS.get(self.cfg.select_by)
        keys = self.task.val_keys + ((f"{metric}_sum", f"{metric}_n") if metric else ())
        sums = torch.zeros(len(keys) + 1, dtype=accumulator_dtype(self.device), device=self.device)
        for i, batch in enumerate(self._batches(self.val_loader, epoch, "validate")):
            batch = self._to_device(batch)
            losses = self.task.step(self.scored_net, batch, self._context("val", i))
            if metric and f"{metric}_sum" not in losses:
                raise AmodalkitError(f"--select-by {self.cfg.select_by}: --model {self.task.name} does not "
                                     f"score {metric}")
            sums += self._weighted(losses, keys, self.task.batch_items(batch))
        means = self._means(sums, keys)
        if metric:
            if means[f"{metric}_n"] <= 0:
                raise AmodalkitError(f"--select-by {self.cfg.select_by}: no validation object-frame to score "
                                     "(do the --val shards hold annotated amodal masks?)")
            means[metric] = means.pop(f"{metric}_sum") / means.pop(f"{metric}_n")
        return means

    def _selection(self, train: dict[str, float], val: dict[str, float] | None) -> tuple[float, dict]:
        """The epoch's selection score (lower is better) and what the log records about the selection."""
        metric = SELECT_METRICS.get(self.cfg.select_by)
        if metric is None:
            return (val or train)["loss"], {}
        truth = self.cfg.select_by in GROUND_TRUTH_SELECTIONS
        return -val[metric], {f"val_{metric}": val[metric], "select_by": self.cfg.select_by,
                              "selection_uses_amodal_ground_truth": truth}

    def _commit(self, epoch: int, record: dict, is_best: bool) -> None:
        extra = {"epoch": epoch, "steps": self.steps, "val_loss": record.get("val_loss"),
                 "train_loss": record["train_loss"], "train": asdict(self.cfg)}
        state = {"optimizer": self.opt.state_dict(), "epoch": epoch, "steps": self.steps,
                 "best_loss": self.best[0], "best_epoch": self.best[1]}
        if "select_by" in record:
            metric = SELECT_METRICS[record["select_by"]]
            extra["selection"] = {"by": record["select_by"], "value": record[f"val_{metric}"],
                                  "uses_amodal_ground_truth": record["selection_uses_amodal_ground_truth"]}
            state |= {"select_by": record["select_by"], "best_val_loss": self.best_val_loss}
        for hook in self.hooks:
            state |= hook.state_dict(self)
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        net, log = self.scored_net, runlog.log_lines(self.out, epoch, record)
        writers = {"last.safetensors": lambda p: self.task.save(p, net, extra)}
        if is_best:
            writers["best.safetensors"] = lambda p: self.task.save(p, net, extra)
        writers[runlog.STATE] = lambda p: runlog.save_state(p, state)
        writers[runlog.LOG] = lambda p: runlog.write_text(p, log)
        runlog.commit_epoch(self.out, epoch, writers)

    def fit(self) -> dict:
        """Train from the start (or resumed) epoch to ``epochs`` or a hook's stop; return a summary."""
        for hook in self.hooks:
            hook.before_train(self)
        rate_key = f"train_{self.task.rate_name}_per_s"
        for epoch in range(self.start_epoch, self.cfg.epochs + 1):
            if self.stopped:
                break
            for hook in self.hooks:
                hook.before_epoch(self, epoch)
            if self.stopped:
                break
            t0 = time.perf_counter()
            train = self.train_epoch(epoch)
            t_train = time.perf_counter() - t0
            val = self.evaluate_loss(epoch) if self.val_loader is not None else None
            select, selection = self._selection(train, val)
            is_best = select < self.best[0]
            if is_best:
                self.best, self.best_val_loss = (select, epoch), (val or train)["loss"]
            record = {"epoch": epoch, **{f"train_{k}": train[k] for k in self.task.loss_keys},
                      "steps": self.steps, "time_s": round(time.perf_counter() - t0, 3),
                      rate_key: round(train["items"] / max(t_train, 1e-9), 3), "best": is_best}
            if val is not None:
                record |= {f"val_{k}": val[k] for k in self.task.val_keys}
            record |= selection
            for hook in self.hooks:
                hook.after_epoch(self, record)
            if self.info.main:
                self._commit(epoch, record, is_best)
            self.last_epoch = epoch
            barrier(self.info)
        by = self.cfg.select_by
        by_loss = by == "loss"
        return {"run_dir": str(self.out), "best_epoch": self.best[1],
                "best_loss": self.best[0] if by_loss else self.best_val_loss,
                "selected_on": "val" if self.val_set is not None else "train", "selected_by": by,
                "best_score": self.best[0] if by_loss else -self.best[0],
                "selection_uses_amodal_ground_truth": by in GROUND_TRUTH_SELECTIONS,
                "epochs": self.cfg.epochs, "last_epoch": self.last_epoch, "steps": self.steps,
                "stopped": self.stopped}

    def close(self) -> None:
        """Leave the process group when this run joined one."""
        if self._owns_group:
            close_distributed()


def train_model(cfg: TrainConfig, model_name: str, model_config: object, hooks: Sequence[Hook] = ()) -> dict:
    """Train `model_name` (single process, or one rank of a torchrun launch); return a summary."""
    trainer = Trainer(cfg, make_task(model_name, model_config), hooks)
    try:
        return trainer.fit()
    finally:
        trainer.close()
