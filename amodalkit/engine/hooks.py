"""Parts of the training loop every model gets: LR schedule, step cap, weight average, time budget, log.

A hook sees the :class:`~amodalkit.engine.trainer.Trainer` at fixed points of the loop
(before training, before each epoch, after each optimizer step, after each epoch before its
commit). It stops the run with ``trainer.stop(reason)``; what it must remember across a
``--resume`` goes into ``last.state.pt`` through :meth:`Hook.state_dict`.
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn
from tqdm import tqdm

from amodalkit.io.checkpoint import load_state_strict

if TYPE_CHECKING:
    from amodalkit.engine.trainer import TrainConfig, Trainer


class Hook:
    """A part of the loop; every method is optional."""

    def before_train(self, trainer: Trainer) -> None:
        """Once, after resume and before the first epoch."""

    def before_epoch(self, trainer: Trainer, epoch: int) -> None:
        """Before an epoch starts (``trainer.stop`` here skips it)."""

    def after_step(self, trainer: Trainer) -> None:
        """After each optimizer step (``trainer.steps`` already counts it)."""

    def after_epoch(self, trainer: Trainer, record: dict) -> None:
        """After an epoch's validation, before its files are committed; may add to `record`."""

    def state_dict(self, trainer: Trainer) -> dict:
        """Entries this hook adds to ``last.state.pt``."""
        return {}

    def load_state_dict(self, trainer: Trainer, state: dict) -> None:
        """Restore from a ``last.state.pt`` being resumed."""


def epoch_lr(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of an epoch: constant, cosine from ``lr`` towards 0 over ``epochs``, or step.

    A function of the epoch alone, so a resumed run follows the same schedule;
    ``schedule_epochs`` (when set) is the cosine's length for runs extended epoch by epoch.
    ``step`` multiplies ``lr`` by ``lr_gamma`` every ``lr_step_epochs`` epochs, as torch's
    ``StepLR`` stepped once per epoch does (epochs 1..step at ``lr``).
    """
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_gamma ** ((epoch - 1) // cfg.lr_step_epochs)
    length = cfg.schedule_epochs or cfg.epochs
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(epoch - 1, length) / length))


class LRSchedule(Hook):
    """Sets every parameter group's learning rate at the start of each epoch (:func:`epoch_lr`)."""

    def before_epoch(self, trainer: Trainer, epoch: int) -> None:
        for group in trainer.opt.param_groups:
            group["lr"] = epoch_lr(trainer.cfg, epoch)

    def after_epoch(self, trainer: Trainer, record: dict) -> None:
        record["lr"] = epoch_lr(trainer.cfg, record["epoch"])


class StepCap(Hook):
    """Stops after ``max_steps`` optimizer steps in all (the epoch under way still validates and saves)."""

    def __init__(self, max_steps: int) -> None:
        self.max_steps = max_steps

    def before_train(self, trainer: Trainer) -> None:
        if trainer.steps >= self.max_steps:
            trainer.stop("max steps")

    def after_step(self, trainer: Trainer) -> None:
        if trainer.steps >= self.max_steps:
            trainer.stop("max steps")


class WeightAverage(Hook):
    """An exponential moving average of the weights and buffers (decay per step), as ``AveragedModel``.

    The average is what validation scores and the checkpoints hold; the raw weights a resume
    needs go into ``last.state.pt`` (``raw_model``, ``ema_steps``). The step count is a
    Python int, so an update never waits on the device.
    """

    def __init__(self, decay: float, net: nn.Module) -> None:
        self.decay = decay
        self.module = copy.deepcopy(net)
        self.module.requires_grad_(False)
        self.steps = 0
        self._avg = get_ema_multi_avg_fn(decay)

    @torch.no_grad()
    def update(self, net: nn.Module) -> None:
        """Fold `net`'s current weights and buffers into the average."""
        ema = [t.detach() for t in itertools.chain(self.module.parameters(), self.module.buffers())]
        cur = [t.detach() for t in itertools.chain(net.parameters(), net.buffers())]
        if self.steps == 0:
            for a, b in zip(ema, cur, strict=True):
                a.copy_(b)
        else:
            groups: dict[tuple[torch.device, torch.dtype], tuple[list, list]] = {}
            for a, b in zip(ema, cur, strict=True):
                pair = groups.setdefault((a.device, a.dtype), ([], []))
                pair[0].append(a)
                pair[1].append(b)
            for averaged, current in groups.values():
                self._avg(averaged, current, None)
        self.steps += 1

    def after_step(self, trainer: Trainer) -> None:
        self.update(trainer.net)

    def state_dict(self, trainer: Trainer) -> dict:
        return {"raw_model": trainer.net.state_dict(), "ema_steps": self.steps}

    def load_state_dict(self, trainer: Trainer, state: dict) -> None:
        load_state_strict(trainer.net, state["raw_model"], trainer.state_path)
        self.steps = int(state["ema_steps"])


class TimeBudget(Hook):
    """Starts no epoch that the mean epoch time so far says would end past ``seconds`` (0 = no budget).

    The seconds spent and epochs run are kept in ``last.state.pt``, so a resumed run keeps
    counting the same budget.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.spent = 0.0
        self.epochs = 0
        self._t0 = 0.0

    def before_epoch(self, trainer: Trainer, epoch: int) -> None:
        if self.seconds and self.epochs and self.spent + self.spent / self.epochs > self.seconds:
            trainer.stop("time budget")
        self._t0 = time.perf_counter()

    def after_epoch(self, trainer: Trainer, record: dict) -> None:
        self.spent += time.perf_counter() - self._t0
        self.epochs += 1

    def state_dict(self, trainer: Trainer) -> dict:
        return {"time_budget": {"spent": self.spent, "epochs": self.epochs}}

    def load_state_dict(self, trainer: Trainer, state: dict) -> None:
        if "time_budget" in state:
            saved = state["time_budget"]
            self.spent, self.epochs = float(saved["spent"]), int(saved["epochs"])


class ProgressLog(Hook):
    """One line per epoch (and one at the start) on rank 0, unless ``quiet``."""

    def before_train(self, trainer: Trainer) -> None:
        if trainer.talks:
            params = sum(p.numel() for p in trainer.net.parameters() if p.requires_grad)
            task, info = trainer.task, trainer.info
            tqdm.write(f"{task.name}: {params / 1e6:.3f} M parameters, {len(trainer.train_set)} training "
                       f"{task.item_label}, device {trainer.device}, world {info.world}")

    def after_epoch(self, trainer: Trainer, record: dict) -> None:
        if trainer.talks:
            val = f" val {record['val_loss']:.4f}" if "val_loss" in record else ""
            for key in ("val_amodal_iou", "val_visible_iou"):
                if key in record:
                    truth = " (amodal ground truth)" if key == "val_amodal_iou" else ""
                    val += f" {key.removeprefix('val_').replace('_', ' ')}{truth} {record[key]:.4f}"
            tqdm.write(f"epoch {record['epoch']}: train {record['train_loss']:.4f}{val} "
                       f"({record['time_s']:.1f} s, step {record['steps']}){' *' if record['best'] else ''}")
