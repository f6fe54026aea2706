"""Scoring protocols: which pixels and object-frames count, the same rule for every method.

* ``strict``: each method is scored on its own prediction (thresholded at 0.5,
  with its visible pixels added); the occluded region of an object is everything outside its
  own visible mask; the occluded mean runs over object-frames whose ground truth has pixels
  there.
* ``official`` (default, :data:`DEFAULT_PROTOCOL`: the rules the paper's numbers were scored
  with, so a number here compares with the paper's): the released SaVos evaluation code
  (``utils/evaluation.py``, ``FishBowl`` and ``Kins_Car/eval.py`` of
  amazon-science/self-supervised-amodal-video-object-segmentation), applied to every method
  alike:

  - the paste rule: the prediction is kept only on the *other* objects' visible pixels and
    is the object's own visible mask elsewhere (``pred * (1 - loss_mask) + visible *
    loss_mask``, ``loss_mask`` = 1 minus the others' visible union);
  - the occluded region of an object is the other objects' visible pixels;
  - FISHBOWL: the first and last frame of every track are not scored (the official test loop
    scores frames ``[1:-1]``), and only object-frames with occlusion rate in (0.1, 0.7)
    (``utils/test_subset_eval.py``);
  - KINS-Video-Car: entries whose IoU is exactly 1 are left out of both means, full and
    occluded (``iou != 1`` in ``Kins_Car/eval.py``);
  - Chewing Gum: the official repository ships no evaluation script for it; the paste rule
    and the occluded region above apply, and the occluded mean runs over object-frames with
    hidden ground-truth pixels as in ``strict`` (the official ``invisible_IoU`` of an
    unoccluded object-frame is 1 through the IoU smoothing, or 0 if the prediction touches
    the other objects' pixels: a score of the false positives, not of the hidden part).

``docs/decisions.md`` (Metrics) says which rule reproduces which of the paper's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from amodalkit.errors import AmodalkitError
from amodalkit.evaluation.metrics import ObjectFrameScores, score_video
from amodalkit.io.shards import Video
from amodalkit.ops.masks import occlusion_rates

#: the protocol evaluate and benchmark use unless told otherwise
DEFAULT_PROTOCOL = "official"
#: FISHBOWL's official occlusion-rate range (test_subset_eval.py)
FISHBOWL_OCCLUSION = (0.1, 0.7)


def video_dataset(video: Video) -> str:
    """Which dataset a video comes from, by its provenance: chewing_gum, fishbowl, kins_video_car or ''."""
    prov = video.provenance or {}
    if prov.get("generator") == "chewing_gum" or prov.get("dataset") == "chewing_gum":
        return "chewing_gum"
    return str(prov.get("dataset", ""))


def others_visible(video: Video) -> np.ndarray:
    """(K, T, H, W) bool: pixels where another object of the video is visible."""
    ids = video.visible_ids
    own = np.arange(1, video.num_objects + 1, dtype=ids.dtype)[:, None, None, None]
    return (ids[None] != 0) & (ids[None] != own)


def paste_rule(pred: np.ndarray, video: Video) -> np.ndarray:
    """The official paste: the prediction on other objects' visible pixels, the own visible mask elsewhere."""
    return (np.asarray(pred, bool) & others_visible(video)) | video.visible_masks()


def track_inner_frames(presence: np.ndarray) -> np.ndarray:
    """(K, T) bool: the present frames of each object except the first and the last of each track run."""
    present = np.asarray(presence, bool)
    before = np.zeros_like(present)
    after = np.zeros_like(present)
    before[:, 1:] = present[:, :-1]
    after[:, :-1] = present[:, 1:]
    return present & before & after


@dataclass(frozen=True)
class Protocol:
    """How predictions are scored: the paste rule, the occluded region and the object-frame filters."""

    name: str
    paste: bool
    occluded_by_others: bool
    official_filters: bool

    def prepare(self, pred: np.ndarray, video: Video) -> np.ndarray:
        """The thresholded prediction as this protocol scores it: (K, T, H, W) bool."""
        return paste_rule(pred, video) if self.paste else np.asarray(pred, bool)

    def hidden_region(self, video: Video) -> np.ndarray:
        """(K, T, H, W) bool: where an object's occluded part is scored."""
        return others_visible(video) if self.occluded_by_others else ~video.visible_masks()

    def object_frames(self, video: Video, scored: np.ndarray) -> np.ndarray:
        """`scored` (K, T) narrowed by the protocol's dataset filters."""
        if not self.official_filters or video_dataset(video) != "fishbowl":
            return scored
        low, high = FISHBOWL_OCCLUSION
        rates = occlusion_rates(video.amodal, video.visible_masks())
        with np.errstate(invalid="ignore"):
            in_range = (rates > low) & (rates < high)
        return scored & track_inner_frames(video.presence) & in_range

    def score(self, pred: np.ndarray, video: Video, scored: np.ndarray) -> ObjectFrameScores:
        """Score one video's thresholded prediction under this protocol (the masks decoded once)."""
        visible = video.visible_masks()
        others = (video.visible_ids[None] != 0) & ~visible
        pred = np.asarray(pred, bool)
        if self.paste:
            pred = (pred & others) | visible
        hidden = others if self.occluded_by_others else ~visible
        return score_video(pred, video.amodal, visible, scored, hidden, self.drops_perfect(video))

    def drops_perfect(self, video: Video) -> bool:
        """Whether entries with IoU exactly 1 leave the means (KINS under the official rules)."""
        return self.official_filters and video_dataset(video) == "kins_video_car"


PROTOCOLS: dict[str, Protocol] = {
    "strict": Protocol("strict", paste=False, occluded_by_others=False, official_filters=False),
    "official": Protocol("official", paste=True, occluded_by_others=True, official_filters=True),
}


def get_protocol(name: str) -> Protocol:
    """A protocol by name (strict or official)."""
    if name not in PROTOCOLS:
        raise AmodalkitError(f"unknown scoring protocol {name!r}; choose {' or '.join(PROTOCOLS)}")
    return PROTOCOLS[name]
