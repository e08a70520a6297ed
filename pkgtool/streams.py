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
from typing import IO, Any


class ChunkReader(io.RawIOBase):
    """``read()`` over ``chunks``; closing it closes the iterator (ending its download)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        # A view, so that handing out part of a chunk never copies the rest of it.
        self._chunks, self._buffer = chunks, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._buffer = memoryview(chunk)
        n = min(len(buffer), len(self._buffer))
        buffer[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        super().close()


class ForwardReader(io.RawIOBase):
    """A one-pass stream that tells its position and seeks forward by reading.

    ``tarfile``'s stream mode (``r|``) buffers through ``bytes`` joins and slices that copy
    every byte two or three times; its random-access mode (``r:``) reads headers and data with
    plain reads, but wants ``tell`` and ``seek``.  A tar read in order only ever seeks forward,
    so that is all this offers: a backward seek (a hostile header with a negative size) is
    :class:`io.UnsupportedOperation`.
    """

    def __init__(self, inner: IO[bytes]) -> None:
        super().__init__()
        self._inner, self._position = inner, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: Any) -> int:
        n = self._inner.readinto(buffer)  # type: ignore[attr-defined]
        self._position += n
        return int(n)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self._position
        elif whence != io.SEEK_SET:
            raise io.UnsupportedOperation("a one-pass stream cannot seek from its end")
        if offset < self._position:
            raise io.UnsupportedOperation(f"a one-pass stream cannot seek back from {self._position} to {offset}")
        while self._position < offset:
            skipped = self._inner.read(min(_SKIP_CHUNK, offset - self._position))
            if not skipped:
                break  # like a file: seeking past the end is allowed, reading there gives b""
            self._position += len(skipped)
        return self._position


_SKIP_CHUNK = 1 << 20


def chunk_file(chunks: Iterator[bytes], *, buffer_size: int = 1 << 20) -> io.BufferedReader:
    """A buffered file object over ``chunks``."""
    return io.BufferedReader(ChunkReader(chunks), buffer_size=buffer_size)


_END = object()


def prefetched(chunks: Iterator[bytes], *, depth: int = 3) -> Iterator[bytes]:
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
