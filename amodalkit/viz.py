"""Pictures of videos: frames, visible masks, amodal ground truth and predictions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import atomic_path

MAX_PICTURE_SIDE = 65535
MAX_PICTURE_PIXELS = 1 << 28
MAX_ANIMATION_PIXELS = 1 << 30
PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
], np.uint8)


def _upscale(img: np.ndarray, scale: int) -> np.ndarray:
    return cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)


def _tint(img: np.ndarray, masks: np.ndarray, alpha: float) -> np.ndarray:
    out = img.astype(np.float32)
    for k, m in enumerate(masks):
        colour = PALETTE[k % len(PALETTE)].astype(np.float32)
        out[m] = (1 - alpha) * out[m] + alpha * colour
    return out.astype(np.uint8)


def _outline(img: np.ndarray, masks: np.ndarray, colour: tuple[int, int, int] | None = None) -> np.ndarray:
    out = img.copy()
    for k, m in enumerate(masks):
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        c = colour or tuple(int(x) for x in PALETTE[k % len(PALETTE)])
        cv2.drawContours(out, contours, -1, c, 1)
    return out


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    cv2.putText(out, text, (2, 10), cv2.FONT_HERSHEY_PLAIN, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
    cv2.putText(out, text, (2, 10), cv2.FONT_HERSHEY_PLAIN, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def render_panels(frame: np.ndarray, visible: np.ndarray, amodal: np.ndarray | None,
                  predictions: dict[str, np.ndarray], scale: int = 4,
                  labels: bool = True) -> list[np.ndarray]:
    """Panels for one frame: input with visible masks, amodal ground truth, each prediction.

    frame: (H, W, 3) uint8; visible, amodal, predictions[name]: (K, H, W) bool.
    Returns a list of (H*scale, W*scale, 3) uint8 images.
    """
    big = _upscale(frame, scale)
    def up(m: np.ndarray) -> np.ndarray:
        return np.stack([_upscale(x.astype(np.uint8), scale).astype(bool) for x in m]) if len(m) else m

    vis = up(visible)
    dim = (big * 0.5).astype(np.uint8)
    panels = [_tint(big, vis, 0.5)]
    names = ["visible"]
    gt = up(amodal) if amodal is not None else None
    if gt is not None:
        panels.append(_outline(_tint(dim, gt, 0.6), gt, (255, 255, 255)))
        names.append("amodal GT")
    for name, pred in predictions.items():
        p = up(pred)
        img = _tint(dim, p, 0.6)
        panels.append(_outline(img, gt, (255, 255, 255)) if gt is not None else img)
        names.append(name)
    return [_label(p, n) if labels else p for p, n in zip(panels, names)]


def _write_image(path: Path, image: Image.Image, **kwargs: object) -> None:
    fmt = {".png": "PNG", ".gif": "GIF"}[path.suffix.lower()]
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **kwargs)


def _check_picture_size(out: Path, size: tuple[int, int], panels: int, t: int, n_frames: int,
                        scale: int) -> None:
    """Refuse a --scale / --frames whose picture would be over the size limits, before drawing."""
    if scale < 1 or n_frames < 1:
        raise AmodalkitError("--frames and --scale must be at least 1")
    h, w = size[0] * scale + 2, size[1] * scale + 2
    if out.suffix.lower() == ".png":
        height, width, count = panels * h, min(n_frames, t) * w, 1
    else:
        height, width, count = h, panels * w, t
    if max(height, width) > MAX_PICTURE_SIDE or height * width > MAX_PICTURE_PIXELS \
            or count * height * width > MAX_ANIMATION_PIXELS:
        frames = f" x {count} frames" if count > 1 else ""
        raise AmodalkitError(f"the picture would be {width}x{height} pixels{frames}, over the limits "
                             f"({MAX_PICTURE_SIDE} per side, {MAX_PICTURE_PIXELS} pixels, "
                             f"{MAX_ANIMATION_PIXELS} in an animation); lower --scale or --frames", out)


def save_video_picture(out: str | Path, frames: np.ndarray, visible: np.ndarray, amodal: np.ndarray | None,
                       predictions: dict[str, np.ndarray], n_frames: int = 8, scale: int = 4) -> Path:
    """Write a PNG strip (rows: panels, columns: frames) or an animated GIF of a video.

    frames: (T, H, W, 3); visible, amodal, predictions[name]: (K, T, H, W) bool.
    """
    out = Path(out)
    if out.suffix.lower() not in (".png", ".gif"):
        raise AmodalkitError("output must end in .png or .gif", out)
    t = frames.shape[0]
    _check_picture_size(out, frames.shape[1:3], 2 + len(predictions), t, n_frames, scale)

    def panels_at(i: int, labels: bool) -> list[np.ndarray]:
        return render_panels(frames[i], visible[:, i], None if amodal is None else amodal[:, i],
                             {k: v[:, i] for k, v in predictions.items()}, scale, labels)

    gap = 2
    if out.suffix.lower() == ".png":
        idx = np.unique(np.linspace(0, t - 1, min(n_frames, t)).round().astype(int))
        columns = [panels_at(i, labels=(j == 0)) for j, i in enumerate(idx)]
        rows = []
        for r in range(len(columns[0])):
            cells = []
            for col in columns:
                cells += [col[r], np.full((col[r].shape[0], gap, 3), 255, np.uint8)]
            rows += [np.concatenate(cells[:-1], axis=1)]
            rows += [np.full((gap, rows[-1].shape[1], 3), 255, np.uint8)]
        _write_image(out, Image.fromarray(np.concatenate(rows[:-1], axis=0)))
    else:
        images = []
        for i in range(t):
            panels = panels_at(i, labels=True)
            sep = np.full((panels[0].shape[0], gap, 3), 255, np.uint8)
            row = [x for p in panels for x in (p, sep)][:-1]
            images.append(Image.fromarray(np.concatenate(row, axis=1)))
        first, rest = images[0], images[1:]
        _write_image(out, first, save_all=True, append_images=rest, duration=120, loop=0)
    return out
