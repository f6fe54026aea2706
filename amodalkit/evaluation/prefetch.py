"""Read shard videos ahead of their consumer in a background thread, so a method never waits on HDF5.

h5py releases the GIL while it reads and decompresses chunks, so one reader thread overlaps
the next videos' reads with the current batch's prediction. Order and content are exactly
those of reading in the calling thread; an error of the reader is raised to the consumer as
the same exception object, and leaving the ``with`` block (done, error, Ctrl-C) stops the
thread and waits for it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from contextlib import closing
from pathlib import Path
from types import TracebackType

from amodalkit.io.shard_read import ShardReader
from amodalkit.io.shards import Video

#: how often a reader blocked on a full queue checks whether the consumer has stopped (seconds)
STOP_POLL_S = 0.05
THREAD_NAME = "amodalkit-prefetch"


def open_readers(paths: Sequence[Path]) -> list[ShardReader]:
    """Open and validate every shard once, before anything is read; their handles re-open on first read."""
    readers = []
    for p in paths:
        reader = ShardReader(p)
        reader.close()
        readers.append(reader)
    return readers


def read_videos(readers: Sequence[ShardReader], fields: Sequence[str] | None) -> Iterator[Video]:
    """Every video of `readers` in order, read in the calling thread; each handle closed after its shard."""
    for reader in readers:
        try:
            for i in range(len(reader)):
                yield reader.read_video(i, fields)
        finally:
            reader.close()


class PrefetchedVideos:
    """:func:`read_videos` run in a background thread, at most `ahead` videos ahead of the consumer.

    Use as ``with PrefetchedVideos(readers, fields, ahead) as videos: for video in videos: ...``.
    """

    def __init__(self, readers: Sequence[ShardReader], fields: Sequence[str] | None, ahead: int) -> None:
        self._readers = list(readers)
        self._fields = fields
        self._queue: queue.Queue[tuple[Video | None, BaseException | None]] = queue.Queue(max(1, ahead))
        self._stop = threading.Event()
        self._finished = False
        self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)

    def __enter__(self) -> PrefetchedVideos:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the reader thread (after the read it is in) and wait for it; idempotent."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def __iter__(self) -> Iterator[Video]:
        if self._thread.ident is None or self._stop.is_set():
            raise RuntimeError("PrefetchedVideos is iterated outside its `with` block")
        while not self._finished:
            video, error = self._queue.get()
            if video is None:
                self._finished = True
                if error is not None:
                    raise error
                return
            yield video

    def _put(self, item: tuple[Video | None, BaseException | None]) -> bool:
        """Queue `item`, waiting for room; False when the consumer stopped first."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=STOP_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            with closing(read_videos(self._readers, self._fields)) as videos:
                for video in videos:
                    if not self._put((video, None)):
                        return
            self._put((None, None))
        except BaseException as exc:
            self._put((None, exc))
