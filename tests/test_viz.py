"""The pictures of `amodalkit show`: colours per object, error colours, numbered frames, legend, text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFont

from amodalkit import viz
from amodalkit.errors import AmodalkitError
from amodalkit.viz import FALSE_NEGATIVE, FALSE_POSITIVE, LABEL_WIDTH, PALETTE, VideoView, render_panels

H, W, T = 10, 12, 4
SCALE = 3


def _box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _view(amodal: bool = True, annotated: np.ndarray | None = None) -> VideoView:
    """Two objects on a black video: object 1 hides object 0's right part; one prediction with errors."""
    frames = np.zeros((T, H, W, 3), np.uint8)
    gt = np.stack([_box(2, 6, 1, 7), _box(3, 8, 5, 10)])
    visible = np.stack([gt[0] & ~gt[1], gt[1]])
    pred = gt.copy()
    pred[0, 3, 5] = False
    pred[1, 9, 9] = True
    def tile(m: np.ndarray) -> np.ndarray:
        return np.repeat(m[:, None], T, axis=1)

    return VideoView(frames, tile(visible), tile(gt) if amodal else None, {"method": tile(pred)},
                     {"method": "mIoU .950, occluded .500"}, annotated, "a test video")


def _at(panel: np.ndarray, y: int, x: int) -> np.ndarray:
    """The colour at the centre of source pixel (y, x) of an upscaled panel."""
    return panel[y * SCALE + SCALE // 2, x * SCALE + SCALE // 2].astype(int)


def _close(pixel: np.ndarray, colour: tuple[int, ...] | np.ndarray, alpha: float) -> bool:
    return bool(np.abs(pixel - alpha * np.asarray(colour, float)).max() <= 2)


def test_objects_keep_their_colour_and_errors_have_their_own() -> None:
    visible, gt, pred = render_panels(_view(), 0, SCALE)
    assert visible.shape == (H * SCALE, W * SCALE, 3)
    for panel in (visible, gt, pred):
        assert _close(_at(panel, 4, 2), PALETTE[0], 0.6)
        assert _close(_at(panel, 6, 8), PALETTE[1], 0.6)
    assert _close(_at(pred, 3, 5), FALSE_NEGATIVE, 0.85), "missed hidden pixel of object 0"
    assert _close(_at(pred, 9, 9), FALSE_POSITIVE, 0.85), "predicted pixel outside the ground truth"
    assert not _close(_at(gt, 3, 5), FALSE_NEGATIVE, 0.85)
    assert (_at(visible, 0, 0) == 0).all()


def test_no_error_colours_where_the_ground_truth_is_not_annotated() -> None:
    annotated = np.ones((2, T), bool)
    annotated[:, 0] = False
    _, _, pred = render_panels(_view(annotated=annotated), 0, SCALE)
    assert _close(_at(pred, 9, 9), PALETTE[1], 0.6) and _close(_at(pred, 3, 5), PALETTE[1], 0.6)
    _, _, pred = render_panels(_view(annotated=annotated), 1, SCALE)
    assert _close(_at(pred, 9, 9), FALSE_POSITIVE, 0.85)


def _ink_rows(region: np.ndarray) -> np.ndarray:
    """Indices of the pixel rows of `region` that hold dark (text) pixels."""
    return np.flatnonzero((region.max(axis=-1) < 120).any(axis=1))


def test_png_numbers_frames_labels_rows_and_has_a_legend(tmp_path: Path) -> None:
    v = _view()
    out = viz.save_video_picture(tmp_path / "a.png", v.frames, v.visible, v.amodal, v.predictions, n_frames=3,
                                 scale=SCALE, notes=v.notes, title=v.title)
    img = np.asarray(Image.open(out).convert("RGB"))
    assert img.shape[1] == LABEL_WIDTH + 3 * W * SCALE + 2 * viz.GAP
    top, row = 2 * viz.LINE + viz.PAD, H * SCALE + viz.GAP
    for r in range(3):
        band = img[top + r * row: top + (r + 1) * row - viz.GAP, :LABEL_WIDTH]
        assert _ink_rows(band).size, f"row {r} has no label"
    header = img[viz.LINE: top, LABEL_WIDTH:]
    ink = _ink_rows(header)
    assert ink.size >= 8, "frame numbers of readable size (not a few pixels of stroke font)"
    for c in range(3):
        x0 = c * (W * SCALE + viz.GAP)
        assert _ink_rows(header[:, x0: x0 + W * SCALE]).size, f"column {c} has no frame number"
    legend_h = viz._legend_layout([v], img.shape[1])[1]
    legend = img[-legend_h:].reshape(-1, 3).astype(int)
    for colour in (FALSE_POSITIVE, FALSE_NEGATIVE, tuple(PALETTE[0]), tuple(PALETTE[1])):
        assert (np.abs(legend - colour).max(axis=1) == 0).sum() > 50, colour
    without = viz.save_video_picture(tmp_path / "b.png", v.frames, v.visible, v.amodal, v.predictions, 3,
                                     SCALE)
    assert np.asarray(Image.open(without).convert("RGB")).shape[0] < img.shape[0], "the title takes a line"


def test_png_without_ground_truth_has_no_error_colours(tmp_path: Path) -> None:
    v = _view(amodal=False)
    out = viz.save_video_picture(tmp_path / "a.png", v.frames, v.visible, None, v.predictions, 2, SCALE)
    img = np.asarray(Image.open(out).convert("RGB")).reshape(-1, 3).astype(int)
    assert not (np.abs(img - FALSE_POSITIVE).max(axis=1) == 0).any()
    assert not (np.abs(img - FALSE_NEGATIVE).max(axis=1) == 0).any()


def test_gif_counts_frames_under_a_fixed_legend(tmp_path: Path) -> None:
    v = _view()
    out = viz.save_video_picture(tmp_path / "a.gif", v.frames, v.visible, v.amodal, v.predictions,
                                 scale=SCALE, notes=v.notes, title=v.title)
    with Image.open(out) as gif:
        assert gif.n_frames == T
        shots = []
        for i in range(2):
            gif.seek(i)
            shots.append(np.asarray(gif.convert("RGB")).astype(int))
    counter = slice(viz.LINE, 2 * viz.LINE)
    assert (shots[0][counter] != shots[1][counter]).any(), "the frame counter changes"
    assert (shots[0][-viz.LINE:] == shots[1][-viz.LINE:]).all(), "the legend stays"


def test_pictures_over_the_size_limits_are_refused(tmp_path: Path) -> None:
    v = _view()
    for name in ("a.png", "a.gif"):
        with pytest.raises(AmodalkitError, match="lower --scale or --frames"):
            viz.save_video_picture(tmp_path / name, v.frames, v.visible, v.amodal, v.predictions, scale=40000)
    with pytest.raises(AmodalkitError, match=r"\.png or \.gif"):
        viz.save_video_picture(tmp_path / "a.jpg", v.frames, v.visible, v.amodal, v.predictions)
    assert not list(tmp_path.iterdir())


def test_text_uses_a_scalable_font() -> None:
    font = viz._font()
    assert isinstance(font, ImageFont.FreeTypeFont) and font.size == viz.FONT_PX
    lines = viz._wrap("savos-no_bidirectional mIoU .950, occluded .500", 60)
    assert len(lines) > 2 and all(viz._width(line) <= 60 for line in lines)
    assert "".join(lines).replace(" ", "") == "savos-no_bidirectionalmIoU.950,occluded.500"
