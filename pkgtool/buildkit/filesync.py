"""fsutil's DiffCopy protocol, both directions.

BuildKit moves directories with fsutil packets over a gRPC bidi stream:

* the *sender* lists every entry as a ``PACKET_STAT`` (depth-first, parent before children,
  names sorted bytewise, ``/`` separators; BuildKit rejects anything else as "changes out of
  order"), ends the list with an empty STAT, then answers each ``PACKET_REQ{ID}`` with
  ``PACKET_DATA`` chunks and an empty DATA.  The ID is the index of the STAT among all
  STATs.  ``PACKET_FIN`` from the receiver ends the exchange; the sender answers FIN.
* the *receiver* does the opposite.

pkgtool is the sender for the build context (FileSync.DiffCopy) and the receiver for the
``local`` exporter (FileSend.DiffCopy).  The ``tar`` exporter instead streams plain
BytesMessage chunks of one tar file (:func:`receive_bytes`).

``Stat.mode`` is a Go ``os.FileMode``: the permission bits plus type flags in the high bits,
not a POSIX ``st_mode``.
"""

from __future__ import annotations

import os
import queue
import stat as statmod
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pkgtool.buildkit._gen import stat_pb2, wire_pb2
from pkgtool.errors import PkgtoolError

Packet = wire_pb2.Packet
Stat = stat_pb2.Stat

CHUNK_SIZE = 32 * 1024

# Go os.FileMode type bits.
GO_MODE_DIR = 1 << 31
GO_MODE_SYMLINK = 1 << 27
GO_MODE_DEVICE = 1 << 26
GO_MODE_NAMED_PIPE = 1 << 25
GO_MODE_SOCKET = 1 << 24
GO_MODE_SETUID = 1 << 23
GO_MODE_SETGID = 1 << 22
GO_MODE_CHAR_DEVICE = 1 << 21
GO_MODE_STICKY = 1 << 20
GO_MODE_TYPE = (
    GO_MODE_DIR | GO_MODE_SYMLINK | GO_MODE_DEVICE | GO_MODE_NAMED_PIPE | GO_MODE_SOCKET
    | GO_MODE_CHAR_DEVICE
)

# Bounds on what a daemon may send us when we receive a `local` export: hostile input.
MAX_RECEIVED_ENTRIES = 1_000_000
MAX_PATH_BYTES = 4096


def go_file_mode(st_mode: int) -> int:
    """POSIX ``st_mode`` -> Go ``os.FileMode`` (what fsutil puts in ``Stat.mode``)."""
    mode = st_mode & 0o777
    fmt = statmod.S_IFMT(st_mode)
    if fmt == statmod.S_IFDIR:
        mode |= GO_MODE_DIR
    elif fmt == statmod.S_IFLNK:
        mode |= GO_MODE_SYMLINK
    elif fmt == statmod.S_IFBLK:
        mode |= GO_MODE_DEVICE
    elif fmt == statmod.S_IFCHR:
        mode |= GO_MODE_DEVICE | GO_MODE_CHAR_DEVICE
    elif fmt == statmod.S_IFIFO:
        mode |= GO_MODE_NAMED_PIPE
    elif fmt == statmod.S_IFSOCK:
        mode |= GO_MODE_SOCKET
    if st_mode & statmod.S_ISUID:
        mode |= GO_MODE_SETUID
    if st_mode & statmod.S_ISGID:
        mode |= GO_MODE_SETGID
    if st_mode & statmod.S_ISVTX:
        mode |= GO_MODE_STICKY
    return mode


def posix_mode(go_mode: int) -> int:
    """Go ``os.FileMode`` -> POSIX ``st_mode`` (for writing what a sender gave us)."""
    mode = go_mode & 0o777
    if go_mode & GO_MODE_DIR:
        mode |= statmod.S_IFDIR
    elif go_mode & GO_MODE_SYMLINK:
        mode |= statmod.S_IFLNK
    elif go_mode & GO_MODE_CHAR_DEVICE:
        mode |= statmod.S_IFCHR
    elif go_mode & GO_MODE_DEVICE:
        mode |= statmod.S_IFBLK
    elif go_mode & GO_MODE_NAMED_PIPE:
        mode |= statmod.S_IFIFO
    elif go_mode & GO_MODE_SOCKET:
        mode |= statmod.S_IFSOCK
    else:
        mode |= statmod.S_IFREG
    if go_mode & GO_MODE_SETUID:
        mode |= statmod.S_ISUID
    if go_mode & GO_MODE_SETGID:
        mode |= statmod.S_ISGID
    if go_mode & GO_MODE_STICKY:
        mode |= statmod.S_ISVTX
    return mode


class WalkEntry(Protocol):
    """One walked file: what :func:`pkgtool.fswalk.walk` yields, in fsutil order."""

    @property
    def relpath(self) -> str: ...

    @property
    def stat(self) -> os.stat_result: ...

    @property
    def link_target(self) -> str | None: ...


def path_key(relpath: str) -> list[bytes]:
    """Sort key giving fsutil's order: per-component bytewise, so ``a/x`` sorts before ``a-b``."""
    return [os.fsencode(part) for part in relpath.split("/")]


def make_stats(entries: Iterable[WalkEntry]) -> Iterator[tuple[Stat, WalkEntry]]:
    """The STAT for each entry, with hardlinks after the first turned into links (size 0)."""
    first_path: dict[tuple[int, int], str] = {}
    for entry in entries:
        st = entry.stat
        msg = Stat(
            path=entry.relpath,
            mode=go_file_mode(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            modTime=st.st_mtime_ns,
        )
        if statmod.S_ISREG(st.st_mode):
            msg.size = st.st_size
        if statmod.S_ISLNK(st.st_mode):
            msg.linkname = entry.link_target or ""
        elif statmod.S_ISBLK(st.st_mode) or statmod.S_ISCHR(st.st_mode):
            msg.devmajor = os.major(st.st_rdev)
            msg.devminor = os.minor(st.st_rdev)
        if not statmod.S_ISDIR(st.st_mode) and st.st_nlink > 1:
            inode = (st.st_dev, st.st_ino)
            if inode in first_path:
                # fsutil's hardlink encoding: the first path as linkname, no data of its own.
                msg.linkname = first_path[inode]
                msg.size = 0
            else:
                first_path[inode] = entry.relpath
        yield msg, entry


@dataclass
class SendStats:
    """What one DiffCopy sent; lets callers (and benchmarks) see that unchanged files were skipped."""

    entries: int = 0
    files_requested: int = 0
    bytes_sent: int = 0


class DiffCopySender:
    """The sender side of DiffCopy for one directory.

    :meth:`run` turns the receiver's packets into ours.  It is a plain generator over plain
    iterators so the state machine can be driven in memory by tests; the gRPC handler feeds
    it the request stream.
    """

    def __init__(self, root: Path, entries: Iterable[WalkEntry]) -> None:
        self.root = root
        self.entries = entries
        self.stats = SendStats()
        # ID -> relpath of a regular file whose data the receiver may ask for.
        self._files: dict[int, str] = {}

    def run(self, incoming: Iterator[Packet]) -> Iterator[Packet]:
        inbox: queue.Queue[Packet | BaseException | None] = queue.Queue()

        # Read the receiver's packets on a thread while we are still listing: it may send
        # REQs (or an ERR) before the list ends, and must never be blocked by us.
        def pump() -> None:
            try:
                for pkt in incoming:
                    inbox.put(pkt)
                inbox.put(None)
            except BaseException as exc:
                inbox.put(exc)

        threading.Thread(target=pump, name="diffcopy-recv", daemon=True).start()

        for index, (msg, entry) in enumerate(make_stats(self.entries)):
            if statmod.S_ISREG(entry.stat.st_mode) and not msg.linkname:
                self._files[index] = entry.relpath
            self.stats.entries += 1
            yield Packet(type=Packet.PACKET_STAT, stat=msg)
        yield Packet(type=Packet.PACKET_STAT)

        while True:
            item = inbox.get()
            if item is None:
                # The receiver closed without FIN; nothing more to answer.
                return
            if isinstance(item, BaseException):
                raise item
            if item.type == Packet.PACKET_REQ:
                yield from self._send_file(item.ID)
            elif item.type == Packet.PACKET_FIN:
                yield Packet(type=Packet.PACKET_FIN)
                return
            elif item.type == Packet.PACKET_ERR:
                raise PkgtoolError(
                    f"BuildKit aborted the transfer of {self.root}: "
                    f"{item.data.decode(errors='replace')}"
                )
            else:
                raise PkgtoolError(f"unexpected fsutil packet type {item.type} from BuildKit")

    def _send_file(self, file_id: int) -> Iterator[Packet]:
        relpath = self._files.get(file_id)
        if relpath is None:
            raise PkgtoolError(f"BuildKit requested unknown file id {file_id}")
        self.stats.files_requested += 1
        # O_NOFOLLOW: the entry was listed as a regular file; never read through a symlink
        # swapped in since.
        fd = os.open(self.root / relpath, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            while chunk := fh.read(CHUNK_SIZE):
                self.stats.bytes_sent += len(chunk)
                yield Packet(type=Packet.PACKET_DATA, ID=file_id, data=chunk)
        yield Packet(type=Packet.PACKET_DATA, ID=file_id)


def safe_relpath(path: str) -> str:
    """A received path, checked: relative, no ``..``, no empty or ``.`` components."""
    if len(path.encode()) > MAX_PATH_BYTES or "\x00" in path:
        raise PkgtoolError(f"BuildKit sent an invalid path {path[:100]!r}")
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise PkgtoolError(f"BuildKit sent an unsafe path {path!r}")
    return path


class DiffCopyReceiver:
    """The receiver side of DiffCopy, writing into an empty directory ``dest``.

    Used for the ``local`` exporter.  Paths are hostile input: they must be relative without
    ``..``, and nothing is written below a symlink or anything that is not a directory we made.
    """

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self._dirs: set[str] = {""}

    def run(self, incoming: Iterator[Packet]) -> Iterator[Packet]:
        self.dest.mkdir(parents=True, exist_ok=True)
        stats: list[Stat] = []
        for pkt in incoming:
            if pkt.type == Packet.PACKET_ERR:
                raise PkgtoolError(f"BuildKit aborted the export: {pkt.data.decode(errors='replace')}")
            if pkt.type != Packet.PACKET_STAT:
                raise PkgtoolError(f"unexpected fsutil packet type {pkt.type} while listing")
            if not pkt.HasField("stat"):
                break
            if len(stats) >= MAX_RECEIVED_ENTRIES:
                raise PkgtoolError("BuildKit sent too many entries")
            stats.append(pkt.stat)
        else:
            raise PkgtoolError("BuildKit closed the export before listing everything")

        dir_times: list[tuple[Path, int]] = []
        for file_id, st in enumerate(stats):
            rel = safe_relpath(st.path)
            parent, _, _ = rel.rpartition("/")
            if parent not in self._dirs:
                raise PkgtoolError(f"BuildKit sent {rel!r} before its directory")
            target = self.dest / rel
            mode = posix_mode(st.mode)
            if statmod.S_ISDIR(mode):
                target.mkdir(exist_ok=False)
                self._dirs.add(rel)
                dir_times.append((target, st.modTime))
                os.chmod(target, statmod.S_IMODE(mode))
                continue
            if statmod.S_ISLNK(mode):
                os.symlink(st.linkname, target)
                os.utime(target, ns=(st.modTime, st.modTime), follow_symlinks=False)
                continue
            if st.linkname:
                source = self.dest / safe_relpath(st.linkname)
                if not source.is_file() or source.is_symlink():
                    raise PkgtoolError(f"BuildKit sent a hardlink to a non-file {st.linkname!r}")
                os.link(source, target)
                continue
            if not statmod.S_ISREG(mode):
                # Devices, pipes and sockets cannot be recreated unprivileged; a package
                # export never needs them.
                continue
            yield Packet(type=Packet.PACKET_REQ, ID=file_id)
            self._write_file(target, file_id, incoming)
            os.chmod(target, statmod.S_IMODE(mode))
            os.utime(target, ns=(st.modTime, st.modTime))
        # Directory times last, deepest first: writing into a directory bumps its mtime.
        for path, mtime in reversed(dir_times):
            os.utime(path, ns=(mtime, mtime))
        yield Packet(type=Packet.PACKET_FIN)
        for pkt in incoming:
            if pkt.type == Packet.PACKET_FIN:
                return

    def _write_file(self, target: Path, file_id: int, incoming: Iterator[Packet]) -> None:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            for pkt in incoming:
                if pkt.type == Packet.PACKET_ERR:
                    raise PkgtoolError(f"BuildKit aborted the export: {pkt.data.decode(errors='replace')}")
                if pkt.type != Packet.PACKET_DATA or file_id != pkt.ID:
                    raise PkgtoolError(f"unexpected fsutil packet while receiving file {file_id}")
                if not pkt.data:
                    return
                fh.write(pkt.data)
        raise PkgtoolError("BuildKit closed the export in the middle of a file")


def receive_bytes(chunks: Iterable[bytes], dest: Path, *, on_chunk: Callable[[int], None] | None = None) -> int:
    """Write a stream of chunks (the ``tar`` exporter's BytesMessage data) to ``dest``."""
    total = 0
    tmp = dest.with_name(dest.name + ".part")
    with open(tmp, "wb") as fh:
        for chunk in chunks:
            fh.write(chunk)
            total += len(chunk)
            if on_chunk:
                on_chunk(len(chunk))
    os.replace(tmp, dest)
    return total
