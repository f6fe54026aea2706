from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from amodalkit.errors import AmodalkitError
from amodalkit.io.flowio import (
    encode_kitti,
    read_flo,
    read_flow,
    read_kitti_png,
    write_flo,
    write_flow,
    write_kitti_png,
)
from amodalkit.ops.warp import warp_backward, warp_backward_torch

SIDES = st.integers(1, 9)


def flow_arrays(elements: st.SearchStrategy[float]) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.float32, st.tuples(SIDES, SIDES, st.just(2)), elements=elements)


@settings(max_examples=60, deadline=None)
@given(flow=flow_arrays(st.floats(width=32, allow_nan=False, allow_infinity=False)))
def test_flo_round_trip_is_exact(tmp_path_factory: pytest.TempPathFactory, flow: np.ndarray) -> None:
    path = tmp_path_factory.mktemp("flo") / "f.flo"
    write_flo(path, flow)
    back = read_flo(path)
    assert back.dtype == np.float32 and back.shape == flow.shape
    assert back.tobytes() == flow.tobytes()


def test_flo_bytes_match_the_format_and_opencv(tmp_path: Path) -> None:
    flow = np.random.default_rng(0).normal(0, 20, (5, 7, 2)).astype(np.float32)
    ours = write_flo(tmp_path / "ours.flo", flow)
    data = ours.read_bytes()
    assert data[:4] == b"PIEH"
    assert np.frombuffer(data[4:12], "<i4").tolist() == [7, 5]
    assert len(data) == 12 + 5 * 7 * 2 * 4
    assert np.array_equal(np.frombuffer(data[12:], "<f4").reshape(5, 7, 2), flow)
    other = cv2.readOpticalFlow(str(ours))
    assert other.dtype == np.float32 and np.array_equal(other, flow)
    cv2.writeOpticalFlow(str(tmp_path / "cv.flo"), flow)
    assert (tmp_path / "cv.flo").read_bytes() == data
    assert np.array_equal(read_flo(tmp_path / "cv.flo"), flow)


@settings(max_examples=60, deadline=None)
@given(flow=flow_arrays(st.floats(-500, 500, width=32)),
       valid=hnp.arrays(bool, st.tuples(st.just(1), st.just(1))))
def test_kitti_png_round_trip_quantizes_to_1_64(tmp_path_factory: pytest.TempPathFactory, flow: np.ndarray,
                                                  valid: np.ndarray) -> None:
    path = tmp_path_factory.mktemp("kitti") / "f.png"
    mask = np.broadcast_to(valid, flow.shape[:2]).copy()
    mask[0, 0] = True
    write_kitti_png(path, flow, mask)
    back, back_valid = read_kitti_png(path)
    assert back.dtype == np.float32 and back.shape == flow.shape
    assert np.array_equal(back_valid, mask)
    diff = flow[mask] - back[mask]
    assert (diff >= -1e-4).all() and (diff < 1 / 64 + 1e-4).all()
    assert (back[~mask] == 0).all()


def test_kitti_png_layout_and_clipping(tmp_path: Path) -> None:
    flow = np.array([[[0.0, 0.0], [1.0, -2.5], [1e4, -1e4]]], np.float32)
    path = write_kitti_png(tmp_path / "k.png", flow, np.array([[True, True, True]]))
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (1, 3, 3)
    bgr = raw[0].tolist()
    assert bgr[0] == [1, 32768, 32768]
    assert bgr[1] == [1, 32768 - 160, 32768 + 64]
    assert bgr[2] == [1, 0, 65535]
    exact = np.array([[[3 / 64, -7 / 64]]], np.float32)
    write_kitti_png(tmp_path / "e.png", exact)
    assert np.array_equal(read_kitti_png(tmp_path / "e.png")[0], exact)


def test_kitti_invalid_pixels_are_zero_and_nan_is_invalid() -> None:
    flow = np.array([[[np.nan, 1.0], [2.0, 3.0]]], np.float32)
    enc = encode_kitti(flow)
    assert enc[0, 0].tolist() == [0, 0, 0]
    assert enc[0, 1, 2] == 1


def test_read_flow_and_write_flow_dispatch(tmp_path: Path) -> None:
    flow = np.ones((3, 4, 2), np.float32)
    for name in ("a.flo", "a.png"):
        write_flow(tmp_path / name, flow)
        back, valid = read_flow(tmp_path / name)
        assert np.array_equal(back, flow) and valid.all()
    with pytest.raises(AmodalkitError, match="unknown flow file type"):
        write_flow(tmp_path / "a.txt", flow)


def _expect_error(func: Callable[[Path], object], path: Path, needle: str) -> None:
    with pytest.raises(AmodalkitError) as info:
        func(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_corrupt_flo_files_are_clear_errors(tmp_path: Path) -> None:
    good = write_flo(tmp_path / "good.flo", np.zeros((4, 5, 2), np.float32)).read_bytes()
    cases = {
        "empty.flo": (b"", "truncated"),
        "short.flo": (good[:10], "truncated"),
        "trunc.flo": (good[:-4], "truncated"),
        "long.flo": (good + b"\0" * 8, "corrupt"),
        "magic.flo": (b"PIEX" + good[4:], "magic number"),
        "size.flo": (good[:4] + np.array([-1, 5], "<i4").tobytes() + good[12:], "corrupt .flo header"),
    }
    for name, (data, needle) in cases.items():
        (tmp_path / name).write_bytes(data)
        _expect_error(read_flo, tmp_path / name, needle)
    _expect_error(read_flo, tmp_path / "missing.flo", "does not exist")


def test_wrong_png_depth_or_channels_are_clear_errors(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "u8.png"), np.zeros((4, 5, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "gray16.png"), np.zeros((4, 5), np.uint16))
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    _expect_error(read_kitti_png, tmp_path / "u8.png", "16-bit")
    _expect_error(read_kitti_png, tmp_path / "gray16.png", "1 channel")
    _expect_error(read_kitti_png, tmp_path / "junk.png", "not a readable PNG")
    _expect_error(read_kitti_png, tmp_path / "none.png", "does not exist")


def test_bad_flow_shapes_are_errors(tmp_path: Path) -> None:
    with pytest.raises(AmodalkitError, match=r"\(H, W, 2\)"):
        write_flo(tmp_path / "x.flo", np.zeros((4, 5, 3), np.float32))
    with pytest.raises(AmodalkitError):
        warp_backward(np.zeros((4, 5)), np.zeros((4, 6, 2)))


IMAGE_DTYPES = st.sampled_from([np.uint8, np.uint16, np.float32, np.float64])


@settings(max_examples=40, deadline=None)
@given(data=st.data(), dtype=IMAGE_DTYPES, channels=st.sampled_from([None, 1, 3, 5]))
def test_warp_zero_flow_is_identity(data: st.DataObject, dtype: type, channels: int | None) -> None:
    h, w = data.draw(SIDES), data.draw(SIDES)
    shape = (h, w) if channels is None else (h, w, channels)
    image = data.draw(hnp.arrays(dtype, shape, elements=st.integers(0, 255)))
    out = warp_backward(image, np.zeros((h, w, 2), np.float32))
    assert out.dtype == image.dtype and np.array_equal(out, image)
    batch = np.stack([image, image])[..., None] if channels is None else np.stack([image, image])
    assert np.array_equal(warp_backward(batch, np.zeros((2, h, w, 2), np.float32)), batch)
    t = torch.from_numpy(image.astype(np.float32)).reshape(1, h, w, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(warp_backward_torch(t, torch.zeros(1, 2, h, w)), t, atol=1e-3, rtol=1e-5)


def shifted_reference(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """out[y, x] = image[y + dy, x + dx], zero outside."""
    h, w = image.shape[:2]
    out = np.zeros_like(image)
    for y in range(h):
        for x in range(w):
            if 0 <= y + dy < h and 0 <= x + dx < w:
                out[y, x] = image[y + dy, x + dx]
    return out


@settings(max_examples=40, deadline=None)
@given(data=st.data(), dx=st.integers(-4, 4), dy=st.integers(-4, 4))
def test_warp_integer_shift(data: st.DataObject, dx: int, dy: int) -> None:
    h, w = data.draw(st.integers(2, 9)), data.draw(st.integers(2, 9))
    image = data.draw(hnp.arrays(np.float32, (h, w, 3), elements=st.floats(-100, 100, width=32)))
    flow = np.zeros((h, w, 2), np.float32)
    flow[..., 0], flow[..., 1] = dx, dy
    expected = shifted_reference(image, dx, dy)
    assert np.array_equal(warp_backward(image, flow), expected)
    t = torch.from_numpy(image).permute(2, 0, 1)[None]
    f = torch.from_numpy(flow).permute(2, 0, 1)[None]
    got = warp_backward_torch(t, f)[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)
    border = warp_backward(image, flow, padding="border")
    ys = np.clip(np.arange(h)[:, None] + dy, 0, h - 1)
    xs = np.clip(np.arange(w)[None, :] + dx, 0, w - 1)
    assert np.array_equal(border, image[ys, xs])


def test_warp_follows_the_forward_flow_convention() -> None:
    rng = np.random.default_rng(1)
    frame0 = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    frame1 = np.zeros_like(frame0)
    frame1[:, 2:] = frame0[:, :-2]
    flow = np.zeros((12, 16, 2), np.float32)
    flow[..., 0] = 2.0
    warped = warp_backward(frame1, flow)
    assert np.array_equal(warped[:, :-2], frame0[:, :-2])


def test_warp_bilinear_half_pixel() -> None:
    image = np.array([[0.0, 10.0, 20.0]], np.float32)
    flow = np.zeros((1, 3, 2), np.float32)
    flow[..., 0] = 0.5
    np.testing.assert_allclose(warp_backward(image, flow, "border")[0], [5.0, 15.0, 20.0], atol=1e-3)
    t_image = torch.from_numpy(image)[None, None]
    got = warp_backward_torch(t_image, torch.from_numpy(flow).permute(2, 0, 1)[None], "border")
    np.testing.assert_allclose(got[0, 0, 0].numpy(), [5.0, 15.0, 20.0], atol=1e-5)


def test_invalid_pixels_read_as_zero_in_both_formats(tmp_path: Path) -> None:
    flow = np.array([[[1.0, 2.0], [np.nan, 0.5]], [[1.7e9, 0.0], [np.inf, -3.0]]], np.float32)
    path = tmp_path / "unknown.flo"
    path.write_bytes(np.array([202021.25], "<f4").tobytes() + np.array([2, 2], "<i4").tobytes()
                     + flow.astype("<f4").tobytes())
    back, valid = read_flow(path)
    assert valid.tolist() == [[True, False], [False, False]]
    assert np.isfinite(back).all() and (back[~valid] == 0).all()
    assert back[0, 0].tolist() == [1.0, 2.0]
    png, png_valid = read_flow(write_kitti_png(tmp_path / "u.png", flow))
    assert png_valid.tolist() == valid.tolist() and (png[~png_valid] == 0).all()


def test_flo_writer_refuses_non_finite_flow(tmp_path: Path) -> None:
    flow = np.zeros((2, 2, 2), np.float32)
    flow[1, 1, 0] = np.nan
    with pytest.raises(AmodalkitError, match="NaN or infinite") as err:
        write_flo(tmp_path / "a.flo", flow)
    assert str(tmp_path / "a.flo") in str(err.value)
    assert not list(tmp_path.iterdir())


def test_huge_declared_sizes_are_refused_before_decoding(tmp_path: Path) -> None:
    from bad_files import forged_png

    png = forged_png(tmp_path / "huge.png", 25000, 25000, bit_depth=16)
    assert png.stat().st_size < 100
    _expect_error(read_flow, png, "over the limit")
    flo = tmp_path / "huge.flo"
    flo.write_bytes(np.array([202021.25], "<f4").tobytes() + np.array([60000, 60000], "<i4").tobytes())
    _expect_error(read_flow, flo, "over the limit")
