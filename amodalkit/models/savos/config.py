"""SaVos settings: the network, loss and warp switches, the presets, and building them from CLI options."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from amodalkit.errors import AmodalkitError
from amodalkit.io.checkpoint import config_from_dict

MODEL_NAME = "savos"


PAPER_CHANNELS = (32, 64, 128, 256, 256, 512)


ABLATIONS = ("no_consistency", "no_bidirectional", "no_temporal", "no_flow", "no_image")


MAX_CROP_SIDE = 1024


MAX_CHANNELS = 4096


WARPS = ("splat", "sample", "official")


#: the ``official`` preset's training-loop settings (``amodalkit train`` options), FISHBOWL's
#: values; KINS-Video-Car overrides them (docs/decisions.md, the ``official`` preset)
OFFICIAL_TRAIN = {"batch_size": 12, "epochs": 20, "lr": 1e-4, "lr_schedule": "step", "lr_step_epochs": 20,
                  "lr_gamma": 0.5, "clip_stride": 1, "clips_per_object": 1, "select_by": "val_amodal_iou"}


@dataclass(frozen=True)
class SavosConfig:
    """Architecture, input geometry, loss weights and the Table 2 ablation switches.

    The encoders have one stride-2 layer per halving of the crop down to 4x8, then the
    paper's (3,4)/(1,2) layer and a final 4x4 layer, so ``channels`` needs
    log2(crop_h / 4) + 2 entries; (64, 128) with 32..512 is the paper's §E.1 network. The
    decoders mirror the encoders with transposed convolutions. ``width`` multiplies every
    channel count; smaller crops make the network shallower. Square crops (an extension for
    square objects) replace the (3,4)/(1,2) layer by a 3x3 stride-1 one. ``crop_mode`` picks
    one box per clip (``clip``) or a box that follows the object (``track``, see
    :class:`amodalkit.ops.boxes.ClipCrop`); ``clip_len`` 0 trains on whole videos.

    The fields after ``no_image`` follow the released training scripts (the ``official``
    preset); their defaults are the ``paper`` behaviour: ``mask_reduction`` ``mean`` or
    ``sum`` of the BCE over pixels; ``consistency_mode`` ``paper`` (each direction's
    completion against its warped prediction) or ``cumulative`` (the blend warped one frame
    on, cumulated over time); ``lambda_photometric`` the weight of the masked L1 between
    warped and next image; ``completor_input`` what CNN_a reads (``visible`` = V_t, or
    ``flow_x``, the horizontal flow, as the released code does); ``motion_base`` the flow
    the residual motion is added to (``mean`` visible flow everywhere, or ``visible_flow``:
    the flow itself on visible pixels); ``leaky_slope`` the LeakyReLU slope.
    """

    crop_size: tuple[int, int] = (64, 128)
    channels: tuple[int, ...] = PAPER_CHANNELS
    width: float = 1.0
    hidden: int = 256
    clip_len: int = 10
    enlarge: float = 1.5
    crop_mode: str = "clip"
    lambda_mask: float = 1.0
    lambda_consistency: float = 1.0
    horizon: int = 1
    lambda_horizon: float = 1.0
    mask_feedback: bool = False
    skips: bool = False
    warp: str = "splat"
    no_consistency: bool = False
    no_bidirectional: bool = False
    no_temporal: bool = False
    no_flow: bool = False
    no_image: bool = False
    mask_reduction: str = "mean"
    consistency_mode: str = "paper"
    lambda_photometric: float = 0.0
    completor_input: str = "visible"
    motion_base: str = "mean"
    leaky_slope: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_size", tuple(int(v) for v in self.crop_size))
        object.__setattr__(self, "channels", tuple(int(v) for v in self.channels))
        h, w = self.crop_size
        n = self.num_downsamples
        if h < 4 or w not in (h, 2 * h) or 4 * 2 ** n != h:
            raise AmodalkitError(f"crop size must be (4*2^n, 8*2^n) or square (4*2^n, 4*2^n) with n >= 0, "
                                 f"e.g. (64, 128), (32, 64) or (32, 32); got {self.crop_size}")
        if len(self.channels) != n + 2:
            raise AmodalkitError(f"a {h}x{w} crop needs {n + 2} encoder channel counts "
                                 f"({n} stride-2 layers + 2), got {len(self.channels)}: {self.channels}")
        if self.width <= 0 or self.hidden < 1 or min(self.channels) < 1:
            raise AmodalkitError("width, hidden size and channel counts must be positive")
        if w > MAX_CROP_SIDE or self.hidden > MAX_CHANNELS or max(self.scaled_channels()) > MAX_CHANNELS:
            raise AmodalkitError(f"crops are at most {MAX_CROP_SIDE} pixels wide and the hidden size and "
                                 f"channel counts (after --width) at most {MAX_CHANNELS}; got crop "
                                 f"{self.crop_size}, hidden {self.hidden}, channels {self.scaled_channels()}")
        if self.warp not in WARPS:
            raise AmodalkitError(f"warp must be one of {', '.join(WARPS)}, got {self.warp!r}")
        choices = {"mask_reduction": ("mean", "sum"), "consistency_mode": ("paper", "cumulative"),
                   "completor_input": ("visible", "flow_x"), "motion_base": ("mean", "visible_flow")}
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise AmodalkitError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if not self.lambda_photometric >= 0 or not 0 <= self.leaky_slope < 1:
            raise AmodalkitError("lambda_photometric must be non-negative and leaky_slope in [0, 1)")
        if self.clip_len < 0 or self.clip_len == 1:
            raise AmodalkitError("clip length must be 0 (whole video) or at least 2")
        if self.crop_mode not in ("clip", "track"):
            raise AmodalkitError(f"crop mode must be 'clip' or 'track', got {self.crop_mode!r}")
        if self.horizon < 1 or self.lambda_horizon < 0:
            raise AmodalkitError("horizon must be at least 1 and lambda_horizon non-negative")

    @property
    def num_downsamples(self) -> int:
        """Stride-2 layers of each encoder: log2(crop_h / 4)."""
        h = self.crop_size[0]
        return max(0, round(math.log2(max(h, 1) / 4)))

    def scaled_channels(self) -> tuple[int, ...]:
        """Channel counts after the width multiplier."""
        return tuple(max(1, round(c * self.width)) for c in self.channels)

    @property
    def square(self) -> bool:
        """Square crops: the 4x8 -> 4x4 layer becomes 4x4 -> 4x4."""
        return self.crop_size[0] == self.crop_size[1]

    @property
    def in_channels(self) -> int:
        """Input channels of the spatiotemporal encoder: image, flow, visible mask."""
        return (0 if self.no_image else 3) + (0 if self.no_flow else 2) + 1

    @classmethod
    def paper(cls, **changes: object) -> SavosConfig:
        """The paper's configuration (§E.1): 64x128 crops, 32..512 channels, LSTM 256."""
        return cls(**changes)

    @classmethod
    def small(cls, **changes: object) -> SavosConfig:
        """A CPU-sized variant: 32x32 crops that follow the object, narrow encoders, LSTM 128."""
        base = {"crop_size": (32, 32), "channels": (16, 32, 64, 64, 128), "hidden": 128, "crop_mode": "track"}
        return cls(**{**base, **changes})

    @classmethod
    def cpu(cls, **changes: object) -> SavosConfig:
        """The zoo's CPU recipe: ``small`` on whole videos, with mask feedback and skip connections.

        Neither extension is in the paper: both give the completor a pixel-precise path
        (its own warped previous completion, the mask encoder's maps), which is what lets
        the narrow network fit Chewing Gum shapes within a CPU budget (docs/benchmarks.md).
        """
        return cls.small(**{"clip_len": 0, "mask_feedback": True, "skips": True, **changes})

    @classmethod
    def official(cls, **changes: object) -> SavosConfig:
        """The released FISHBOWL training scripts: 40-frame clips, per-frame boxes, their losses and warp.

        Summed BCE, the cumulative consistency of the blend, a 0.1-weighted photometric L1,
        the official backward-sampling warp, CNN_a fed the horizontal flow, the motion
        residual on the flow itself inside the visible mask, LeakyReLU 0.01. Its training
        loop (:meth:`train_defaults`) picks the checkpoint by validation IoU against the
        **amodal ground truth**, as the released ``FishBowl/main.py`` does: runs of this
        preset are not self-supervised in their model selection. KINS-Video-Car runs
        override clip length, batch, epochs, photometric weight and selection.
        """
        base = {"clip_len": 40, "crop_mode": "track", "warp": "official", "mask_reduction": "sum",
                "consistency_mode": "cumulative", "lambda_photometric": 0.1, "completor_input": "flow_x",
                "motion_base": "visible_flow", "leaky_slope": 0.01}
        return cls(**{**base, **changes})

    @staticmethod
    def train_defaults(preset: str) -> dict[str, object]:
        """``amodalkit train`` options a preset sets when they are not given (empty for most presets)."""
        return dict(OFFICIAL_TRAIN) if preset == "official" else {}

    @classmethod
    def from_dict(cls, data: dict) -> SavosConfig:
        """Rebuild from ``asdict`` output (e.g. a checkpoint's JSON), refusing unknown keys."""
        return config_from_dict(cls, data, "SaVos")


def default_channels(crop_size: tuple[int, int], width: float = 1.0) -> tuple[int, ...]:
    """The paper's channels at the depth a crop allows: early stride-2 layers dropped (or 32s added)."""
    n = max(0, round(math.log2(max(int(crop_size[0]), 1) / 4)))
    strided = PAPER_CHANNELS[:4]
    strided = strided[4 - n:] if n <= 4 else (strided[0],) * (n - 4) + strided
    return tuple(max(1, round(c * width)) for c in strided + PAPER_CHANNELS[4:])


PRESETS: dict[str, Callable[..., SavosConfig]] = {"paper": SavosConfig.paper, "small": SavosConfig.small,
                                                  "cpu": SavosConfig.cpu, "official": SavosConfig.official}


def build_config(preset: str = "paper", crop: str | tuple[int, int] | None = None,
                 channels: str | tuple[int, ...] | None = None, **changes: object) -> SavosConfig:
    """A preset with CLI-style overrides: ``crop`` "HxW", ``channels`` "a,b,c", None keeps the preset.

    A crop without channels takes the paper's channels at the depth that crop allows.
    """
    if preset not in PRESETS:
        raise AmodalkitError(f"unknown SaVos preset {preset!r}; choose from {sorted(PRESETS)}")
    over = {k: v for k, v in changes.items() if v is not None and v is not False}
    if isinstance(crop, str):
        try:
            crop = tuple(int(v) for v in crop.lower().split("x"))
        except ValueError as exc:
            raise AmodalkitError(f"--crop must look like 32x64, got {crop!r}") from exc
    if isinstance(channels, str):
        try:
            channels = tuple(int(v) for v in channels.split(","))
        except ValueError as exc:
            raise AmodalkitError(f"--channels must look like 16,32,64,64,128, got {channels!r}") from exc
    if crop is not None:
        over["crop_size"] = tuple(crop)
        if channels is None:
            over["channels"] = default_channels(crop)
    if channels is not None:
        over["channels"] = tuple(channels)
    return PRESETS[preset](**over)


def config_from_train_options(preset: str = "paper", clip_stride: int = 0, **options: object) -> SavosConfig:
    """:func:`build_config` from ``amodalkit train`` options (``clip_stride`` is the loop's option)."""
    return build_config(preset, **options)
