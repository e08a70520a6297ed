"""A small, strict reader for Unix ``ar`` archives (the outer format of a ``.deb``).

Only what a ``.deb`` uses is accepted: the ``!<arch>\\n`` magic, then 60-byte member headers
``name[16] mtime[12] uid[6] gid[6] mode[8] size[10] "`\\n"``, each member's data padded to an
even offset.  GNU long-name tables and BSD ``#1/`` names are refused: dpkg never writes
them, so seeing one means the file is not a package we pinned.

The bytes are hostile until proven otherwise (the sha256 is checked before this runs, but
the parser does not rely on that): every size is bounded by the file's real length, names
must be short printable ASCII, and a member is only ever read through a bounded view.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from pkgtool.errors import PkgtoolError

MAGIC = b"!<arch>\n"
HEADER_SIZE = 60
_FMAG = b"`\n"
# A .deb has three members; anything with hundreds is not one.
MAX_MEMBERS = 64


class ArError(PkgtoolError):
    """The file is not a well-formed ar archive."""


@dataclass(frozen=True)
class ArMember:
    name: str
    offset: int  # of the data, from the start of the file
    size: int
    mode: int


def _field_int(raw: bytes, *, base: int, what: str, source: str) -> int:
    text = raw.decode("ascii", errors="replace").strip()
    if not text:
        return 0
    try:
        value = int(text, base)
    except ValueError:
        raise ArError(f"{source}: malformed ar header: {what} {text!r}") from None
    if value < 0:
        raise ArError(f"{source}: malformed ar header: negative {what}")
    return value


def iter_members(f: BinaryIO, *, source: str = "archive") -> Iterator[ArMember]:
    """Yield the members of the ar archive open in ``f`` (seekable), in file order."""
    total = f.seek(0, os.SEEK_END)
    f.seek(0)
    if f.read(len(MAGIC)) != MAGIC:
        raise ArError(f"{source}: not an ar archive (bad magic)")
    pos = len(MAGIC)
    count = 0
    while pos < total:
        if pos + HEADER_SIZE > total:
            raise ArError(f"{source}: truncated ar header at offset {pos}")
        f.seek(pos)
        header = f.read(HEADER_SIZE)
        if header[58:60] != _FMAG:
            raise ArError(f"{source}: malformed ar header at offset {pos}")
        raw_name = header[0:16].rstrip(b" ")
        # GNU ar ends short names with "/"; dpkg does not, but tolerate it.
        if raw_name.endswith(b"/") and raw_name != b"/":
            raw_name = raw_name[:-1]
        if not raw_name or raw_name.startswith((b"/", b"#1/")) or not all(0x21 <= b < 0x7F for b in raw_name):
            raise ArError(f"{source}: unsupported ar member name {raw_name!r} at offset {pos}")
        size = _field_int(header[48:58], base=10, what="size", source=source)
        mode = _field_int(header[40:48], base=8, what="mode", source=source)
        data = pos + HEADER_SIZE
        if data + size > total:
            raise ArError(f"{source}: ar member {raw_name.decode()!r} runs past the end of the file")
        count += 1
        if count > MAX_MEMBERS:
            raise ArError(f"{source}: more than {MAX_MEMBERS} ar members")
        yield ArMember(name=raw_name.decode("ascii"), offset=data, size=size, mode=mode)
        pos = data + size + (size & 1)


def find_member(f: BinaryIO, prefix: str, *, source: str = "archive") -> ArMember:
    """The single member whose name starts with ``prefix`` (e.g. ``data.tar``)."""
    found = [m for m in iter_members(f, source=source) if m.name.startswith(prefix)]
    if len(found) != 1:
        raise ArError(f"{source}: expected exactly one {prefix}* member, found {len(found)}")
    return found[0]


class BoundedReader(io.RawIOBase):
    """A read-only view of ``size`` bytes at ``offset`` of ``f``: reads never leave it."""

    def __init__(self, f: BinaryIO, offset: int, size: int) -> None:
        super().__init__()
        self._f = f
        self._start = offset
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        remaining = self._size - self._pos
        if remaining <= 0:
            return 0
        want = min(len(buffer), remaining)
        self._f.seek(self._start + self._pos)
        chunk = self._f.read(want)
        n = len(chunk)
        buffer[:n] = chunk
        self._pos += n
        return n


def open_member(f: BinaryIO, member: ArMember) -> io.BufferedReader:
    """A buffered reader over exactly ``member``'s bytes."""
    return io.BufferedReader(BoundedReader(f, member.offset, member.size), buffer_size=1 << 20)
