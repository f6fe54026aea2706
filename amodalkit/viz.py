"""Pictures of videos: frames, visible masks, amodal ground truth and predictions with their errors.

A PNG is a strip per video (rows: visible masks, amodal ground truth, each prediction;
columns: frames, numbered on top; each row named on the left with its note, e.g. the
prediction's mIoU on the video) and a legend at the bottom. A GIF is one row of panels per
frame with the names on top, a frame counter and the same legend. Object k has the same
colour in every row; where the amodal ground truth is known, a prediction's false-positive
and false-negative pixels have their own colours (:data:`FALSE_POSITIVE`, :data:`FALSE_NEGATIVE`).
Text uses Pillow's built-in scalable font (no system font needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from amodalkit.errors import AmodalkitError
from amodalkit.io.atomic import atomic_path

MAX_PICTURE_SIDE = 65535
MAX_PICTURE_PIXELS = 1 << 28
MAX_ANIMATION_PIXELS = 1 << 30
#: object k's colour in every row (no pure red or blue: those mark the errors)
PALETTE = np.array([
    (60, 180, 75), (255, 225, 25), (145, 30, 180), (245, 130, 48), (210, 245, 60),
    (250, 190, 212), (170, 110, 40), (128, 128, 0), (0, 128, 128), (220, 190, 255),
], np.uint8)
FALSE_POSITIVE = (255, 30, 30)
FALSE_NEGATIVE = (40, 110, 255)
OUTLINE = (255, 255, 255)
INK = (20, 20, 20)
PAPER = (255, 255, 255)
FONT_PX = 14
LINE = 17
PAD = 4
GAP = 2
LABEL_WIDTH = 180
SWATCH = 12
#: blank pixels between the strips of two videos in one PNG
VIDEO_SPACING = 12
MAX_LEGEND_OBJECTS = 10


@lru_cache(maxsize=1)
def _font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in scalable font (Pillow >= 10.1), else its small bitmap font."""
    try:
        return ImageFont.load_default(size=FONT_PX)
    except TypeError:
        return ImageFont.load_default()


def _width(text: str) -> float:
    """Pixels `text` takes in the font."""
    return _font().getlength(text)


def _wrap(text: str, width: int) -> list[str]:
    """`text` in lines at most `width` pixels wide: words kept whole where they fit, long ones broken."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if _width(candidate) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = word
            while _width(line) > width and len(line) > 1:
                n = max([i for i in range(1, len(line)) if _width(line[:i]) <= width], default=1)
                lines.append(line[:n])
                line = line[n:]
        lines.append(line)
    return lines


@dataclass
class VideoView:
    """One video to draw: its frames, masks, predictions and the text beside them.

    frames: (T, H, W, 3) uint8; visible, amodal, predictions[name]: (K, T, H, W) bool;
    annotated: (K, T) bool, where `amodal` is ground truth (None: everywhere, when given);
    notes[name]: a line under prediction `name`'s label (e.g. its mIoU on this video).
    """

    frames: np.ndarray
    visible: np.ndarray
    amodal: np.ndarray | None = None
    predictions: dict[str, np.ndarray] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    annotated: np.ndarray | None = None
    title: str | None = None

    def labels(self) -> list[str]:
        """The text of each row: its name, and its note on the next line."""
        rows = ["visible masks"] + (["amodal ground truth"] if self.amodal is not None else [])
        return rows + [f"{name}\n{self.notes[name]}" if self.notes.get(name) else name
                       for name in self.predictions]


def _upscale(img: np.ndarray, scale: int) -> np.ndarray:
    """(H, W, ...) -> (H*scale, W*scale, ...), nearest neighbour."""
    return cv2.resize(img, (img.shape[1] * scale, img.shape[0] * scale), interpolation=cv2.INTER_NEAREST)


def _mix(pixels: np.ndarray, colour: Sequence[int] | np.ndarray, alpha: float) -> np.ndarray:
    """(N, 3) pixels blended towards `colour` by `alpha`, as uint8."""
    return ((1 - alpha) * pixels + alpha * np.asarray(colour, np.float32)).astype(np.uint8)


def _tint(img: np.ndarray, masks: np.ndarray, alpha: float) -> np.ndarray:
    """(H, W, 3) image with each of the (K, H, W) masks blended towards object k's colour."""
    out = img.copy()
    for k, m in enumerate(masks):
        out[m] = _mix(out[m].astype(np.float32), PALETTE[k % len(PALETTE)], alpha)
    return out


def render_panels(view: VideoView, i: int, scale: int) -> list[np.ndarray]:
    """Frame `i`'s panels: visible masks, amodal ground truth, each prediction with its errors.

    Returns one (H*scale, W*scale, 3) uint8 image per row of :meth:`VideoView.labels`.
    """
    grey = view.frames[i].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    grey = np.repeat(grey.astype(np.uint8)[..., None], 3, axis=-1)
    dim = grey // 2
    panels = [_tint(grey, view.visible[:, i].astype(bool), 0.6)]
    gt = None if view.amodal is None else view.amodal[:, i].astype(bool)
    if gt is not None:
        known = np.ones(len(gt), bool) if view.annotated is None else view.annotated[:, i].astype(bool)
        panels.append(_tint(dim, gt, 0.6))
    for pred in view.predictions.values():
        p = pred[:, i].astype(bool)
        img = _tint(dim, p, 0.6)
        if gt is not None:
            fn = (gt & ~p)[known].any(axis=0)
            fp = (p & ~gt)[known].any(axis=0)
            img[fn] = _mix(dim[fn].astype(np.float32), FALSE_NEGATIVE, 0.85)
            img[fp] = _mix(dim[fp].astype(np.float32), FALSE_POSITIVE, 0.85)
        panels.append(img)
    panels = [_upscale(p, scale) for p in panels]
    if gt is not None:
        contours = []
        for m in gt:
            found, _ = cv2.findContours(_upscale(m.astype(np.uint8), scale), cv2.RETR_EXTERNAL,
                                        cv2.CHAIN_APPROX_NONE)
            contours += found
        for p in panels[1:]:
            cv2.drawContours(p, contours, -1, OUTLINE, 1)
    return panels


def _legend_items(views: Sequence[VideoView]) -> list[tuple[list[tuple[int, int, int]], str, bool]]:
    """(swatch colours, text, outlined swatch) of each legend entry the pictures need."""
    k = max(v.visible.shape[0] for v in views)
    items = [([tuple(int(c) for c in PALETTE[j % len(PALETTE)])], f"object {j}", False)
             for j in range(min(k, MAX_LEGEND_OBJECTS))]
    if k > MAX_LEGEND_OBJECTS:
        items.append(([], f"... {k} objects, colours repeat", False))
    has_gt = any(v.amodal is not None for v in views)
    items.append(([], "tint: an object's visible mask under 'visible masks', its amodal mask elsewhere",
                   False))
    if has_gt:
        items.append(([(50, 50, 50)], "outline: amodal ground truth", True))
        if any(v.amodal is not None and v.predictions for v in views):
            items.append(([FALSE_POSITIVE], "false positive: predicted, not in the ground truth", False))
            items.append(([FALSE_NEGATIVE], "false negative: in the ground truth, not predicted", False))
    return items


def _legend_layout(views: Sequence[VideoView], width: int) -> tuple[list[tuple[int, int, tuple]], int]:
    """Where each legend entry goes of a legend `width` wide: [(x, y, entry)], height."""
    placed, x, y, row_h = [], PAD, PAD, 0
    for colours, text, outlined in _legend_items(views):
        lead = len(colours) * (SWATCH + 4)
        lines = _wrap(text, max(1, width - 2 * PAD - lead))
        w = lead + int(max(_width(t) for t in lines)) + 3 * PAD
        if x > PAD and x + w > width - PAD:
            x, y, row_h = PAD, y + row_h, 0
        placed.append((x, y, (colours, lines, outlined)))
        x += w
        row_h = max(row_h, len(lines) * LINE)
    return placed, y + row_h + PAD


def _draw_legend(draw: ImageDraw.ImageDraw, views: Sequence[VideoView], top: int, width: int) -> None:
    for x, y, (colours, lines, outlined) in _legend_layout(views, width)[0]:
        for j, colour in enumerate(colours):
            x0, y0 = x + j * (SWATCH + 4), top + y + (LINE - SWATCH) // 2
            draw.rectangle([x0, y0, x0 + SWATCH - 1, y0 + SWATCH - 1], fill=colour, outline=INK)
            if outlined:
                draw.rectangle([x0 + 3, y0 + 3, x0 + SWATCH - 4, y0 + SWATCH - 4], outline=OUTLINE)
        left = x + len(colours) * (SWATCH + 4)
        for n, text in enumerate(lines):
            draw.text((left, top + y + n * LINE), text, fill=INK, font=_font())


def _columns(t: int, n_frames: int) -> np.ndarray:
    """The frames a PNG strip shows: `n_frames` (at most `t`) spread evenly over the video."""
    return np.unique(np.linspace(0, t - 1, min(n_frames, t)).round().astype(int))


def _strip_layout(view: VideoView, n_frames: int, scale: int) -> dict:
    """Sizes of one video's PNG strip: title lines, row height, width and height."""
    h, w = view.frames.shape[1] * scale, view.frames.shape[2] * scale
    cols = len(_columns(view.frames.shape[0], n_frames))
    width = LABEL_WIDTH + cols * (w + GAP) - GAP
    title = _wrap(view.title, max(1, width - 2 * PAD)) if view.title else []
    row = max(h, LINE + PAD)
    rows = len(view.labels())
    top = len(title) * LINE + LINE + PAD
    return {"title": title, "top": top, "row": row, "cell": (h, w), "width": width,
            "height": top + rows * (row + GAP) - GAP}


def _check_size(out: Path, width: int, height: int, count: int) -> None:
    """Refuse a picture over the size limits, before drawing it."""
    if max(height, width) > MAX_PICTURE_SIDE or height * width > MAX_PICTURE_PIXELS \
            or count * height * width > MAX_ANIMATION_PIXELS:
        frames = f" x {count} frames" if count > 1 else ""
        raise AmodalkitError(f"the picture would be {width}x{height} pixels{frames}, over the limits "
                             f"({MAX_PICTURE_SIDE} per side, {MAX_PICTURE_PIXELS} pixels, "
                             f"{MAX_ANIMATION_PIXELS} in an animation); lower --scale or --frames", out)


def _write_image(path: Path, image: Image.Image, **kwargs: object) -> None:
    """Save `image` atomically as PNG or GIF, by `path`'s suffix."""
    fmt = {".png": "PNG", ".gif": "GIF"}[path.suffix.lower()]
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt, **kwargs)


def _draw_lines(draw: ImageDraw.ImageDraw, xy: tuple[int, int], lines: Sequence[str], width: int,
                max_lines: int | None = None, centre: bool = False) -> None:
    """Draw `lines` (at most `max_lines`) from `xy` down, left-aligned or centred in `width`."""
    x, y = xy
    for n, text in enumerate(lines[:max_lines]):
        dx = max(0, (width - _width(text)) / 2) if centre else 0
        draw.text((x + dx, y + n * LINE), text, fill=INK, font=_font())


def _draw_strip(canvas: Image.Image, view: VideoView, lay: dict, top: int, n_frames: int, scale: int) -> None:
    """One video's PNG strip on `canvas` from row `top`: title, frame numbers, labelled rows of panels."""
    draw = ImageDraw.Draw(canvas)
    _draw_lines(draw, (PAD, top), lay["title"], lay["width"])
    _, w = lay["cell"]
    y0 = top + lay["top"]
    labels = [_wrap(text, LABEL_WIDTH - 2 * PAD) for text in view.labels()]
    fit = max(1, (lay["row"] - PAD) // LINE)
    for r, lines in enumerate(labels):
        _draw_lines(draw, (PAD, y0 + r * (lay["row"] + GAP) + PAD // 2), lines, LABEL_WIDTH, fit)
    for c, i in enumerate(_columns(view.frames.shape[0], n_frames)):
        x = LABEL_WIDTH + c * (w + GAP)
        number = f"frame {i}" if _width(f"frame {i}") <= w else str(i)
        _draw_lines(draw, (x, y0 - LINE - PAD // 2), [number], w, centre=True)
        for r, panel in enumerate(render_panels(view, int(i), scale)):
            canvas.paste(Image.fromarray(panel), (x, y0 + r * (lay["row"] + GAP)))


def save_views(out: str | Path, views: Sequence[VideoView], n_frames: int = 8, scale: int = 4) -> Path:
    """Write a PNG of one or more videos: a labelled strip per video, one legend at the bottom."""
    out = Path(out)
    if scale < 1 or n_frames < 1:
        raise AmodalkitError("--frames and --scale must be at least 1")
    layouts = [_strip_layout(v, n_frames, scale) for v in views]
    width = max(lay["width"] for lay in layouts)
    legend_h = _legend_layout(views, width)[1]
    height = sum(lay["height"] for lay in layouts) + VIDEO_SPACING * (len(views) - 1) + PAD + legend_h
    _check_size(out, width, height, 1)
    canvas = Image.new("RGB", (width, height), PAPER)
    top = 0
    for view, lay in zip(views, layouts):
        _draw_strip(canvas, view, lay, top, n_frames, scale)
        top += lay["height"] + VIDEO_SPACING
    _draw_legend(ImageDraw.Draw(canvas), views, height - legend_h, width)
    _write_image(out, canvas)
    return out


def _save_animation(out: Path, view: VideoView, scale: int, duration_ms: int) -> None:
    """One row of panels per frame, names above them, a frame counter on top, the legend below."""
    t, h, w = view.frames.shape[:3]
    h, w = h * scale, w * scale
    labels = view.labels()
    width = len(labels) * (w + GAP) - GAP
    title = _wrap(view.title, max(1, width - 2 * PAD)) if view.title else []
    names = [_wrap(text, max(1, w - 2)) for text in labels]
    head = (len(title) + 1 + max(len(n) for n in names)) * LINE + PAD
    legend_h = _legend_layout([view], width)[1]
    height = head + h + legend_h
    _check_size(out, width, height, t)
    base = Image.new("RGB", (width, height), PAPER)
    draw = ImageDraw.Draw(base)
    _draw_lines(draw, (PAD, 0), title, width)
    for r, lines in enumerate(names):
        _draw_lines(draw, (r * (w + GAP), (len(title) + 1) * LINE), lines, w, centre=True)
    _draw_legend(draw, [view], head + h, width)
    images = []
    for i in range(t):
        image = base.copy()
        _draw_lines(ImageDraw.Draw(image), (PAD, len(title) * LINE), [f"frame {i} of 0-{t - 1}"], width)
        for r, panel in enumerate(render_panels(view, i, scale)):
            image.paste(Image.fromarray(panel), (r * (w + GAP), head))
        images.append(image)
    _write_image(out, images[0], save_all=True, append_images=images[1:], duration=duration_ms, loop=0)


def save_video_picture(out: str | Path, frames: np.ndarray, visible: np.ndarray, amodal: np.ndarray | None,
                       predictions: dict[str, np.ndarray], n_frames: int = 8, scale: int = 4,
                       notes: dict[str, str] | None = None, annotated: np.ndarray | None = None,
                       title: str | None = None, duration_ms: int = 120) -> Path:
    """Write a PNG strip (rows: panels, columns: frames) or an animated GIF of a video.

    frames: (T, H, W, 3); visible, amodal, predictions[name]: (K, T, H, W) bool; annotated:
    (K, T) bool where `amodal` is ground truth; notes[name]: text under prediction `name`.
    """
    out = Path(out)
    if out.suffix.lower() not in (".png", ".gif"):
        raise AmodalkitError("output must end in .png or .gif", out)
    if scale < 1 or n_frames < 1:
        raise AmodalkitError("--frames and --scale must be at least 1")
    view = VideoView(frames, visible, amodal, dict(predictions), dict(notes or {}), annotated, title)
    if out.suffix.lower() == ".png":
        return save_views(out, [view], n_frames, scale)
    _save_animation(out, view, scale, duration_ms)
    return out
