"""The flow backend interface: frame pairs in, forward flow out, in batches (backends: :mod:`.backends`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from amodalkit.errors import AmodalkitError

Progress = Callable[[int], object] | None


class FlowBackend:
    """A flow estimator: subclasses implement :meth:`_pairs` on one batch of frame pairs."""

    name: str = ""
    provenance: dict
    uses_visible: bool = False  # True: needs the visible id map (compute_both_visible), shards only

    def _pairs(self, first: np.ndarray, second: np.ndarray) -> np.ndarray:
        """``(N, H, W, 3)`` uint8 twice -> ``(N, H, W, 2)`` float32 forward flow."""
        raise NotImplementedError

    def compute_pairs(self, first: np.ndarray, second: np.ndarray, batch_size: int = 1,
                      progress: Progress = None) -> np.ndarray:
        """Forward flow of pairs: ``(N, H, W, 3)`` uint8 RGB twice -> ``(N, H, W, 2)`` float32."""
        first, second = _as_frames(first), _as_frames(second)
        if first.shape != second.shape:
            raise AmodalkitError(f"frame batches differ in shape: {first.shape} and {second.shape}")
        _check_batch_size(batch_size)
        n, h, w = first.shape[:3]
        out = np.empty((n, h, w, 2), np.float32)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            out[start:stop] = self._pairs(first[start:stop], second[start:stop])
            if progress is not None:
                progress(stop - start)
        return out

    def compute(self, frames: np.ndarray, batch_size: int = 1, progress: Progress = None) -> np.ndarray:
        """Forward flow of a video: ``(T, H, W, 3)`` uint8 -> ``(T-1, H, W, 2)`` float32 (pairs t, t+1)."""
        frames = _as_frames(frames)
        return self.compute_pairs(frames[:-1], frames[1:], batch_size, progress)

    def compute_backward(self, frames: np.ndarray, batch_size: int = 1,
                         progress: Progress = None) -> np.ndarray:
        """Backward flow of a video: ``(T, H, W, 3)`` -> ``(T-1, H, W, 2)``, entry t maps frame t+1 to t."""
        frames = _as_frames(frames)
        return self.compute_pairs(frames[1:], frames[:-1], batch_size, progress)

    def compute_both(self, frames: np.ndarray, batch_size: int = 1,
                     progress: Progress = None) -> tuple[np.ndarray, np.ndarray]:
        """Forward and backward flow of a video in one pass: ``(T, H, W, 3)`` -> two ``(T-1, H, W, 2)``.

        The pairs run in the order (0, 1), (1, 0), (1, 2), (2, 1), ..., `batch_size` of them
        per :meth:`_pairs` call (one network call), so an even `batch_size` puts each frame
        pair in both directions into one call; the results are those of :meth:`compute` and
        :meth:`compute_backward` (exactly for DIS, to float rounding for the networks).
        """
        frames = _as_frames(frames)
        _check_batch_size(batch_size)
        n = max(len(frames) - 1, 0)
        out = np.empty((2, n, *frames.shape[1:3], 2), np.float32)
        order = np.arange(2 * n)
        for start in range(0, 2 * n, batch_size):
            chunk = order[start:start + batch_size]
            t, backward = chunk // 2, chunk % 2
            out[backward, t] = self._pairs(frames[t + backward], frames[t + 1 - backward])
            if progress is not None:
                progress(len(chunk))
        return out[0], out[1]


def _check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise AmodalkitError("--batch-size must be at least 1")


def _as_frames(frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[3] != 3 or arr.dtype != np.uint8:
        raise AmodalkitError(f"frames must be (T, H, W, 3) uint8 RGB, got {arr.shape} {arr.dtype}")
    return arr
