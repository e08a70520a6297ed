"""The parts of an OS image's tree that come from the image YAML, not from images: the
``files:`` section (LinuxKit's ``filesystem()``) and the console node every initramfs needs."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from pkgtool.errors import UsageError
from pkgtool.oci.filetree import BytesContent, Inode, Kind, Tree, dir_inode, split_path
from pkgtool.spec.image import FileEntry, Id

Exists = Callable[[str], bool]


def ensure_console(tree: Tree, *, exists: Exists | None = None) -> set[str]:
    """An initramfs needs ``/dev/console`` (char 5,1), or ``/init`` has nowhere to write.

    ``exists`` says whether a path is already in the image (default: in ``tree``); returns
    the paths put into ``tree``.
    """
    present = exists or (lambda path: tree.get(path) is not None)
    put: set[str] = set()
    if not present("dev"):
        tree.put("dev", dir_inode())
        put.add("dev")
    if not present("dev/console"):
        tree.put("dev/console", Inode(Kind.CHAR, mode=0o600, devmajor=5, devminor=1))
        put.add("dev/console")
    return put


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
    exists: Exists | None = None,
) -> set[str]:
    """Apply the YAML ``files:`` section (LinuxKit's ``filesystem()``); returns the paths put.

    Missing leading directories are created with the entry's owner and a mode derived from
    its mode; unlike LinuxKit, directories that already exist keep their metadata (LinuxKit
    re-emits them, which chmods e.g. ``/etc`` to 0700 when a 0600 file goes into it).
    ``exists`` says whether a path is already in the image (default: in ``tree``): the
    initrd's last segment holds only this section, over the segments before it.
    """
    present = exists or (lambda path: tree.get(path) is not None)
    put: set[str] = set()
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
            if not present(lead):
                tree.put(lead, dir_inode(_dir_mode_for(mode), uid, gid), what=what)
                put.add(lead)
        tree.put("/".join(parts), inode, what=what)
        put.add("/".join(parts))
    return put


def _source_path(source: str, base_dir: Path, home: Path | None) -> Path:
    if source.startswith("~/"):
        return (home or Path.home()) / source[2:]
    path = Path(source)
    return path if path.is_absolute() else base_dir / path
