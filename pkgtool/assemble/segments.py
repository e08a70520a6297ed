"""The initrd as concatenated segments, one per unit, each kept in the cache by its inputs.

The kernel unpacks an initramfs made of several compressed newc archives one after another,
in order, later entries over earlier ones (``Documentation/driver-api/early-userspace/
buffer-format.rst``).  So the initrd is one segment per unit of the image (each init image,
the kernel's modules, each container bundle, each volume; :mod:`pkgtool.assemble.units`),
then one for the ``files:`` section and ``/dev/console``, each a complete cpio archive
compressed on its own.

A unit's segment is stored in the layout cache (:mod:`pkgtool.assemble.artifacts`) under a
key over everything that decides its bytes: :data:`SEGMENT_FORMAT` (bumped whenever the
cpio writer, the units or this layout change), the compression and its level, the mtime
(``SOURCE_DATE_EPOCH``) and the unit's inputs.  A build whose units are all cached only
concatenates segments, each verified against its digest while it is copied; a segment that
does not verify is dropped and built again, never used.  The output is the same bytes
whether segments came from the cache or not.

Beside each segment the cache keeps the unit's directory and symlink paths: the ``files:``
segment creates a leading directory only where no earlier segment has one (it must not
change ``/etc``'s mode by re-emitting it), and the kernel's modules leave out directories an
init image has as symlinks (``lib -> usr/lib``), as the whole tree does.

While one segment is compressed (zlib and zstd release the GIL), the next unit's layers are
read and its tree built, so decompression and compression overlap.
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pkgtool.assemble.artifacts import ArtifactCache, StoredFile, cache_key
from pkgtool.assemble.cpio import INITRD_ZSTD_JOB_SIZE, compressor, initrd_level, write_cpio
from pkgtool.assemble.units import Progress, Unit
from pkgtool.errors import PkgtoolError
from pkgtool.oci.compress import GZIP_BLOCK_SIZE
from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.filetree import Inode, Kind, SpillStore, Tree

SEGMENT_FORMAT = 1
_PATHS_MEDIA = "application/vnd.pkgtool.initrd.paths.v1+json"
_MAX_PATHS = 64 * 1024 * 1024
# The last segment (files: and the console) is built by the caller, given what is before it.
Tail = Callable[["Paths"], tuple[Tree, set[str]]]


@dataclass
class Paths:
    """Directories and symlinks of the segments so far."""

    dirs: set[str]
    symlinks: set[str]

    def exists(self, path: str) -> bool:
        return path in self.dirs or path in self.symlinks


def _segment_media(compression: str) -> str:
    return f"application/vnd.pkgtool.initrd.cpio.v1+{compression}"


def _level(compression: str) -> dict[str, int]:
    if compression == "gzip":
        return {"level": initrd_level("gzip"), "block": GZIP_BLOCK_SIZE}
    return {"level": initrd_level(compression), "job": INITRD_ZSTD_JOB_SIZE}


def _paths_of(tree: Tree) -> tuple[set[str], set[str]]:
    dirs: set[str] = set()
    symlinks: set[str] = set()
    for path, inode, _nlink in tree.walk():
        if inode.kind is Kind.DIR:
            dirs.add(path)
        elif inode.kind is Kind.SYMLINK:
            symlinks.add(path)
    return dirs, symlinks


class SegmentBuilder:
    """Builds the initrd ``dest`` from ``units`` and a ``tail``, through ``artifacts``."""

    def __init__(self, units: Sequence[Unit], *, artifacts: ArtifactCache | None, store: SpillStore,
                 compression: str, mtime: int, work: Path, progress: Progress) -> None:
        self.units, self.artifacts, self.store = units, artifacts, store
        self.compression, self.mtime, self.work, self.progress = compression, mtime, work, progress
        self._shadowed: dict[int, frozenset[str]] = {}  # unit index -> directories to leave out

    def key(self, unit: Unit) -> str:
        return cache_key("initrd-segment", SEGMENT_FORMAT, self.compression, _level(self.compression),
                         self.mtime, unit.kind, unit.inputs)

    def build(self, dest: Path, tail: Tail) -> Path:
        paths = Paths(set(), set())
        parts: list[Descriptor | concurrent.futures.Future[Path]] = []
        with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="segment") as pool:
            for number, unit in enumerate(self.units):
                self._shadowed[number] = frozenset(paths.symlinks) if unit.shadowed_by_symlinks else frozenset()
                parts.append(self._segment(number, unit, paths, pool))
            tree, explicit = tail(paths)

            def implicit(path: str, _inode: Inode) -> bool:
                return path not in explicit  # a parent the tree made, already in an earlier segment

            # The tail is small and never cached: it depends on every segment before it.
            parts.append(pool.submit(self._compress, tree, implicit))
            with dest.open("wb") as out:
                for number, part in enumerate(parts):
                    self._append(out, number, part)
        return dest

    def _omit(self, number: int) -> Callable[[str, Inode], bool] | None:
        shadowed = self._shadowed[number]
        return (lambda path, _inode: path in shadowed) if shadowed else None

    def _segment(self, number: int, unit: Unit, paths: Paths, pool: concurrent.futures.ThreadPoolExecutor,
                 ) -> Descriptor | concurrent.futures.Future[Path]:
        key = self.key(unit)
        cached = self.artifacts.get("initrd-segment", key) if self.artifacts is not None else None
        if cached is not None and self.artifacts is not None:
            try:
                recorded = json.loads(self.artifacts.read(cached["paths"], max_size=_MAX_PATHS))
                paths.dirs.update(recorded["dirs"])
                paths.symlinks.update(recorded["symlinks"])
                return cached["cpio"]
            except (PkgtoolError, ValueError, KeyError, TypeError):
                self.artifacts.drop("initrd-segment", key)
        tree = unit.build(self.store)
        dirs, symlinks = _paths_of(tree)
        paths.dirs |= dirs
        paths.symlinks |= symlinks
        return pool.submit(self._store, unit, key, tree, self._omit(number), dirs, symlinks)

    def _compress(self, tree: Tree, omit: Callable[[str, Inode], bool] | None) -> Path:
        fd, name = tempfile.mkstemp(prefix="segment-", dir=self.work)
        with open(fd, "wb") as out, compressor(out, self.compression) as stream:
            write_cpio(tree, stream, mtime=self.mtime, omit=omit)
        return Path(name)

    def _store(self, unit: Unit, key: str, tree: Tree, omit: Callable[[str, Inode], bool] | None,
               dirs: set[str], symlinks: set[str]) -> Path:
        self.progress(f"compressing {unit.name}")
        path = self._compress(tree, omit)
        if self.artifacts is not None:
            recorded = json.dumps({"dirs": sorted(dirs), "symlinks": sorted(symlinks)}, separators=(",", ":")).encode()
            self.artifacts.put("initrd-segment", key, [
                StoredFile("cpio", _segment_media(self.compression), path),
                StoredFile("paths", _PATHS_MEDIA, recorded),
            ], annotations={"pkgtool.unit": unit.name})
        return path

    def _append(self, out: BinaryIO, number: int, part: Descriptor | concurrent.futures.Future[Path]) -> None:
        if isinstance(part, Descriptor):
            unit = self.units[number]
            assert self.artifacts is not None
            if self.artifacts.copy_into(part, out):
                return
            # The cached bytes no longer match their digest: build this segment again.
            self.progress(f"the cached segment of {unit.name} is damaged: building it again")
            self.artifacts.drop("initrd-segment", self.key(unit))
            tree = unit.build(self.store)
            dirs, symlinks = _paths_of(tree)
            fresh = self._store(unit, self.key(unit), tree, self._omit(number), dirs, symlinks)
        else:
            fresh = part.result()
        with fresh.open("rb") as segment:
            shutil.copyfileobj(segment, out, 1 << 20)
        fresh.unlink()
