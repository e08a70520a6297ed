"""A readable file over an iterator of byte chunks.

Layers, blobs and tree contents are produced as chunk iterators (streamed, digest-checked
as they go); ``tarfile`` and ``shutil`` want file objects.  :class:`ChunkReader` adapts one
to the other without buffering more than one chunk.
"""

from __future__ import annotations

import io
import queue
import threading
from collections.abc import Iterator


class ChunkReader(io.RawIOBase):
    """``read()`` over ``chunks``; closing it closes the iterator (ending its download)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._buffer = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = chunk
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        super().close()


def chunk_file(chunks: Iterator[bytes], *, buffer_size: int = 1 << 20) -> io.BufferedReader:
    """A buffered file object over ``chunks``."""
    return io.BufferedReader(ChunkReader(chunks), buffer_size=buffer_size)


_END = object()


def prefetched(chunks: Iterator[bytes], *, depth: int = 8) -> Iterator[bytes]:
    """``chunks``, produced by a thread of their own up to ``depth`` chunks ahead.

    A layer's chunks come from reading a blob, hashing it, decompressing it and hashing the
    result: C code that releases the GIL.  Producing them in a thread lets that work run on
    one core while the consumer parses the tar on another.  An exception in the producer is
    raised in the consumer, at the point in the stream where it happened; closing the
    iterator early stops the producer.
    """
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        handoff.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            handoff.put(_END)
        except BaseException as exc:  # handed over to the consumer, which raises it
            handoff.put(exc)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None and stop.is_set():
                close()

    thread = threading.Thread(target=produce, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item
    finally:
        stop.set()
        # Unblock a producer waiting on a full queue, then let it finish.
        while thread.is_alive():
            try:
                handoff.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
