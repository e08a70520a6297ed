"""Read the payload of a ``.deb`` with Python only: ``ar`` outside, a (compressed) tar inside.

Nothing here extracts to disk: :func:`open_data_tar` hands back a *streaming* ``tarfile``
over ``data.tar.*``, decompressed on the fly, so callers decide which members to keep
and where.  Decompressed output is bounded (a small compressed member must not be able to
expand into a disk-filling stream).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import lzma
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from pkgtool.errors import PkgtoolError
from pkgtool.kernel import arfile

# linux-image data.tar is ~450 MB uncompressed; 4 GiB leaves room and still bounds a bomb.
MAX_DATA_BYTES = 4 * 1024**3


class DebError(PkgtoolError):
    """The .deb is malformed or uses an unsupported compression."""


class _Limited(io.RawIOBase):
    """Pass reads through, failing once more than ``limit`` bytes have come out."""

    def __init__(self, inner: _Readable, limit: int, source: str) -> None:
        super().__init__()
        self._inner = inner
        self._left = limit
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self._inner.read(len(buffer))
        n = len(chunk)
        self._left -= n
        if self._left < 0:
            raise DebError(f"{self._source}: data.tar expands beyond {MAX_DATA_BYTES} bytes")
        buffer[:n] = chunk
        return n


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _decompressor(name: str, raw: BinaryIO, source: str) -> _Readable:
    if name == "data.tar.xz":
        return lzma.LZMAFile(raw)
    if name == "data.tar.gz":
        return gzip.GzipFile(fileobj=raw)
    if name == "data.tar.zst":
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw)
    if name == "data.tar":
        return raw
    raise DebError(f"{source}: unsupported payload {name!r} (expected data.tar[.xz|.gz|.zst])")


@contextlib.contextmanager
def open_data_tar(path: Path, *, limit: int = MAX_DATA_BYTES) -> Iterator[tarfile.TarFile]:
    """A streaming (``r|``) TarFile over the .deb's ``data.tar``; read members in order."""
    source = path.name
    with open(path, "rb") as f:
        members = list(arfile.iter_members(f, source=source))
        if not members or members[0].name != "debian-binary":
            raise DebError(f"{source}: not a Debian package (first ar member is not debian-binary)")
        data = [m for m in members if m.name.startswith("data.tar")]
        if len(data) != 1:
            raise DebError(f"{source}: expected one data.tar member, found {len(data)}")
        raw = arfile.open_member(f, data[0])
        stream = _decompressor(data[0].name, raw, source)
        limited = io.BufferedReader(_Limited(stream, limit, source), buffer_size=1 << 20)
        try:
            with tarfile.open(fileobj=limited, mode="r|") as tf:
                yield tf
        except (tarfile.TarError, lzma.LZMAError, EOFError, OSError) as exc:
            raise DebError(f"{source}: corrupt data.tar: {exc}") from None
