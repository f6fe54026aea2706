"""SaVos as an amodal method: batched clip inference over a video, optional TTA, paste back to frames."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from amodalkit.device import inference_autocast, is_cuda, to_device
from amodalkit.errors import AmodalkitError
from amodalkit.io.checkpoint import Checkpoint
from amodalkit.io.shards import Video
from amodalkit.models.base import AmodalMethod
from amodalkit.models.registry import ModelSpec, TableRow, register_model
from amodalkit.models.savos.config import MODEL_NAME, SavosConfig, config_from_train_options
from amodalkit.models.savos.loss import savos_step
from amodalkit.models.savos.net import SavosNet, inference_copy, load_savos, save_savos
from amodalkit.models.savos.tta import TTAConfig, TTAStats, adapt
from amodalkit.ops.boxes import ClipCrop
from amodalkit.ops.clip_cut import video_clip_batch
from amodalkit.ops.crops import keep_on_occluders, paste_clips


class SavosMethod(AmodalMethod):
    """A trained SaVos network as an amodal method: every clip of several videos in one batch.

    Each object is cut into clips of ``window`` frames (default: the training clip length;
    0 = the whole video) overlapping by half, cropped like training clips, predicted, pasted
    back to full resolution and averaged where windows overlap. :meth:`predict_videos` does
    all of it on the device, ``batch_size`` clips per forward (default 128 on CUDA and 16 per
    thread on a CPU, where larger batches run slower) through a channels-last copy of the network
    (:func:`inference_copy`, made once at construction, so a network changed afterwards needs
    a new method); callers hand it ``videos_per_batch`` videos at a time. With ``tta`` a copy
    of the network is first adapted to each video (§3.2), and each video is predicted on its own.

    With ``occluders_only`` (the official evaluation's paste rule; off by default, because
    scoring applies it to every method alike under ``--protocol official``) the prediction is
    kept only on pixels covered by the *other* objects' visible masks, the only place a hidden
    part can be; elsewhere the output is the object's own visible mask.
    """

    name = MODEL_NAME
    fields = ("frames", "flow", "flow_backward")

    def __init__(self, model: SavosNet | None = None, checkpoint: str | Path | None = None,
                 device: str | torch.device = "cpu", window: int | None = None, batch_size: int | None = None,
                 tta: TTAConfig | None = None, occluders_only: bool = False,
                 videos_per_batch: int = 16) -> None:
        if model is None:
            if checkpoint is None:
                raise AmodalkitError("the savos method needs a trained model: give a checkpoint")
            model = load_savos(checkpoint, device)
        self.model = model.to(device).eval()
        self.runner = inference_copy(self.model)
        self.device = torch.device(device)
        self.videos_per_batch = videos_per_batch
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.window = model.config.clip_len if window is None else window
        self.batch_size = batch_size
        self.tta = tta
        self.tta_stats = TTAStats()
        self.occluders_only = occluders_only

    def to_device(self, device: str | torch.device) -> None:
        """Move the network to `device` (a worker of one GPU takes its copy there)."""
        self.model, self.device = self.model.to(device), torch.device(device)
        self.runner = inference_copy(self.model)

    @property
    def window(self) -> int:
        """Frames per clip at inference (0 = the whole video)."""
        return self._window

    @window.setter
    def window(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise AmodalkitError(f"--window must be 0 (the whole video) or a positive frame count, "
                                 f"got {value!r}")
        self._window = value

    def with_tta(self, tta: TTAConfig | None) -> SavosMethod:
        """The same method with test-time adaptation switched on (or off with None)."""
        other = copy.copy(self)
        other.tta = tta
        other.tta_stats = TTAStats()
        return other

    def describe(self) -> dict:
        info = {"method": self.name, "checkpoint": self.checkpoint, "window": self.window,
                "occluders_only": self.occluders_only, "config": asdict(self.model.config)}
        if self.tta is not None:
            info["tta"] = {**asdict(self.tta), **self.tta_stats.summary()}
        return info

    def video_clips(self, video: Video) -> tuple[list[tuple[int, int, ClipCrop]],
                                                 dict[str, torch.Tensor] | None]:
        """Every (object, window start, crop box) with visible pixels, and their clips as one device batch."""
        cfg = self.model.config
        t = video.num_frames
        length = t if self.window == 0 else min(self.window, t)
        starts = list(range(0, t - length + 1, max(1, length // 2)))
        if starts[-1] != t - length:
            starts.append(t - length)
        return video_clip_batch(video, length, starts, cfg.crop_size, cfg.enlarge, cfg.crop_mode, self.device)

    def predict_clips(self, model: SavosNet, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Amodal probabilities of clips on the device, ``batch_size`` at a time: (N, L, h, w) float32.

        Runs under ``inference_mode`` with autocast on CUDA; nothing here waits for the device.
        """
        size = self.batch_size or (128 if is_cuda(self.device) else 16 * torch.get_num_threads())
        preds = []
        with torch.inference_mode(), inference_autocast(self.device):
            for i in range(0, batch["valid"].shape[0], size):
                part = {k: v[i:i + size] for k, v in batch.items()}
                preds.append(model(part)["prediction"].float())
        return torch.cat(preds)

    @torch.inference_mode()
    def paste(self, video: Video, where: list[tuple[int, int, ClipCrop]], preds: torch.Tensor) -> np.ndarray:
        """Clip predictions (N, L, h, w) pasted back and averaged, on the device -> (K, T, H, W) numpy."""
        boxes = torch.stack([crop.as_tensor() for _, _, crop in where])
        objects = torch.tensor([k for k, _, _ in where])
        starts = torch.tensor([s for _, s, _ in where])
        out = paste_clips(preds, boxes, objects, starts, (video.num_objects, video.num_frames, *video.size))
        if self.occluders_only:
            out = keep_on_occluders(out, to_device(video.visible_ids.astype(np.int32), preds.device))
        return out.cpu().numpy()

    def predict_video(self, video: Video) -> np.ndarray:
        return self.predict_videos([video])[0]

    def predict_videos(self, videos: Sequence[Video]) -> list[np.ndarray]:
        """Every clip of every video through the network together (per video with ``tta``)."""
        if self.tta is not None:
            return [self._predict_adapted(v) for v in videos]
        clips = [self.video_clips(v) for v in videos]
        by_length: dict[int, list[int]] = {}
        for i, (_, batch) in enumerate(clips):
            if batch is not None:
                by_length.setdefault(batch["valid"].shape[1], []).append(i)
        preds: dict[int, torch.Tensor] = {}
        for members in by_length.values():
            joint = {k: torch.cat([clips[i][1][k] for i in members]) for k in clips[members[0]][1]}
            out = self.predict_clips(self.runner, joint)
            preds.update(zip(members, out.split([len(clips[i][0]) for i in members])))
        return [self.paste(v, clips[i][0], preds[i]) if i in preds else _empty(v)
                for i, v in enumerate(videos)]

    def _predict_adapted(self, video: Video) -> np.ndarray:
        """One video with a copy of the network adapted to it first (§3.2)."""
        where, batch = self.video_clips(video)
        if batch is None:
            return _empty(video)
        model, iters, history = adapt(self.model, batch, self.tta)
        self.tta_stats.iterations.append(iters)
        self.tta_stats.visible_iou_before.append(history[0])
        self.tta_stats.visible_iou_after.append(history[-1])
        preds = self.predict_clips(model.to(memory_format=torch.channels_last), batch)
        return self.paste(video, where, preds)


def _empty(video: Video) -> np.ndarray:
    """An all-zero prediction: (K, T, H, W) float32."""
    return np.zeros((video.num_objects, video.num_frames, *video.size), np.float32)


def method_from_savos_checkpoint(ck: Checkpoint, path: str | Path, device: str = "cpu") -> SavosMethod:
    """A :class:`SavosMethod` from a checkpoint already read (used by the registry)."""
    return SavosMethod(load_savos(ck, device, path), checkpoint=path, device=device)


register_model(ModelSpec(
    name=MODEL_NAME, summary="SaVos: self-supervised amodal video segmentation (+ test-time adaptation)",
    method=SavosMethod,
    table=(TableRow(MODEL_NAME, "SaVos", paper=(0.9746, 0.8046)),),
    config=SavosConfig, build_config=config_from_train_options, net=SavosNet, step=savos_step,
    save=save_savos, load=method_from_savos_checkpoint,
    data="clips", loss_keys=("loss", "mask", "consistency", "horizon", "photometric"),
    val_keys=("loss", "mask", "consistency"),
))
