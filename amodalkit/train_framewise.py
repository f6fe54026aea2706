"""Training of the per-frame baselines: Self-Deocclusion (self-supervised) and the supervised U-Net.

Same run folder contract as SaVos's trainer (:mod:`amodalkit.train`)::

    RUN_DIR/
      config.json            model name, model config, training settings, max_steps
      log.jsonl              one line per epoch: losses, steps, time, throughput
      best.safetensors       lowest validation loss (+ best.json)
      last.safetensors       the latest epoch (+ last.json)
      last.state.pt          optimizer state and counters (tensors and plain data only)

Items are object-frame crops (:class:`amodalkit.datasets.frame_crops.FrameCrops`).
Self-Deocclusion never reads an amodal mask: it is trained and selected on its
self-supervised loss. The U-Net reads the amodal ground truth for training and selection.
Training stops after ``epochs`` epochs or ``max_steps`` optimizer steps in all, whichever
comes first (0 = no step cap); an epoch cut short by the cap is validated and saved, and a
resumed run continues with the next epoch. Runs are deterministic for a seed: the data order
is seeded per epoch and the surrogate occluders per step, so a resumed run matches an
uninterrupted one. One process (no torchrun).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler, SequentialSampler
from tqdm import tqdm

from amodalkit.atomic import write_json
from amodalkit.checkpoint import load_state_strict, read_checkpoint
from amodalkit.datasets.frame_crops import FrameCropConfig, FrameCrops
from amodalkit.errors import AmodalkitError
from amodalkit.models.baselines import deocclusion, unet
from amodalkit.models.baselines.framewise import (
    FramewiseConfig,
    FramewiseNet,
    count_parameters,
    save_framewise,
)
from amodalkit.runlog import resumed_model_config, save_epoch_files
from amodalkit.train import TrainConfig, autocast_for, dist_info, pick_device, worker_init

#: loss(net, batch, generator) -> scalar tensor
LossFn = Callable[[FramewiseNet, dict[str, torch.Tensor], torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class FramewiseModel:
    """What the trainer needs of a per-frame model: its config and network classes, loss, labels."""

    config_class: type[FramewiseConfig]
    net_class: type[FramewiseNet]
    loss: LossFn
    needs_amodal: bool


FRAMEWISE_MODELS: dict[str, FramewiseModel] = {
    deocclusion.MODEL_NAME: FramewiseModel(deocclusion.DeocclusionConfig, deocclusion.DeocclusionNet,
                                           deocclusion.deocclusion_loss, deocclusion.NEEDS_AMODAL),
    unet.MODEL_NAME: FramewiseModel(unet.UNetConfig, unet.UNet, unet.unet_loss, unet.NEEDS_AMODAL),
}


def _generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from a key such as (seed, phase, step)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(key)).generate_state(1)[0]))


class FramewiseTrainer:
    """One training run of a per-frame baseline: data, network, optimizer and the run folder."""

    def __init__(self, cfg: TrainConfig, model_name: str, model_config: FramewiseConfig,
                 max_steps: int = 0) -> None:
        cfg.validate()
        if model_name not in FRAMEWISE_MODELS:
            raise AmodalkitError(f"unknown per-frame model {model_name!r}; choose from "
                                 f"{', '.join(sorted(FRAMEWISE_MODELS))}")
        self.spec = FRAMEWISE_MODELS[model_name]
        if type(model_config) is not self.spec.config_class:
            raise AmodalkitError(f"--model {model_name} needs a {self.spec.config_class.__name__}, "
                                 f"got {type(model_config).__name__}")
        if max_steps < 0:
            raise AmodalkitError("--max-steps must be 0 (no cap) or positive")
        if dist_info().world > 1:
            raise AmodalkitError(f"--model {model_name} trains in one process; start it without torchrun")
        self.cfg = cfg
        self.model_name = model_name
        self.max_steps = max_steps
        self.device = pick_device(cfg.device, dist_info())
        self.out = Path(cfg.out)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.start_epoch, self.steps = 1, 0
        self.best = (float("inf"), 0)
        self.model_config = self._prepare_run_dir(model_config)
        torch.manual_seed(cfg.seed)
        self.net = self.spec.net_class(self.model_config).to(self.device).to_channels_last()
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        if cfg.resume:
            self._load_last()
        crops = FrameCropConfig(crop_size=self.model_config.crop_size, enlarge=self.model_config.enlarge,
                                with_image=self.model_config.use_image, with_amodal=self.spec.needs_amodal)
        self.train_set = FrameCrops(cfg.data, crops, quiet=cfg.quiet)
        self.val_set = FrameCrops(cfg.val, crops, quiet=cfg.quiet) if cfg.val else None
        need = "an annotated amodal mask" if self.spec.needs_amodal else "visible pixels"
        sets = (("training", cfg.data, self.train_set), ("validation", cfg.val, self.val_set))
        for name, paths, dataset in sets:
            if dataset is not None and len(dataset) == 0:
                raise AmodalkitError(f"the {name} shards hold no object-frame with {need}",
                                     paths[0] if len(paths) == 1 else None)

    def _prepare_run_dir(self, model_config: FramewiseConfig) -> FramewiseConfig:
        cfg = self.cfg
        cfg_path = self.out / "config.json"
        if cfg.resume:
            return resumed_model_config(self.out, self.model_name, self.spec.config_class, model_config)
        if (self.out / "last.safetensors").exists():
            raise AmodalkitError("the run folder already holds a run; pass --resume or choose a new --out",
                                 self.out)
        write_json(cfg_path, {"model": self.model_name, "model_config": asdict(model_config),
                              "train": asdict(cfg), "max_steps": self.max_steps})
        return model_config

    def _load_last(self) -> None:
        path = self.out / "last.safetensors"
        ck = read_checkpoint(path, expect_model=self.model_name)
        load_state_strict(self.net, ck.state_dict, path)
        state = torch.load(self.out / "last.state.pt", map_location="cpu", weights_only=True)
        self.opt.load_state_dict(state["optimizer"])
        self.start_epoch = int(state["epoch"]) + 1
        self.steps = int(state["steps"])
        self.best = (float(state["best_loss"]), int(state["best_epoch"]))

    def _loader(self, dataset: Dataset, shuffle: bool, epoch: int) -> DataLoader:
        sampler = (RandomSampler(dataset, generator=_generator(self.cfg.seed, 2, epoch)) if shuffle
                   else SequentialSampler(dataset))
        return DataLoader(dataset, batch_size=self.cfg.batch_size, sampler=sampler,
                          num_workers=self.cfg.workers, worker_init_fn=worker_init,
                          pin_memory=self.device.type == "cuda")

    def _autocast(self) -> torch.autocast:
        return autocast_for(self.device, self.cfg.precision)

    def _to(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if k not in ("box", "key")}

    def _capped(self) -> bool:
        return 0 < self.max_steps <= self.steps

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training crops (or up to the step cap); mean loss and item count."""
        self.net.train()
        total, n = 0.0, 0
        bar = tqdm(self._loader(self.train_set, True, epoch), desc=f"{self.model_name} epoch {epoch}",
                   unit="batch", leave=False, disable=self.cfg.quiet)
        for batch in bar:
            if self._capped():
                break
            batch = self._to(batch)
            with self._autocast():
                loss = self.spec.loss(self.net, batch, _generator(self.cfg.seed, 0, self.steps))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.steps += 1
            size = batch["visible"].shape[0]
            total += float(loss.detach()) * size
            n += size
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        bar.close()
        return {"loss": total / max(n, 1), "items": n}

    @torch.no_grad()
    def evaluate_loss(self, dataset: Dataset) -> float:
        """Mean loss over a crop set, with the same surrogate occluders every time it is called."""
        self.net.eval()
        total, n = 0.0, 0
        bar = tqdm(self._loader(dataset, False, 0), desc="validate", unit="batch", leave=False,
                   disable=self.cfg.quiet)
        for i, batch in enumerate(bar):
            batch = self._to(batch)
            with self._autocast():
                loss = self.spec.loss(self.net, batch, _generator(self.cfg.seed, 1, i))
            size = batch["visible"].shape[0]
            total += float(loss) * size
            n += size
        return total / max(n, 1)

    def _save(self, epoch: int, record: dict, is_best: bool) -> None:
        extra = {"epoch": epoch, "steps": self.steps, "val_loss": record.get("val_loss"),
                 "train_loss": record["train_loss"], "train": asdict(self.cfg)}
        save_framewise(self.out / "last.safetensors", self.model_name, self.net, extra)
        if is_best:
            save_framewise(self.out / "best.safetensors", self.model_name, self.net, extra)
        state = {"optimizer": self.opt.state_dict(), "epoch": epoch, "steps": self.steps,
                 "best_loss": self.best[0], "best_epoch": self.best[1]}
        save_epoch_files(self.out, epoch, record, state)

    def fit(self) -> dict:
        """Train from the start (or resumed) epoch to ``epochs`` or the step cap; return a summary."""
        if not self.cfg.quiet:
            tqdm.write(f"{self.model_name}: {count_parameters(self.net) / 1e6:.3f} M parameters, "
                       f"{len(self.train_set)} training object-frames, device {self.device}")
        for epoch in range(self.start_epoch, self.cfg.epochs + 1):
            if self._capped():
                break
            t0 = time.perf_counter()
            train = self.train_epoch(epoch)
            t_train = time.perf_counter() - t0
            val = self.evaluate_loss(self.val_set) if self.val_set is not None else None
            select = train["loss"] if val is None else val
            is_best = select < self.best[0]
            if is_best:
                self.best = (select, epoch)
            record = {"epoch": epoch, "train_loss": train["loss"], "steps": self.steps,
                      "time_s": round(time.perf_counter() - t0, 3),
                      "train_items_per_s": round(train["items"] / max(t_train, 1e-9), 3), "best": is_best}
            if val is not None:
                record["val_loss"] = val
            self._save(epoch, record, is_best)
            if not self.cfg.quiet:
                val_txt = f" val {val:.4f}" if val is not None else ""
                tqdm.write(f"epoch {epoch}: train {train['loss']:.4f}{val_txt} "
                           f"({record['time_s']:.1f} s, step {self.steps}){' *' if is_best else ''}")
        return {"run_dir": str(self.out), "best_epoch": self.best[1], "best_loss": self.best[0],
                "selected_on": "val" if self.val_set is not None else "train", "epochs": self.cfg.epochs,
                "steps": self.steps}


#: SaVos-only ``amodalkit train`` options and the values that mean "not given"
_SAVOS_DEFAULTS = {"preset": "paper", "clip_stride": 0}


def build_framewise_config(model_name: str, crop: str | tuple[int, int] | None = None,
                           channels: str | tuple[int, ...] | None = None, enlarge: float | None = None,
                           no_image: bool = False, **savos_options: object) -> FramewiseConfig:
    """The model's default config with CLI-style overrides (``crop`` "HxW", ``channels`` "a,b,c").

    SaVos-only options are accepted only at their "not given" values (None, False, or the
    CLI default), so ``amodalkit train --model unet --hidden 64`` fails instead of being ignored.
    """
    if model_name not in FRAMEWISE_MODELS:
        raise AmodalkitError(f"unknown per-frame model {model_name!r}; choose from "
                             f"{', '.join(sorted(FRAMEWISE_MODELS))}")
    given = sorted(k for k, v in savos_options.items()
                   if v is not None and v is not False and v != _SAVOS_DEFAULTS.get(k))
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise AmodalkitError(f"{flags}: SaVos option(s), not for --model {model_name} "
                             "(it takes --crop, --channels, --enlarge, --no-image and --max-steps)")
    changes: dict[str, object] = {}
    try:
        if crop is not None:
            changes["crop_size"] = (tuple(int(v) for v in crop.lower().split("x")) if isinstance(crop, str)
                                    else crop)
        if channels is not None:
            changes["channels"] = (tuple(int(v) for v in channels.split(",")) if isinstance(channels, str)
                                   else channels)
    except ValueError as exc:
        raise AmodalkitError(f"--crop must look like 32x32 and --channels like 8,16,32,64 ({exc})") from exc
    if enlarge is not None:
        changes["enlarge"] = enlarge
    if no_image:
        changes["use_image"] = False
    return FRAMEWISE_MODELS[model_name].config_class(**changes)


def train_framewise(cfg: TrainConfig, model_name: str, model_config: FramewiseConfig,
                    max_steps: int = 0) -> dict:
    """Train the per-frame baseline `model_name` ("deocclusion" or "unet"); return a summary."""
    return FramewiseTrainer(cfg, model_name, model_config, max_steps).fit()
