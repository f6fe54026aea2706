"""PointTrack (Xu et al., ECCV 2020) inference in plain PyTorch, loading the official released weights.

PointTrack segments each frame with a seed network (SpatialEmbeddings' ERFNet with two
decoders), clusters the seeds into instance masks, samples each instance as a point cloud
(foreground colours and offsets, plus background points of its enlarged box) and embeds it
with a point network; instances are linked frame to frame by embedding distance and mask
IoU. Everything here is reimplemented from the facts of ``detectRecog/PointTrack`` (layer
shapes, key names, constants); no official code is used or needed.

Weights (from the links in the official README; they come under that repository's CC BY-NC
4.0 licence, so non-commercial use only)::

    best_seed_model.pthCar   segmenter, cars: {'model_state_dict': ..., 'epoch', 'optim_state_dict', ...}
                             433 keys 'module.encoder.*', 'module.decoders.{0,1}.*' (2,252,838 parameters)
    PointTrack.pthCar        tracker, cars: the same dict layout, 104 keys 'module.point_feat.*'
                             (1,419,809 parameters)

Both were saved by torch 1.3 through DataParallel (hence ``module.``); a bare state dict,
with or without ``module.``, loads too. Files are read with ``torch.load(weights_only=True)``
(tensors and plain values only, never code), and every key name and shape is checked
against the network, built on the meta device, before anything is loaded.

Public API:

* :func:`load_segmenter` ``(path, device="cpu")`` -> a module mapping ``(N, 3, H, W)`` RGB in
  [0, 1] (any H, W; padding is handled inside) to the raw ``(N, 5, H, W)`` output: x, y
  offset logits, two sigmas, the seed logit;
* :func:`cluster` ``(output)`` -> a list of :class:`Detection` ``(mask, score)``, the (H, W)
  bool instance masks of one frame;
* :func:`load_tracker` ``(path, device="cpu")`` -> a module mapping points ``(N, 1500, 8)``
  and boxes ``(N, 4)`` (from :func:`instance_points`) to ``(N, 32)`` embeddings;
* :class:`PointTrackTracker` -> the online association of embeddings and masks into track ids;
* :func:`track_video` ``(frames, segmenter, tracker, class_id=1)`` -> per frame a list of
  ``formats.Instance(track_id, class_id, mask)``, the structure the track readers return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from tqdm import tqdm

from amodalkit.errors import AmodalkitError
from amodalkit.io.torch_files import load_error_reason, load_plain, state_dict_mismatch
from amodalkit.preprocess.tracks.formats import FrameInstances, Instance
from amodalkit.preprocess.tracks.pointtrack_nets import (
    EMBEDDING_DIM,
    OFFICIAL_PAD,
    PointTrackSegmenter,
    TrackerNet,
)
from amodalkit.preprocess.tracks.pointtrack_track import (
    CAR,
    MIN_PIXELS,
    PEDESTRIAN,
    SEED_THRESHOLD,
    AssociationConfig,
    Detection,
    PointTrackTracker,
    cluster,
    instance_points,
)

__all__ = [
    "CAR",
    "PEDESTRIAN",
    "AssociationConfig",
    "Detection",
    "PointTrackSegmenter",
    "PointTrackTracker",
    "TrackerNet",
    "cluster",
    "instance_points",
    "load_segmenter",
    "load_tracker",
    "segment",
    "track_video",
]

M = TypeVar("M", bound=torch.nn.Module)

SEGMENTER_FILE = "best_seed_model.pthCar"
TRACKER_FILE = "PointTrack.pthCar"


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """The ``model_state_dict`` (or bare state dict) of a checkpoint, ``module.`` stripped."""
    path = Path(path)
    if not path.is_file():
        raise AmodalkitError(f"PointTrack {what} checkpoint not found (download {SEGMENTER_FILE} and "
                             f"{TRACKER_FILE} from the links in the detectRecog/PointTrack README)", path)
    try:
        obj = load_plain(path)
    except Exception as exc:  # a damaged or foreign file can fail in any way; weights_only keeps it safe
        raise AmodalkitError(f"not a readable PyTorch checkpoint of tensors and plain values "
                             f"({load_error_reason(exc)})", path) from exc
    state = obj.get("model_state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise AmodalkitError(f"not a PointTrack {what} checkpoint: expected a dict with a "
                             f"'model_state_dict' of tensors, or a bare state dict", path)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def build_from_state(factory: Callable[[], M], state: dict[str, torch.Tensor], path: str | Path,
                     what: str, device: str | torch.device) -> M:
    """Build ``factory()`` on the meta device, check names, shapes and values, then load `state` into it."""
    with torch.device("meta"):
        model = factory()
    expected = model.state_dict()
    mismatch = state_dict_mismatch(expected, state)
    if mismatch:
        hint = {"segmenter": f" (is this the tracker, {TRACKER_FILE}?)",
                "tracker": f" (is this the segmenter, {SEGMENTER_FILE}?)"}[what]
        raise AmodalkitError(f"not a PointTrack {what} checkpoint: {mismatch}{hint}", path)
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise AmodalkitError(f"PointTrack {what} weight {bad[0]!r} holds NaN or infinite values", path)
    model.load_state_dict({k: state[k].to(v.dtype).contiguous() for k, v in expected.items()}, assign=True)
    return model.to(device).eval()


def load_segmenter(path: str | Path, device: str | torch.device = "cpu",
                   pad_to: tuple[int, int] | None = OFFICIAL_PAD) -> PointTrackSegmenter:
    """The seed network from ``best_seed_model.pthCar`` (or a state dict), in eval mode on `device`."""
    state = read_state_dict(path, "segmenter")
    model = build_from_state(lambda: PointTrackSegmenter(pad_to), state, path, "segmenter", device)
    return model.to(memory_format=torch.channels_last)


def load_tracker(path: str | Path, device: str | torch.device = "cpu") -> TrackerNet:
    """The point-cloud embedding network from ``PointTrack.pthCar`` (or a state dict), in eval mode."""
    return build_from_state(TrackerNet, read_state_dict(path, "tracker"), path, "tracker", device)


def _device_of(module: torch.nn.Module) -> torch.device:
    """Where `module`'s weights live."""
    return next(module.parameters()).device


def _check_frame(frame: np.ndarray, t: int) -> np.ndarray:
    """A frame as ``(H, W, 3)`` uint8 RGB, or an AmodalkitError naming its index."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise AmodalkitError(f"frame {t}: expected (H, W, 3) uint8 RGB, got {frame.dtype} {frame.shape}")
    return frame


def segment(frame: np.ndarray, segmenter: torch.nn.Module, threshold: float = SEED_THRESHOLD,
            min_pixels: int = MIN_PIXELS) -> list[Detection]:
    """Instance masks of one ``(H, W, 3)`` uint8 RGB frame: segmenter forward, then :func:`cluster`."""
    frame = _check_frame(frame, 0)
    x = torch.from_numpy(frame).to(_device_of(segmenter)).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        output = segmenter(x.contiguous(memory_format=torch.channels_last))
    return cluster(output[0], threshold, min_pixels)


def track_video(frames: np.ndarray | Iterable[np.ndarray], segmenter: torch.nn.Module,
                tracker: torch.nn.Module, class_id: int = 1, config: AssociationConfig = CAR,
                threshold: float = SEED_THRESHOLD, min_pixels: int = MIN_PIXELS, seed: int = 0,
                quiet: bool = True) -> FrameInstances:
    """Segment and track a video: frames ``(T, H, W, 3)`` uint8 RGB -> per frame ``Instance`` lists.

    Track ids start at 1 in order of birth; every instance gets `class_id` (1, car, for the
    released weights). Points are drawn from ``np.random.RandomState(seed)``, as the official
    test run does with seed 0, so a run is reproducible. Masks of a frame are disjoint.
    """
    rng = np.random.RandomState(seed)
    linker = PointTrackTracker(config)
    device = _device_of(tracker)
    out: FrameInstances = []
    for t, frame in enumerate(tqdm(frames, desc="pointtrack", unit="frame", disable=quiet)):
        frame = _check_frame(frame, t)
        masks = [d.mask for d in segment(frame, segmenter, threshold, min_pixels)]
        embeddings = np.zeros((0, EMBEDDING_DIM), np.float32)
        if masks:
            points, boxes = instance_points(frame, masks, rng)
            with torch.inference_mode():
                emb = tracker(torch.from_numpy(points).to(device), torch.from_numpy(boxes).to(device))
            embeddings = emb.float().cpu().numpy()
        ids = linker.step(t, embeddings, masks)
        out.append([Instance(i, class_id, m) for i, m in zip(ids, masks)])
    return out


def segment_video(frames: np.ndarray | Iterable[np.ndarray], segmenter: torch.nn.Module, class_id: int = 1,
                  threshold: float = SEED_THRESHOLD, min_pixels: int = MIN_PIXELS,
                  quiet: bool = True) -> FrameInstances:
    """Per-frame instances of a video without tracking (ids 1..n within each frame, for a linker)."""
    out: FrameInstances = []
    for t, frame in enumerate(tqdm(frames, desc="pointtrack", unit="frame", disable=quiet)):
        masks = [d.mask for d in segment(_check_frame(frame, t), segmenter, threshold, min_pixels)]
        out.append([Instance(i + 1, class_id, m) for i, m in enumerate(masks)])
    return out
