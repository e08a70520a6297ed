"""The image tree as a deterministic POSIX (pax) tar.

Same order as the cpio writer (:meth:`Tree.walk`), every mtime the one given, empty user
and group names (numeric ids only, so the host's passwd cannot leak in), no root entry,
and extended attributes as ``SCHILY.xattr.*`` records.  The first path of a hard-link group
carries the data and later ones are link entries pointing at it.  Python's ``tarfile``
names pax headers ``././@PaxHeader`` with zero mode and mtime, so they are stable too.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from typing import IO

from pkgtool.assemble.cpio import symlink_safe_mode
from pkgtool.oci.filetree import Inode, Kind, Tree
from pkgtool.streams import chunk_file

_TYPES = {
    Kind.FILE: tarfile.REGTYPE,
    Kind.DIR: tarfile.DIRTYPE,
    Kind.SYMLINK: tarfile.SYMTYPE,
    Kind.CHAR: tarfile.CHRTYPE,
    Kind.BLOCK: tarfile.BLKTYPE,
    Kind.FIFO: tarfile.FIFOTYPE,
}


def write_tar(tree: Tree, out: IO[bytes], *, mtime: int, skip: Callable[[str], bool] | None = None) -> None:
    """Write ``tree`` to ``out`` as a pax tar (``out`` stays open), without the paths ``skip``
    names (a skipped directory's entries are the caller's to skip too)."""
    first_path: dict[int, str] = {}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape") as archive:
        for path, inode, _nlink in tree.walk():
            if skip is not None and skip(path):
                continue
            info = _info(path, inode, mtime)
            reader = None
            if inode.kind is Kind.FILE:
                earlier = first_path.setdefault(id(inode), path)
                if earlier != path:
                    info.type, info.linkname, info.size = tarfile.LNKTYPE, earlier, 0
                elif inode.content is not None and inode.size:
                    reader = chunk_file(inode.content.chunks())
            archive.addfile(info, reader)


def _info(path: str, inode: Inode, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path)
    info.type = _TYPES[inode.kind]
    info.mode = symlink_safe_mode(inode)
    info.uid, info.gid = inode.uid, inode.gid
    info.uname = info.gname = ""
    info.mtime = mtime
    if inode.kind is Kind.FILE:
        info.size = inode.size
    elif inode.kind is Kind.SYMLINK:
        info.linkname = inode.linkname
    elif inode.kind in (Kind.CHAR, Kind.BLOCK):
        info.devmajor, info.devminor = inode.devmajor, inode.devminor
    if inode.xattrs:
        info.pax_headers = {
            f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in sorted(inode.xattrs.items())
        }
    return info
