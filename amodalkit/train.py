"""Self-supervised SaVos training (§E.2): Adam, lowest validation loss kept, resumable, DDP-ready.

A run folder holds::

    RUN_DIR/
      config.json            model config + training settings
      log.jsonl              one line per epoch: losses, time, throughput
      best.safetensors       lowest validation self-supervised loss (+ best.json)
      last.safetensors       the latest epoch (+ last.json)
      last.state.pt          optimizer state and epoch counters (tensors and plain data only)

With ``ema`` > 0 the checkpoints hold an exponential moving average of the weights (decay
``ema`` per step), which is also what validation scores; the raw weights a resume needs
go into ``last.state.pt``.

No amodal label is read: selection uses the self-supervised loss on the validation clips.
Started by ``torchrun --nproc_per_node N -m amodalkit train ...`` it trains with
DistributedDataParallel (NCCL on GPUs, gloo on CPUs); only rank 0 writes files.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from amodalkit.atomic import write_json
from amodalkit.checkpoint import load_state_strict, read_checkpoint
from amodalkit.datasets.clips import ClipConfig, ObjectClips, collate_clips
from amodalkit.errors import AmodalkitError
from amodalkit.models.savos import MODEL_NAME, SavosConfig, SavosNet, count_parameters, save_savos, savos_loss
from amodalkit.runlog import resumed_model_config, save_epoch_files

LOSS_KEYS = ("loss", "mask", "consistency", "horizon")


@dataclass
class TrainConfig:
    """Training settings (the model's own settings live in :class:`SavosConfig`)."""

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
    ema: float = 0.0
    resume: bool = False
    quiet: bool = False

    def validate(self) -> None:
        """Raise AmodalkitError on impossible settings."""
        if (self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.workers < 0 or self.threads < 0
                or self.schedule_epochs < 0):
            raise AmodalkitError("--epochs and --batch-size must be at least 1, --lr positive, "
                                 "--workers at least 0")
        if not 0.0 <= self.ema < 1.0:
            raise AmodalkitError(f"--ema must be a decay in [0, 1) (0 = off), got {self.ema}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise AmodalkitError(f"--lr-schedule must be constant or cosine, got {self.lr_schedule!r}")
        if self.precision not in ("fp32", "bf16"):
            raise AmodalkitError(f"--precision must be fp32 or bf16, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise AmodalkitError(f"--device must be auto, cpu or cuda, got {self.device!r}")


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a (possibly single-process) run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank, world size and local rank from the torchrun environment (single process otherwise)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def pick_device(name: str, info: DistInfo) -> torch.device:
    """auto: the local GPU when there is one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise AmodalkitError("--device cuda asked for, but no CUDA GPU is visible")
        return torch.device(name if ":" in name else f"cuda:{info.local_rank}")
    return torch.device("cpu")


def resolve_device(name: str) -> str:
    """auto | cpu | cuda[:i] -> a concrete torch device string for this process."""
    return str(pick_device(name, dist_info()))


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _reduce(sums: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.world > 1:
        dist.all_reduce(sums)
    return sums


class Trainer:
    """One training run: data, model, optimizer and the run folder."""

    def __init__(self, cfg: TrainConfig, model_config: SavosConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.info = dist_info()
        self.device = pick_device(cfg.device, self.info)
        self.out = Path(cfg.out)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        if self.info.world > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
            if self.device.type == "cpu" and cfg.threads <= 0:
                torch.set_num_threads(max(1, (os.cpu_count() or 1) // self.info.world))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.start_epoch = 1
        self.best = (float("inf"), 0)
        self._last_loss: float | None = None
        model_config = self._prepare_run_dir(model_config)
        self.model_config = model_config
        torch.manual_seed(cfg.seed)
        self.net = SavosNet(model_config).to(self.device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.ema: AveragedModel | None = None
        if cfg.ema > 0:
            self.ema = AveragedModel(self.net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema), use_buffers=True)
        if cfg.resume:
            self._load_last()
        self.model: torch.nn.Module = self.net
        if self.info.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.net, device_ids=ids)
        clip_cfg = ClipConfig(clip_len=model_config.clip_len, stride=cfg.clip_stride,
                              crop_size=model_config.crop_size, enlarge=model_config.enlarge,
                              crop_mode=model_config.crop_mode)
        quiet = cfg.quiet or not self.info.main
        self.train_set = ObjectClips(cfg.data, clip_cfg, quiet=quiet)
        self.val_set = ObjectClips(cfg.val, clip_cfg, quiet=quiet) if cfg.val else None
        if len(self.train_set) == 0:
            raise AmodalkitError("the training shards hold no object with visible pixels")

    def _prepare_run_dir(self, model_config: SavosConfig) -> SavosConfig:
        cfg = self.cfg
        cfg_path = self.out / "config.json"
        if cfg.resume:
            return resumed_model_config(self.out, MODEL_NAME, SavosConfig, model_config)
        if (self.out / "last.safetensors").exists():
            raise AmodalkitError("the run folder already holds a run; pass --resume or choose a new --out",
                                 self.out)
        if self.info.main:
            write_json(cfg_path, {"model": MODEL_NAME, "model_config": asdict(model_config),
                                  "train": asdict(cfg), "world_size": self.info.world})
        return model_config

    @property
    def scored_net(self) -> SavosNet:
        """The weights that are validated and saved: the moving average when ``ema`` is on."""
        return self.net if self.ema is None else self.ema.module

    def _load_last(self) -> None:
        ck = read_checkpoint(self.out / "last.safetensors", expect_model=MODEL_NAME)
        load_state_strict(self.scored_net, ck.state_dict, self.out / "last.safetensors")
        state_path = self.out / "last.state.pt"
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if (self.ema is not None) != ("raw_model" in state):
            raise AmodalkitError("--resume must keep the run's --ema setting (on or off)", state_path)
        if self.ema is not None:
            load_state_strict(self.net, state["raw_model"], state_path)
            self.ema.n_averaged.fill_(int(state["ema_steps"]))
        self.opt.load_state_dict(state["optimizer"])
        self.start_epoch = int(state["epoch"]) + 1
        self.best = (float(state["best_loss"]), int(state["best_epoch"]))

    def _loader(self, dataset: ObjectClips, shuffle: bool, epoch: int) -> DataLoader:
        sampler = DistributedSampler(dataset, num_replicas=self.info.world, rank=self.info.rank,
                                     shuffle=shuffle, seed=self.cfg.seed, drop_last=False)
        sampler.set_epoch(epoch)
        return DataLoader(dataset, batch_size=self.cfg.batch_size, sampler=sampler,
                          num_workers=self.cfg.workers, collate_fn=collate_clips,
                          worker_init_fn=worker_init, persistent_workers=False,
                          pin_memory=self.device.type == "cuda")

    def _autocast(self) -> torch.autocast:
        return autocast_for(self.device, self.cfg.precision)

    def _batches(self, loader: DataLoader, desc: str, show_loss: bool) -> Iterator[dict[str, torch.Tensor]]:
        bar = tqdm(loader, desc=desc, unit="batch", leave=False, disable=self.cfg.quiet or not self.info.main)
        self._last_loss = None
        for batch in bar:
            yield _to(batch, self.device)
            if show_loss and self._last_loss is not None:
                bar.set_postfix(loss=f"{self._last_loss:.4f}")

    def epoch_lr(self, epoch: int) -> float:
        """The learning rate of an epoch: constant, or cosine from ``lr`` towards 0 over ``epochs``.

        A function of the epoch alone, so a resumed run follows the same schedule;
        ``schedule_epochs`` (when set) is the schedule's length for runs extended epoch by epoch.
        """
        if self.cfg.lr_schedule == "constant":
            return self.cfg.lr
        length = self.cfg.schedule_epochs or self.cfg.epochs
        return self.cfg.lr * 0.5 * (1 + math.cos(math.pi * min(epoch - 1, length) / length))

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training clips; mean losses over all ranks."""
        self.model.train()
        for group in self.opt.param_groups:
            group["lr"] = self.epoch_lr(epoch)
        sums = torch.zeros(len(LOSS_KEYS) + 1, dtype=torch.float64)
        for batch in self._batches(self._loader(self.train_set, True, epoch), f"epoch {epoch}", True):
            with self._autocast():
                out = self.model(batch)
            losses = savos_loss({k: v.float() if v.is_floating_point() else v for k, v in out.items()},
                                batch, self.model_config)
            self.opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            self.opt.step()
            if self.ema is not None:
                self.ema.update_parameters(self.net)
            n = batch["valid"].shape[0]
            self._last_loss = float(losses["loss"].detach())
            sums += _weighted(losses, n)
        sums = _reduce(sums, self.info)
        return {k: float(sums[i] / sums[-1]) for i, k in enumerate(LOSS_KEYS)} | {"clips": int(sums[-1])}

    @torch.no_grad()
    def evaluate_loss(self, dataset: ObjectClips, epoch: int) -> dict[str, float]:
        """Mean self-supervised losses over a clip set (no labels)."""
        self.model.eval()
        self.scored_net.eval()
        sums = torch.zeros(len(LOSS_KEYS) + 1, dtype=torch.float64)
        for batch in self._batches(self._loader(dataset, False, epoch), "validate", False):
            with self._autocast():
                out = self.scored_net(batch)
            losses = savos_loss({k: v.float() if v.is_floating_point() else v for k, v in out.items()},
                                batch, self.model_config)
            n = batch["valid"].shape[0]
            sums += _weighted(losses, n)
        sums = _reduce(sums, self.info)
        return {k: float(sums[i] / sums[-1]) for i, k in enumerate(LOSS_KEYS)}

    def _save(self, epoch: int, record: dict, is_best: bool) -> None:
        extra = {"epoch": epoch, "val_loss": record.get("val_loss"), "train_loss": record["train_loss"],
                 "train": asdict(self.cfg)}
        save_savos(self.out / "last.safetensors", self.scored_net, extra)
        if is_best:
            save_savos(self.out / "best.safetensors", self.scored_net, extra)
        state = {"optimizer": self.opt.state_dict(), "epoch": epoch, "best_loss": self.best[0],
                 "best_epoch": self.best[1]}
        if self.ema is not None:
            state |= {"raw_model": self.net.state_dict(), "ema_steps": int(self.ema.n_averaged)}
        save_epoch_files(self.out, epoch, record, state)

    def fit(self) -> dict:
        """Train from the start (or the resumed) epoch to ``epochs``; return a summary."""
        if self.info.main and not self.cfg.quiet:
            tqdm.write(f"savos: {count_parameters(self.net) / 1e6:.2f} M parameters, "
                       f"{len(self.train_set)} training clips, device {self.device}, world {self.info.world}")
        for epoch in range(self.start_epoch, self.cfg.epochs + 1):
            t0 = time.perf_counter()
            train = self.train_epoch(epoch)
            t_train = time.perf_counter() - t0
            val = self.evaluate_loss(self.val_set, epoch) if self.val_set is not None else None
            select = (val or train)["loss"]
            is_best = select < self.best[0]
            if is_best:
                self.best = (select, epoch)
            record = {"epoch": epoch, "train_loss": train["loss"], "train_mask": train["mask"],
                      "train_consistency": train["consistency"], "train_horizon": train["horizon"],
                      "time_s": round(time.perf_counter() - t0, 3),
                      "train_clips_per_s": round(train["clips"] / t_train, 3), "best": is_best,
                      "lr": self.epoch_lr(epoch)}
            if val is not None:
                record |= {"val_loss": val["loss"], "val_mask": val["mask"],
                           "val_consistency": val["consistency"]}
            if self.info.main:
                self._save(epoch, record, is_best)
                if not self.cfg.quiet:
                    val_txt = f" val {val['loss']:.4f}" if val else ""
                    tqdm.write(f"epoch {epoch}: train {train['loss']:.4f}{val_txt} "
                               f"({record['time_s']:.1f} s){' *' if is_best else ''}")
            if self.info.world > 1:
                dist.barrier()
        return {"run_dir": str(self.out), "best_epoch": self.best[1], "best_loss": self.best[0],
                "selected_on": "val" if self.val_set is not None else "train", "epochs": self.cfg.epochs}

    def close(self) -> None:
        """Leave the process group (when this run joined one)."""
        if self.info.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _weighted(losses: dict[str, torch.Tensor], n: int) -> torch.Tensor:
    """(len(LOSS_KEYS) + 1,) float64: each loss times the batch size, then the batch size."""
    return torch.tensor([float(losses[k].detach()) * n for k in LOSS_KEYS] + [n], dtype=torch.float64)


def worker_init(worker_id: int) -> None:
    """DataLoader workers use one thread each, so they do not fight the training process for cores."""
    torch.set_num_threads(1)


def autocast_for(device: torch.device, precision: str) -> torch.autocast:
    """bfloat16 autocast on `device` when ``precision`` is bf16, a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train(cfg: TrainConfig, model_config: SavosConfig) -> dict:
    """Run a training (single process, or one rank of a torchrun launch); return a summary."""
    trainer = Trainer(cfg, model_config)
    try:
        return trainer.fit()
    finally:
        trainer.close()
