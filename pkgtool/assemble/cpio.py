"""A streaming, deterministic ``newc`` cpio writer (the Linux initramfs format).

Determinism: entries come in :meth:`Tree.walk` order (depth-first, bytewise-sorted names),
inode numbers are assigned 1, 2, … in that order (hard links share the number of the
first path), every mtime is the one given (``SOURCE_DATE_EPOCH``), and the "device of the
containing filesystem" fields are 0.  Hard links follow GNU cpio's newc convention: every
link carries the group's nlink, and only the last one carries the data; the kernel's
unpacker and ``cpio -i`` both accept it.  There is no entry for the root directory (the
kernel's rootfs already exists).

Compression (:func:`compressor`) pins its parameters too: the same deterministic, parallel
compressor as the image layers.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from typing import IO, cast

from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.oci.filetree import Inode, Kind, Tree

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
_MAX_FIELD = 0xFFFFFFFF

TYPE_BITS = {
    Kind.FILE: stat.S_IFREG,
    Kind.DIR: stat.S_IFDIR,
    Kind.SYMLINK: stat.S_IFLNK,
    Kind.CHAR: stat.S_IFCHR,
    Kind.BLOCK: stat.S_IFBLK,
    Kind.FIFO: stat.S_IFIFO,
}


def source_date_epoch(default: int = 0) -> int:
    """``$SOURCE_DATE_EPOCH`` as an int (the reproducible-builds convention), else ``default``."""
    text = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH must be a non-negative integer, got {text!r}")
    return int(text)


def symlink_safe_mode(inode: Inode) -> int:
    """Permission bits to write; symlinks always 0777 (Linux ignores them, layers disagree)."""
    return 0o777 if inode.kind is Kind.SYMLINK else inode.mode & 0o7777


def _pad(n: int) -> bytes:
    return b"\x00" * (-n % 4)


def header(*, name: bytes, ino: int, mode: int, uid: int, gid: int, nlink: int, mtime: int,
           size: int, rdevmajor: int = 0, rdevminor: int = 0) -> bytes:
    """One newc header plus the NUL-terminated, padded name."""
    fields = (ino, mode, uid, gid, nlink, mtime, size, 0, 0, rdevmajor, rdevminor, len(name) + 1, 0)
    for value in fields:
        if not 0 <= value <= _MAX_FIELD:
            raise PkgtoolError(f"cpio: {name.decode('utf-8', 'replace')}: value {value} does not fit the newc format")
    out = MAGIC + b"".join(b"%08X" % v for v in fields) + name + b"\x00"
    return out + _pad(len(out))


def write_cpio(tree: Tree, out: IO[bytes], *, mtime: int, omit: Callable[[str, Inode], bool] | None = None) -> int:
    """Write ``tree`` as a newc archive to ``out``; returns the number of bytes written.

    ``omit`` leaves out entries (never their children): a segment of a concatenated initrd
    omits directories that an earlier segment already made, so as not to change them.
    """
    written = 0
    numbers: dict[int, int] = {}  # id(inode) -> inode number
    remaining: dict[int, int] = {}  # links of a group still to come
    for path, inode, nlink in tree.walk():
        if omit is not None and inode.kind is Kind.DIR and omit(path, inode):
            continue
        key = id(inode)
        if key not in numbers:
            numbers[key] = len(numbers) + 1
            remaining[key] = nlink
        remaining[key] -= 1
        # Hard-linked files: data only with the last link (GNU cpio's newc convention).
        with_data = inode.kind is not Kind.FILE or remaining[key] == 0
        for chunk in _entry(path, inode, nlink, numbers[key], mtime, with_data):
            out.write(chunk)
            written += len(chunk)
    trailer = header(name=TRAILER.encode(), ino=0, mode=0, uid=0, gid=0, nlink=1, mtime=0, size=0)
    out.write(trailer)
    return written + len(trailer)


def _entry(path: str, inode: Inode, nlink: int, ino: int, mtime: int, with_data: bool) -> Iterator[bytes]:
    name = path.encode("utf-8", "surrogateescape")
    mode = TYPE_BITS[inode.kind] | symlink_safe_mode(inode)
    if inode.kind is Kind.SYMLINK:
        data = inode.linkname.encode("utf-8", "surrogateescape")
        yield header(name=name, ino=ino, mode=mode, uid=inode.uid, gid=inode.gid, nlink=nlink, mtime=mtime, size=len(data))
        yield data + _pad(len(data))
        return
    size = inode.size if with_data and inode.kind is Kind.FILE else 0
    devices = (inode.devmajor, inode.devminor) if inode.kind in (Kind.CHAR, Kind.BLOCK) else (0, 0)
    yield header(name=name, ino=ino, mode=mode, uid=inode.uid, gid=inode.gid, nlink=nlink, mtime=mtime,
                 size=size, rdevmajor=devices[0], rdevminor=devices[1])
    if size:
        assert inode.content is not None
        seen = 0
        for chunk in inode.content.chunks():
            seen += len(chunk)
            yield chunk
        if seen != size:
            raise PkgtoolError(f"cpio: {path}: expected {size} bytes of content, got {seen}")
        yield _pad(size)


# gzip level 5 for the initramfs, not the layers' 6: on a Debian kernel's whole module tree
# plus a Debian service (885 MB of cpio) level 5 spent 25.3 s of CPU against 37.8 s for
# level 6, for an output 1.2% larger (279.1 MB against 275.7 MB; level 4: 18.8 s, +3.6%).
# The initrd is compressed on every cold build and unpacked at the same speed whatever the
# level.  zstd keeps the layers' level 3.
INITRD_GZIP_LEVEL = 5
# zstd jobs of 4 MiB, not the default 8 MiB (4x the level-3 window): the compressor's memory
# falls from 57 to 32 MB for an initrd 0.2% larger and 4% slower to write (the same cpio).
INITRD_ZSTD_JOB_SIZE = 4 * 1024 * 1024


def initrd_level(kind: str) -> int:
    """The compression level of initrd segments of ``kind`` (gzip or zstd)."""
    from pkgtool.oci.compress import ZSTD_LEVEL

    return INITRD_GZIP_LEVEL if kind == "gzip" else ZSTD_LEVEL


@contextlib.contextmanager
def compressor(out: IO[bytes], kind: str = "gzip") -> Iterator[IO[bytes]]:
    """A writable stream compressing into ``out`` (which stays open); ``kind``: gzip, zstd, none.

    The layers' compressor (:class:`pkgtool.oci.compress.DeterministicCompressor`): gzip at
    :data:`INITRD_GZIP_LEVEL` in independent blocks on every core, zstd multi-threaded at
    a fixed level, both giving the same bytes whatever the number of cores.  A Debian kernel's ~400 MB of
    modules is why it must be parallel: single-threaded gzip -9 took over two minutes.
    """
    if kind == "none":
        yield out
        return
    if kind not in ("gzip", "zstd"):
        raise UsageError(f"unknown compression {kind!r} (gzip, zstd or none)")
    from pkgtool.oci.compress import DeterministicCompressor

    stream = DeterministicCompressor(out, compression="gzip" if kind == "gzip" else "zstd", level=initrd_level(kind),
                                     zstd_job_size=INITRD_ZSTD_JOB_SIZE)
    try:
        yield cast(IO[bytes], stream)
    except BaseException:
        stream.abort()
        raise
    stream.close()
