"""The image's file tree, built by streaming layer tars (nothing is extracted to disk).

A :class:`Tree` holds metadata for every path and a *reference* to each file's bytes: a
range of an uncompressed blob already on disk, a range of one shared spill file (for
compressed layers, whose members cannot be re-read by offset), or small in-memory bytes
for generated files.  Memory stays proportional to the number of entries, not their size.

Layers of one image are applied to that image's own tree, so OCI whiteouts (``.wh.NAME``)
and opaque directories (``.wh..wh..opq``) only ever hide files from the *same* image's lower
layers (entries of the same layer survive, as the image spec requires).  The flattened
image is then laid into the image tree at a prefix with :meth:`Tree.overlay`, where a later
image wins over an earlier one.

Hostile input: names with ``..`` components and absolute names are rejected; a path whose
parent goes through a symlink is resolved *inside* the image root (chroot-style, like
containerd's archive.Apply: an absolute target starts again at the root), and a resolution
that would climb above the root is rejected; hard links must name an existing non-directory
in the same root.  Errors name the image and the entry.  Device nodes and FIFOs are only
metadata here; nothing is ever created on the host.

Iteration order (:meth:`Tree.walk`) is depth-first with children sorted by the bytes of
their names, so parents always precede their children and output is deterministic.
"""

from __future__ import annotations

import enum
import gzip
import io
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, cast

from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.spec.image import FileEntry, Id

_CHUNK = 1 << 20
_MAX_SYMLINK_HOPS = 40
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"


class Kind(enum.Enum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"
    CHAR = "char"
    BLOCK = "block"
    FIFO = "fifo"


class Content(Protocol):
    @property
    def size(self) -> int: ...

    def chunks(self) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class BytesContent:
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def chunks(self) -> Iterator[bytes]:
        if self.data:
            yield self.data


def _read_range(fd: int, offset: int, size: int, what: str) -> Iterator[bytes]:
    end = offset + size
    while offset < end:
        chunk = os.pread(fd, min(_CHUNK, end - offset), offset)
        if not chunk:
            raise PkgtoolError(f"{what}: content truncated (file changed underneath us?)")
        offset += len(chunk)
        yield chunk


@dataclass(frozen=True)
class FileRange:
    """Bytes ``[offset, offset+size)`` of a file on disk (an uncompressed, digest-verified blob)."""

    path: Path
    offset: int
    size: int

    def chunks(self) -> Iterator[bytes]:
        fd = os.open(self.path, os.O_RDONLY)
        try:
            yield from _read_range(fd, self.offset, self.size, str(self.path))
        finally:
            os.close(fd)


class SpillStore:
    """One append-only temporary file holding the bytes of files from compressed layers."""

    def __init__(self, directory: Path | None = None) -> None:
        # Lives as long as the store (closed in close()), so no context manager here.
        self._file = tempfile.TemporaryFile(dir=directory, prefix="pkgtool-tree-", buffering=0)  # noqa: SIM115
        self._fd = self._file.fileno()
        self._end = 0

    def put(self, reader: IO[bytes], size: int, *, what: str) -> SpillContent:
        offset, remaining = self._end, size
        while remaining:
            chunk = reader.read(min(_CHUNK, remaining))
            if not chunk:
                raise PkgtoolError(f"{what}: layer ends inside the file's data")
            self._write(chunk)
            remaining -= len(chunk)
        return SpillContent(self, offset, size)

    def put_bytes(self, data: bytes) -> SpillContent:
        offset = self._end
        self._write(data)
        return SpillContent(self, offset, len(data))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, self._end)
            self._end += n
            view = view[n:]

    def read(self, offset: int, size: int) -> Iterator[bytes]:
        return _read_range(self._fd, offset, size, "spill file")

    def close(self) -> None:
        self._file.close()


@dataclass(frozen=True)
class SpillContent:
    store: SpillStore
    offset: int
    size: int

    def chunks(self) -> Iterator[bytes]:
        return self.store.read(self.offset, self.size)


@dataclass(eq=False)
class Inode:
    """Metadata of one file; hard links are several paths sharing one Inode object."""

    kind: Kind
    mode: int = 0o644  # permission bits incl. setuid/setgid/sticky (0o7777)
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    linkname: str = ""  # symlink target, verbatim
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    content: Content | None = None

    @property
    def size(self) -> int:
        if self.kind is Kind.SYMLINK:
            return len(self.linkname.encode("utf-8", "surrogateescape"))
        return self.content.size if self.content is not None else 0


class _Node:
    __slots__ = ("children", "inode", "layer")

    def __init__(self, inode: Inode, layer: int) -> None:
        self.inode = inode
        self.layer = layer  # the layer that last wrote this path: scopes whiteouts
        self.children: dict[str, _Node] | None = {} if inode.kind is Kind.DIR else None


def _dir_inode(mode: int = 0o755, uid: int = 0, gid: int = 0) -> Inode:
    return Inode(Kind.DIR, mode=mode, uid=uid, gid=gid)


def split_path(name: str, what: str) -> list[str]:
    """The components of a relative archive name; ``..`` and absolute names are errors."""
    if "\x00" in name:
        raise PkgtoolError(f"{what}: NUL byte in name")
    if name.startswith("/"):
        raise PkgtoolError(f"{what}: absolute path {name!r} rejected")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PkgtoolError(f"{what}: path {name!r} with '..' rejected")
    return parts


class Tree:
    """Paths (relative to the image root) mapped to :class:`Inode` metadata and content."""

    def __init__(self, *, store: SpillStore | None = None) -> None:
        self._root = _Node(_dir_inode(), 0)
        self._own_store = store is None
        self.store = store if store is not None else SpillStore()

    def close(self) -> None:
        if self._own_store:
            self.store.close()

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ lookups

    def get(self, path: str) -> Inode | None:
        """The inode at exactly ``path`` (no symlinks followed)."""
        node: _Node | None = self._root
        for part in split_path(path, path):
            if node is None or node.children is None:
                return None
            node = node.children.get(part)
        return node.inode if node is not None else None

    def read(self, path: str) -> bytes:
        inode = self.get(path)
        if inode is None or inode.kind is not Kind.FILE:
            raise KeyError(path)
        return b"".join(inode.content.chunks()) if inode.content else b""

    def walk(self) -> Iterator[tuple[str, Inode, int]]:
        """``(path, inode, nlink)`` depth-first, children sorted bytewise; the root is not listed."""
        links: dict[int, int] = {}
        for _, node in self._nodes(self._root, ""):
            if node.inode.kind is not Kind.DIR:
                links[id(node.inode)] = links.get(id(node.inode), 0) + 1
        for path, node in self._nodes(self._root, ""):
            inode = node.inode
            if node.children is not None:
                nlink = 2 + sum(1 for c in node.children.values() if c.children is not None)
            else:
                nlink = links[id(inode)]
            yield path, inode, nlink

    def _nodes(self, node: _Node, prefix: str) -> Iterator[tuple[str, _Node]]:
        assert node.children is not None
        for name in sorted(node.children, key=lambda n: n.encode("utf-8", "surrogateescape")):
            child = node.children[name]
            path = f"{prefix}{name}"
            yield path, child
            if child.children is not None:
                yield from self._nodes(child, path + "/")

    # ------------------------------------------------------------------ placement

    def _root_node(self, root: Sequence[str], *, create: bool) -> _Node | None:
        """The node of the prefix ``root`` (our own layout, so no symlinks are followed)."""
        node = self._root
        for part in root:
            assert node.children is not None
            child = node.children.get(part)
            if child is None or child.children is None:
                if not create:
                    return None
                child = _Node(_dir_inode(), 0)
                node.children[part] = child
            node = child
        return node

    def _resolve_dir(self, root: Sequence[str], parts: Sequence[str], *, create: bool, layer: int, what: str) -> _Node | None:
        """The directory at ``root``/``parts``, following symlinks without leaving ``root``."""
        base = self._root_node(root, create=create)
        if base is None:
            return None
        stack = [base]
        queue = list(parts)
        hops = 0
        while queue:
            name = queue.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if len(stack) == 1:
                    raise PkgtoolError(f"{what}: path escapes the image root through a symlink")
                stack.pop()
                continue
            current = stack[-1]
            assert current.children is not None
            child = current.children.get(name)
            if child is None:
                if not create:
                    return None
                child = _Node(_dir_inode(), layer)
                current.children[name] = child
            elif child.inode.kind is Kind.SYMLINK:
                hops += 1
                if hops > _MAX_SYMLINK_HOPS:
                    raise PkgtoolError(f"{what}: too many levels of symlinks")
                target = child.inode.linkname
                if target.startswith("/"):
                    del stack[1:]  # absolute targets restart at the image root, never the host's
                queue[:0] = target.split("/")
                continue
            elif child.children is None:
                if not create:
                    return None
                raise PkgtoolError(f"{what}: a parent directory {name!r} is a {child.inode.kind.value}")
            stack.append(child)
        return stack[-1]

    def put(
        self,
        path: str,
        inode: Inode,
        *,
        root: str = "",
        layer: int = 0,
        what: str = "",
        keep_dir_symlinks: bool = False,
    ) -> None:
        """Place ``inode`` at ``root``/``path``; a later entry replaces an earlier one.

        A directory over a directory only updates its metadata.  With ``keep_dir_symlinks``
        a directory over a symlink that leads to a directory leaves the symlink alone (like
        dpkg and ``tar --keep-directory-symlink``), so a merged-/usr ``lib -> usr/lib`` survives
        a later image that ships ``lib/``.
        """
        what = what or path
        parts = split_path(path, what)
        root_parts = split_path(root, what)
        if not parts:
            if inode.kind is Kind.DIR:
                node = self._root_node(root_parts, create=True)
                assert node is not None
                node.inode = inode
            return
        parent = self._resolve_dir(root_parts, parts[:-1], create=True, layer=layer, what=what)
        assert parent is not None and parent.children is not None
        self._place(parent, parts, inode, root_parts, layer=layer, what=what, keep_dir_symlinks=keep_dir_symlinks)

    def _place(self, parent: _Node, parts: Sequence[str], inode: Inode, root_parts: Sequence[str], *, layer: int, what: str, keep_dir_symlinks: bool) -> None:
        assert parent.children is not None
        name = parts[-1]
        existing = parent.children.get(name)
        if existing is not None and inode.kind is Kind.DIR:
            if existing.children is not None:
                existing.inode, existing.layer = inode, layer
                return
            if keep_dir_symlinks and existing.inode.kind is Kind.SYMLINK:
                try:
                    target = self._resolve_dir(root_parts, parts, create=False, layer=layer, what=what)
                except PkgtoolError:
                    target = None
                if target is not None:
                    return
        parent.children[name] = _Node(inode, layer)

    def link(self, path: str, target: str, *, root: str = "", layer: int = 0, what: str = "") -> None:
        """A hard link at ``path`` to the existing non-directory ``target`` (both under ``root``)."""
        what = what or path
        tparts = split_path(target, what)
        root_parts = split_path(root, what)
        if not tparts:
            raise PkgtoolError(f"{what}: hard link to the root directory rejected")
        tdir = self._resolve_dir(root_parts, tparts[:-1], create=False, layer=layer, what=what)
        tnode = tdir.children.get(tparts[-1]) if tdir is not None and tdir.children is not None else None
        if tnode is None:
            raise PkgtoolError(f"{what}: hard link to {target!r}, which is not in the image")
        if tnode.children is not None:
            raise PkgtoolError(f"{what}: hard link to directory {target!r} rejected")
        self.put(path, tnode.inode, root=root, layer=layer, what=what)

    def whiteout(self, path: str, *, root: str = "", layer: int, what: str = "") -> None:
        """Apply ``.wh.NAME`` or ``.wh..wh..opq`` at ``path``: hide lower layers' entries."""
        what = what or path
        parts = split_path(path, what)
        directory = self._resolve_dir(split_path(root, what), parts[:-1], create=False, layer=layer, what=what)
        if directory is None or directory.children is None:
            return  # nothing below to hide
        name = parts[-1]
        if name == OPAQUE_MARKER:
            _prune_lower(directory, layer)
            return
        victim = directory.children.get(name[len(WHITEOUT_PREFIX):])
        if victim is not None and victim.layer < layer:
            del directory.children[name[len(WHITEOUT_PREFIX):]]

    # ------------------------------------------------------------------ whole trees

    def overlay(self, other: Tree, *, at: str = "", what: str = "", keep_dir_symlinks: bool = True) -> None:
        """Lay ``other`` (a flattened image) into this tree at ``at``; its entries win.

        Hard links keep sharing their inode.  When ``at`` is still empty the whole subtree is
        grafted in one step (the usual case for a container's rootfs).  ``other`` is consumed:
        do not use it afterwards (it may share nodes with this tree).
        """
        parts = split_path(at, what or at)
        if parts:
            parent = self._resolve_dir([], parts[:-1], create=True, layer=0, what=what or at)
            assert parent is not None and parent.children is not None
            if parts[-1] not in parent.children:
                graft = _Node(other._root.inode, 0)
                graft.children = other._root.children
                parent.children[parts[-1]] = graft
                other._root.children = {}
                return
        if parts:
            self.put(at, other._root.inode, what=what or at, keep_dir_symlinks=keep_dir_symlinks)
        for path, node in other._nodes(other._root, ""):
            self.put(path, node.inode, root=at, what=f"{what}: {path}" if what else path, keep_dir_symlinks=keep_dir_symlinks)

    def apply_layer(
        self,
        stream: IO[bytes],
        *,
        image: str,
        layer: int,
        root: str = "",
        blob_path: Path | None = None,
    ) -> None:
        """Stream one layer tar (plain, gzip or zstd) into the tree.

        ``layer`` numbers must grow with each layer of the image (from 1).  If the layer is
        an uncompressed tar and ``blob_path`` is the file ``stream`` reads from (from its
        start), file contents are referenced in place instead of being copied.
        """
        raw, compressed = _decompressed(stream)
        in_place = blob_path if not compressed else None
        try:
            with tarfile.open(fileobj=raw, mode="r|", errorlevel=2) as archive:
                for info in archive:
                    self._apply_member(archive, info, image=image, layer=layer, root=root, in_place=in_place)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise PkgtoolError(f"{image}: layer {layer}: not a readable tar layer: {exc}") from None

    def _apply_member(self, archive: tarfile.TarFile, info: tarfile.TarInfo, *, image: str, layer: int, root: str, in_place: Path | None) -> None:
        what = f"{image}: layer {layer}: entry {info.name!r}"
        parts = split_path(info.name, what)
        if not parts:
            return  # the layer's own "./": the root's metadata is ours to choose
        name = parts[-1]
        if name.startswith(WHITEOUT_PREFIX):
            self.whiteout(info.name, root=root, layer=layer, what=what)
            return
        xattrs = {
            k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape")
            for k, v in sorted(info.pax_headers.items())
            if k.startswith("SCHILY.xattr.")
        }
        inode = Inode(Kind.FILE, mode=info.mode & 0o7777, uid=info.uid, gid=info.gid, mtime=int(info.mtime), xattrs=xattrs)
        if info.islnk():
            split_path(info.linkname, what)  # reject '..'/absolute before resolving
            self.link(info.name, info.linkname, root=root, layer=layer, what=what)
            return
        if info.isreg():
            if info.size:
                if in_place is not None:
                    inode.content = FileRange(in_place, info.offset_data, info.size)
                else:
                    reader = archive.extractfile(info)
                    assert reader is not None
                    inode.content = self.store.put(reader, info.size, what=what)
        elif info.isdir():
            inode.kind = Kind.DIR
        elif info.issym():
            if not info.linkname:
                raise PkgtoolError(f"{what}: symlink with an empty target")
            inode.kind, inode.linkname = Kind.SYMLINK, info.linkname
        elif info.ischr() or info.isblk():
            inode.kind = Kind.CHAR if info.ischr() else Kind.BLOCK
            inode.devmajor, inode.devminor = info.devmajor, info.devminor
        elif info.isfifo():
            inode.kind = Kind.FIFO
        else:
            raise PkgtoolError(f"{what}: unsupported tar entry type {info.type!r}")
        self.put(info.name, inode, root=root, layer=layer, what=what)


def _prune_lower(directory: _Node, layer: int) -> None:
    assert directory.children is not None
    for name in list(directory.children):
        child = directory.children[name]
        if child.layer < layer:
            del directory.children[name]
        elif child.children is not None:
            _prune_lower(child, layer)


class _Prefixed(io.RawIOBase):
    """A reader that replays already-peeked bytes before the rest of the stream."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _decompressed(stream: IO[bytes]) -> tuple[IO[bytes], bool]:
    """``stream`` as a plain tar stream, sniffing gzip and zstd by their magic numbers."""
    head = stream.read(4)
    joined = io.BufferedReader(_Prefixed(head, stream), buffer_size=_CHUNK)
    if head.startswith(_GZIP_MAGIC):
        return cast(IO[bytes], gzip.GzipFile(fileobj=joined, mode="rb")), True
    if head.startswith(_ZSTD_MAGIC):
        import zstandard  # only when a zstd layer shows up

        return cast(IO[bytes], zstandard.ZstdDecompressor().stream_reader(joined)), True
    return joined, False


# --------------------------------------------------------------------------- helpers

def ensure_console(tree: Tree) -> None:
    """An initramfs needs ``/dev/console`` (char 5,1), or ``/init`` has nowhere to write."""
    if tree.get("dev") is None:
        tree.put("dev", _dir_inode())
    if tree.get("dev/console") is None:
        tree.put("dev/console", Inode(Kind.CHAR, mode=0o600, devmajor=5, devminor=1))


def _dir_mode_for(mode: int) -> int:
    """LinuxKit's mode for leading directories of a ``files:`` entry: add x where r/w is set."""
    out = mode
    for bits, x in ((0o700, 0o100), (0o070, 0o010), (0o007, 0o001)):
        if mode & bits:
            out |= x
    return out


def add_files(
    tree: Tree,
    files: Sequence[FileEntry],
    *,
    resolve_id: Callable[[Id], int],
    metadata: Callable[[str], bytes] | None = None,
    home: Path | None = None,
) -> None:
    """Apply the YAML ``files:`` section (LinuxKit's ``filesystem()``).

    Missing leading directories are created with the entry's owner and a mode derived from
    its mode; unlike LinuxKit, directories that already exist keep their metadata (LinuxKit
    re-emits them, which chmods e.g. ``/etc`` to 0700 when a 0600 file goes into it).
    """
    for entry in files:
        what = f"{entry.origin or entry.path}"
        parts = split_path(entry.path.lstrip("/"), what)
        if not parts:
            raise UsageError(f"{what}: file path {entry.path!r} names the root")
        mode = entry.mode if entry.mode is not None else (0o700 if entry.directory else 0o600)
        uid = resolve_id(entry.uid) if entry.uid is not None else 0
        gid = resolve_id(entry.gid) if entry.gid is not None else 0
        inode = Inode(Kind.FILE, mode=mode, uid=uid, gid=gid)
        if entry.directory:
            inode.kind = Kind.DIR
        elif entry.symlink:
            inode.kind, inode.linkname = Kind.SYMLINK, entry.symlink
        elif entry.contents is not None:
            inode.content = BytesContent(entry.contents.encode("utf-8"))
        elif entry.metadata is not None:
            if metadata is None:
                raise UsageError(f"{what}: metadata files are not available here")
            inode.content = BytesContent(metadata(entry.metadata))
        elif entry.source is not None:
            source = _source_path(entry.source, entry.base_dir, home)
            try:
                with source.open("rb") as handle:
                    size = os.fstat(handle.fileno()).st_size
                    inode.content = tree.store.put(handle, size, what=f"{what}: {source}")
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as exc:
                if entry.optional:
                    continue
                raise UsageError(f"{what}: cannot read source {source}: {exc.strerror or exc}") from None
        # Missing leading directories get the entry's owner and a mode derived from its mode.
        for i in range(1, len(parts)):
            lead = "/".join(parts[:i])
            if tree.get(lead) is None:
                tree.put(lead, _dir_inode(_dir_mode_for(mode), uid, gid), what=what)
        tree.put("/".join(parts), inode, what=what)


def _source_path(source: str, base_dir: Path, home: Path | None) -> Path:
    if source.startswith("~/"):
        return (home or Path.home()) / source[2:]
    path = Path(source)
    return path if path.is_absolute() else base_dir / path
