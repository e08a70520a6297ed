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
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from pkgtool.errors import PkgtoolError
from pkgtool.oci.layer import clean_path

if TYPE_CHECKING:
    from pkgtool.oci.layer import Layer, LayerEntry

_CHUNK = 1 << 20
_MAX_SYMLINK_HOPS = 40


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
class SkippedContent:
    """A file whose bytes a reader chose not to keep (see ``keep_content``); only its size."""

    size: int

    def chunks(self) -> Iterator[bytes]:
        raise PkgtoolError("internal: reading a file whose content was not kept")


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


def dir_inode(mode: int = 0o755, uid: int = 0, gid: int = 0) -> Inode:
    return Inode(Kind.DIR, mode=mode, uid=uid, gid=gid)


def split_path(name: str, what: str) -> list[str]:
    """The components of a relative archive name; ``..``, absolute names, NUL bytes and
    names over PATH_MAX are errors (the layer reader's rules, :func:`~pkgtool.oci.layer.clean_path`)."""
    path = clean_path(name, what=what)
    return path.split("/") if path else []


class Tree:
    """Paths (relative to the image root) mapped to :class:`Inode` metadata and content."""

    def __init__(self, *, store: SpillStore | None = None) -> None:
        self._root = _Node(dir_inode(), 0)
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
        # Depth-first with an explicit stack: a hostile layer can nest thousands of
        # directories, far past Python's recursion limit.
        stack = [(prefix, _sorted_children(node))]
        while stack:
            base, children = stack[-1]
            found = next(children, None)
            if found is None:
                stack.pop()
                continue
            name, child = found
            path = f"{base}{name}"
            yield path, child
            if child.children is not None:
                stack.append((path + "/", _sorted_children(child)))

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
                child = _Node(dir_inode(), 0)
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
                child = _Node(dir_inode(), layer)
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

    def hide(self, path: str, *, root: str = "", layer: int, what: str = "") -> None:
        """Remove ``path`` (and all below it) if a lower layer than ``layer`` put it there:
        what an OCI whiteout does.  Entries of ``layer`` itself survive, as the spec says."""
        what = what or path
        parts = split_path(path, what)
        if not parts:
            raise PkgtoolError(f"{what}: a whiteout of the root")
        directory = self._resolve_dir(split_path(root, what), parts[:-1], create=False, layer=layer, what=what)
        if directory is None or directory.children is None:
            return  # nothing below to hide
        victim = directory.children.get(parts[-1])
        if victim is not None and victim.layer < layer:
            del directory.children[parts[-1]]

    def make_opaque(self, path: str, *, root: str = "", layer: int, what: str = "") -> None:
        """Hide everything lower layers put below directory ``path``: an opaque marker."""
        what = what or path
        directory = self._resolve_dir(split_path(root, what), split_path(path, what), create=False,
                                      layer=layer, what=what)
        if directory is not None and directory.children is not None:
            _prune_lower(directory, layer)

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

    def apply_layer(self, layer: Layer, *, number: int, root: str = "",
                    keep_content: Callable[[str], bool] | None = None) -> None:
        """Apply one layer to the tree (layer ``number`` of its image, counting from 1).

        ``number`` must grow with each layer of the image: whiteouts and opaque markers
        only hide entries of lower layers.  A plain-tar layer whose blob is a local file
        has its file contents referenced in place instead of copied.  With
        ``keep_content``, only the regular files it accepts keep their bytes (the others
        are metadata only), for readers that want a few files of a large image.
        """
        self.apply_entries(layer.entries(), number=number, root=root, in_place=layer.local_tar(),
                           keep_content=keep_content, what=layer.what)

    def apply_entries(self, entries: Iterable[LayerEntry], *, number: int, root: str = "",
                      in_place: Path | None = None, keep_content: Callable[[str], bool] | None = None,
                      what: str = "layer") -> None:
        """Apply the entries of one layer's tar (see :meth:`apply_layer`); ``in_place`` is
        the plain tar file they are read from, if their data may be referenced there."""
        for entry in entries:
            self._apply_entry(entry, layer=number, root=root, in_place=in_place,
                              what=f"{what}: entry {entry.info.name[:200]!r}", keep_content=keep_content)

    def _apply_entry(self, entry: LayerEntry, *, layer: int, root: str, in_place: Path | None, what: str,
                     keep_content: Callable[[str], bool] | None) -> None:
        info = entry.info
        if not entry.path:
            return  # the layer's own "./": the root's metadata is ours to choose
        if entry.whiteout is not None:
            self.hide(entry.whiteout, root=root, layer=layer, what=what)
            return
        if entry.opaque is not None:
            self.make_opaque(entry.opaque, root=root, layer=layer, what=what)
            return
        xattrs = {
            k[len("SCHILY.xattr."):]: v.encode("utf-8", "surrogateescape")
            for k, v in sorted(info.pax_headers.items())
            if k.startswith("SCHILY.xattr.")
        }
        inode = Inode(Kind.FILE, mode=info.mode & 0o7777, uid=info.uid, gid=info.gid, mtime=entry.mtime, xattrs=xattrs)
        if info.islnk():
            split_path(info.linkname, what)  # reject '..'/absolute before resolving
            self.link(entry.path, info.linkname, root=root, layer=layer, what=what)
            return
        if info.isreg():
            if info.size:
                if keep_content is not None and not keep_content(entry.path):
                    inode.content = SkippedContent(info.size)
                elif in_place is not None:
                    inode.content = FileRange(in_place, info.offset_data, info.size)
                else:
                    inode.content = self.store.put(entry.open(), info.size, what=what)
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
        self.put(entry.path, inode, root=root, layer=layer, what=what)


def _sorted_children(node: _Node) -> Iterator[tuple[str, _Node]]:
    assert node.children is not None
    children = node.children
    return ((name, children[name]) for name in sorted(children, key=lambda n: n.encode("utf-8", "surrogateescape")))


def _prune_lower(directory: _Node, layer: int) -> None:
    """Remove what lower layers put below ``directory`` (an opaque marker), keeping what
    ``layer`` itself wrote; iterative for the same reason as :meth:`Tree._nodes`."""
    stack = [directory]
    while stack:
        node = stack.pop()
        assert node.children is not None
        for name in list(node.children):
            child = node.children[name]
            if child.layer < layer:
                del node.children[name]
            elif child.children is not None:
                stack.append(child)
