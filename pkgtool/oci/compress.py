"""Deterministic gzip and zstd: the same input always gives the same compressed bytes.

Compression (the layer digest is over these bytes):

* **gzip**: level :data:`GZIP_LEVEL`, 10-byte header with mtime 0, no file name, OS 255.
  The stream is compressed in independent :data:`GZIP_BLOCK_SIZE` blocks (each primed
  with the previous 32 KiB as a dictionary, like pigz) on a thread pool, so large layers
  use every core.  Each block's bytes depend only on its input and the fixed parameters,
  never on the number of threads, so the output is identical on a 1-core and a 64-core
  machine.  It does depend on the zlib implementation (zlib 1.2/1.3 agree; zlib-ng does
  not), which is why the exact bytes are pinned by the unit tests.
* **zstd**: level :data:`ZSTD_LEVEL` with a checksum and without a content size, always
  in zstd's multi-threaded mode.  zstd's multi-threaded output is identical for any
  worker count >= 1 but differs from single-threaded (``threads=0``) output, so we never
  use 0 (probed with zstd 1.5: 1, 2, 4 and 8 workers give identical bytes).
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import os
import struct
import zlib
from typing import IO, Any, Literal, Protocol, cast

from pkgtool.errors import PkgtoolError

Compression = Literal["gzip", "zstd"]

GZIP_LEVEL = 6
GZIP_BLOCK_SIZE = 1024 * 1024
ZSTD_LEVEL = 3
# Deflate's window: priming each block with this much of the previous one keeps the ratio
# within a fraction of a percent of a single-stream gzip.
_DEFLATE_WINDOW = 32 * 1024
_GZIP_HEADER = b"\x1f\x8b\x08\x00" + b"\x00\x00\x00\x00" + b"\x00\xff"
_CHUNK = 1024 * 1024


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class HashingWriter:
    """Passes writes through to ``inner`` while hashing and counting them."""

    def __init__(self, inner: Writable | None = None) -> None:
        self.inner = inner
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self._sha.update(data)
        self.size += len(data)
        if self.inner is not None:
            self.inner.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    @property
    def digest(self) -> str:
        return "sha256:" + self._sha.hexdigest()


# --------------------------------------------------------------------------- compression


def _deflate_block(block: bytes, dictionary: bytes, level: int, final: bool) -> bytes:
    if dictionary:
        comp = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=dictionary)
    else:
        comp = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    # A sync flush ends a non-final block on a byte boundary without setting BFINAL, so
    # the raw deflate streams of all blocks concatenate into one valid stream.
    return comp.compress(block) + comp.flush(zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH)


class _GzipWriter:
    """Block-parallel deterministic gzip (see the module docstring)."""

    def __init__(self, out: Writable, *, level: int, workers: int) -> None:
        self._out = out
        self._level = level
        self._buffer = bytearray()
        self._crc = 0
        self._size = 0
        self._dictionary = b""
        self._workers = workers
        self._pool = concurrent.futures.ThreadPoolExecutor(workers) if workers > 1 else None
        self._pending: collections.deque[concurrent.futures.Future[bytes]] = collections.deque()
        out.write(_GZIP_HEADER)

    def write(self, data: bytes, /) -> int:
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)
        self._buffer += data
        # Strictly more than a block: the last block is always compressed with Z_FINISH.
        while len(self._buffer) > GZIP_BLOCK_SIZE:
            block = bytes(self._buffer[:GZIP_BLOCK_SIZE])
            del self._buffer[:GZIP_BLOCK_SIZE]
            self._submit(block, final=False)
        return len(data)

    def _submit(self, block: bytes, *, final: bool) -> None:
        dictionary, self._dictionary = self._dictionary, block[-_DEFLATE_WINDOW:]
        if self._pool is None:
            self._out.write(_deflate_block(block, dictionary, self._level, final))
            return
        self._pending.append(self._pool.submit(_deflate_block, block, dictionary, self._level, final))
        # Bounded read-ahead: memory stays at a few blocks per worker.
        while len(self._pending) > 2 * self._workers:
            self._out.write(self._pending.popleft().result())

    def abort(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def close(self) -> None:
        try:
            self._submit(bytes(self._buffer), final=True)
            self._buffer.clear()
            while self._pending:
                self._out.write(self._pending.popleft().result())
            self._out.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)


class _ZstdWriter:
    def __init__(self, out: Writable, *, level: int, workers: int, job_size: int | None = None) -> None:
        import zstandard

        # Always zstd's multi-threaded mode (threads >= 1): its bytes depend on the job size,
        # never on the number of threads, where the single-threaded mode's would differ.
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=max(1, workers), job_size=job_size or 0, write_checksum=True, write_content_size=False
        )
        compressor = zstandard.ZstdCompressor(compression_params=params)
        self._writer: Any = compressor.stream_writer(cast(Any, out), closefd=False)

    def write(self, data: bytes, /) -> int:
        self._writer.write(data)
        return len(data)

    def abort(self) -> None:
        self._writer.close()

    def close(self) -> None:
        self._writer.close()


class DeterministicCompressor:
    """A write-only stream that compresses into ``out`` with fixed parameters.

    ``close()`` must be called to write the trailer; it does not close ``out``.
    ``workers`` only changes speed, never the bytes.  ``level`` and ``zstd_job_size`` (bytes
    per zstd job; 0: zstd's default, 4x the window) default to the layers' values, which layer
    digests depend on.
    """

    def __init__(self, out: Writable, *, compression: Compression = "gzip",
                 workers: int | None = None, level: int | None = None, zstd_job_size: int = 0) -> None:
        n = workers if workers is not None else min(8, os.cpu_count() or 1)
        self._inner: _GzipWriter | _ZstdWriter
        if compression == "gzip":
            self._inner = _GzipWriter(out, level=GZIP_LEVEL if level is None else level, workers=n)
        elif compression == "zstd":
            self._inner = _ZstdWriter(out, level=ZSTD_LEVEL if level is None else level, workers=n,
                                      job_size=zstd_job_size)
        else:
            raise PkgtoolError(f"unknown layer compression {compression!r}: expected gzip or zstd")

    def write(self, data: bytes, /) -> int:
        return self._inner.write(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Finish the stream (trailer included); ``out`` stays open."""
        self._inner.close()

    def abort(self) -> None:
        """Release worker threads after a failure; the output is incomplete."""
        self._inner.abort()


def compress_deterministic(src: IO[bytes], dst: Writable, *, compression: Compression = "gzip",
                           workers: int | None = None) -> tuple[str, int]:
    """Compress all of ``src`` into ``dst``; returns (digest, size) of the compressed bytes."""
    counted = HashingWriter(dst)
    compressor = DeterministicCompressor(counted, compression=compression, workers=workers)
    try:
        while chunk := src.read(_CHUNK):
            compressor.write(chunk)
    except BaseException:
        compressor.abort()
        raise
    compressor.close()
    return counted.digest, counted.size


