"""``gcp``: ``NAME.img.tar.gz``, the cloud disk (:mod:`.cloud_disk`) as GCE's image import
wants it: a gzip'd tar in GNU's old format (``tar --format=oldgnu``) whose one member is
``disk.raw``, a raw disk whose size is a whole number of GiB.

The member is written sparse (type ``S``, as ``tar -S`` writes it): only the runs of blocks
that hold a non-zero byte are stored, with the map of where they go, so the archive and the
time to compress it follow the disk's content, not its GiB size.  GNU tar, Python's tarfile
and GCE's importer restore the holes as zeros.

Determinism: the sparse map comes from the content (4 KiB blocks that are all zero are
holes), never from the file system's own holes (which differ between file systems); the
header's times are ``SOURCE_DATE_EPOCH``, owners 0 and names empty; gzip has no file name
and mtime 0, at a fixed level.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.formats.cloud_disk import GIB, cloud_raw
from pkgtool.errors import PkgtoolError

BLOCK = 512
HOLE_GRAIN = 4096  # the file system block most disks' holes are made of
RECORD = 20 * BLOCK  # GNU tar's default record: the archive is padded to a multiple of it
OLDGNU_MAGIC = b"ustar  \0"
SPARSES_IN_HEADER = 4
SPARSES_IN_EXTENSION = 21
GZIP_LEVEL = 6  # gzip's default: what `tar -z` gives; fixed here so the bytes are


def _number(value: int, width: int) -> bytes:
    """A numeric header field: octal digits and a NUL, or GNU's base-256 when too large."""
    if value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    return b"\x80" + value.to_bytes(width - 1, "big")


def data_runs(raw: BinaryIO, size: int) -> list[tuple[int, int]]:
    """(offset, length) of every maximal run of 4 KiB blocks holding a non-zero byte."""
    runs: list[tuple[int, int]] = []
    raw.seek(0)
    offset = 0
    while offset < size and (chunk := raw.read(1 << 20)):
        if chunk.count(0) != len(chunk):
            for at in range(0, len(chunk), HOLE_GRAIN):
                block = chunk[at:at + HOLE_GRAIN]
                if block.count(0) == len(block):
                    continue
                start = offset + at
                if runs and sum(runs[-1]) == start:
                    runs[-1] = (runs[-1][0], runs[-1][1] + len(block))
                else:
                    runs.append((start, len(block)))
        offset += len(chunk)
    return runs


def _sparse_entries(runs: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    entries = list(runs)
    if not entries or entries[-1][0] + entries[-1][1] < size:
        entries.append((size, 0))  # a file that ends in a hole: the map says where it ends
    return entries


def _pack_entries(entries: list[tuple[int, int]]) -> bytes:
    return b"".join(_number(offset, 12) + _number(length, 12) for offset, length in entries)


def sparse_headers(name: str, entries: list[tuple[int, int]], *, size: int, mtime: int) -> bytes:
    """The member's header block and its sparse extension blocks."""
    stored = sum(length for _, length in entries)
    head = bytearray(BLOCK)
    head[0:len(name)] = name.encode()
    head[100:108] = _number(0o644, 8)
    head[108:116] = _number(0, 8)
    head[116:124] = _number(0, 8)
    head[124:136] = _number(stored, 12)
    head[136:148] = _number(mtime, 12)
    head[156:157] = b"S"
    head[257:265] = OLDGNU_MAGIC
    first, rest = entries[:SPARSES_IN_HEADER], entries[SPARSES_IN_HEADER:]
    packed = _pack_entries(first)
    head[386:386 + len(packed)] = packed
    head[482] = 1 if rest else 0
    head[483:495] = _number(size, 12)
    head[148:156] = b" " * 8
    head[148:156] = b"%06o\0 " % sum(head)
    blocks = [bytes(head)]
    while rest:
        chunk, rest = rest[:SPARSES_IN_EXTENSION], rest[SPARSES_IN_EXTENSION:]
        ext = bytearray(BLOCK)
        packed = _pack_entries(chunk)
        ext[0:len(packed)] = packed
        ext[504] = 1 if rest else 0
        blocks.append(bytes(ext))
    return b"".join(blocks)


def _data(raw: BinaryIO, runs: list[tuple[int, int]]) -> Iterator[bytes]:
    for offset, length in runs:
        raw.seek(offset)
        left = length
        while left:
            chunk = raw.read(min(left, 1 << 20))
            if not chunk:
                raise PkgtoolError(f"gcp: {raw.name} changed while it was archived")
            left -= len(chunk)
            yield chunk


def write(inp: FormatInput, stage: Path) -> list[Path]:
    raw_path = cloud_raw(inp, align=GIB)
    size = raw_path.stat().st_size
    dest = stage / f"{inp.name}.img.tar.gz"
    with raw_path.open("rb") as raw, dest.open("wb") as out, \
            gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=GZIP_LEVEL, mtime=0) as archive:
        runs = data_runs(raw, size)
        headers = sparse_headers("disk.raw", _sparse_entries(runs, size), size=size, mtime=inp.mtime)
        archive.write(headers)
        stored = 0
        for chunk in _data(raw, runs):
            archive.write(chunk)
            stored += len(chunk)
        padding = -stored % BLOCK
        end = bytes(2 * BLOCK)  # two zero blocks end the archive
        archive.write(bytes(padding) + end + bytes(-(len(headers) + stored + padding + len(end)) % RECORD))
    return [dest]
