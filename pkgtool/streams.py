"""A readable file over an iterator of byte chunks.

Layers, blobs and tree contents are produced as chunk iterators (streamed, digest-checked
as they go); ``tarfile`` and ``shutil`` want file objects.  :class:`ChunkReader` adapts one
to the other without buffering more than one chunk.
"""

from __future__ import annotations

import io
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
