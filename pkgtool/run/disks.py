"""Data disks for ``pkgtool run qemu --disk FILE[,size=SIZE][,format=FORMAT]``.

The syntax is ``linuxkit run qemu -disk``'s: FILE (or ``file=FILE``) and optional
``size=`` and ``format=`` in any order.  SIZE is a number with an optional unit K, M, G or T
(binary multiples); a bare number counts GiB, as in LinuxKit.  FORMAT is ``raw`` or
``qcow2`` (or any QEMU block driver for an existing file); without it the file's suffix
decides (``.qcow2``, ``.vhd``, ``.vmdk``, else raw).

A disk that does not exist is created, SIZE large (default 1 GiB): empty, so that
``pkg/format`` formats it on the first boot.  It is made under a temporary name and renamed
into place, so an interrupted run never leaves a half-made disk behind.  An existing disk
is used as it is, never resized.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pkgtool.errors import PkgtoolError, UsageError

DEFAULT_SIZE = 1 << 30
_UNITS = {"": 1 << 30, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"([0-9]+)([KMGT]?)(?:i?B)?", re.IGNORECASE)
_SUFFIX_FORMATS = {".qcow2": "qcow2", ".vhd": "vpc", ".vmdk": "vmdk"}
CREATABLE = ("raw", "qcow2")


@dataclass(frozen=True)
class DiskSpec:
    path: Path
    size: int | None = None
    format: str | None = None

    @property
    def driver(self) -> str:
        """QEMU's block driver for the file."""
        return self.format or _SUFFIX_FORMATS.get(self.path.suffix, "raw")


def parse_size(text: str, *, spec: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if not match or int(match.group(1)) == 0:
        raise UsageError(f"--disk {spec!r}: size {text!r} is not a size (e.g. 2G, 512M; a bare number counts GiB)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def parse_disk(spec: str, *, base: Path | None = None) -> DiskSpec:
    """``FILE[,size=SIZE][,format=FORMAT]``; a relative FILE is taken inside ``base`` if given."""
    path: str | None = None
    size: int | None = None
    fmt: str | None = None
    for part in spec.split(","):
        key, eq, value = part.partition("=")
        if not eq:
            if path is not None or not key:
                raise UsageError(f"--disk {spec!r}: expected FILE[,size=SIZE][,format=FORMAT]")
            path = key
        elif key == "file" and value and path is None:
            path = value
        elif key == "size" and size is None:
            size = parse_size(value, spec=spec)
        elif key == "format" and fmt is None and re.fullmatch(r"[a-z0-9]+", value):
            fmt = value
        else:
            raise UsageError(f"--disk {spec!r}: unexpected {part!r} (FILE[,size=SIZE][,format=FORMAT])")
    if path is None:
        raise UsageError(f"--disk {spec!r}: no FILE (FILE[,size=SIZE][,format=FORMAT])")
    where = Path(path).expanduser()
    if base is not None and not where.is_absolute():
        where = base / where
    return DiskSpec(where, size, fmt)


def ensure_disk(disk: DiskSpec) -> DiskSpec:
    """Create ``disk`` if it does not exist (empty, its size or 1 GiB); return it."""
    if disk.path.exists():
        if not disk.path.is_file() and not disk.path.is_block_device():
            raise UsageError(f"--disk {disk.path}: not a file")
        return disk
    if disk.driver not in CREATABLE:
        raise UsageError(f"--disk {disk.path}: does not exist, and only {' or '.join(CREATABLE)} disks are created")
    try:
        disk.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{disk.path.name}.", dir=disk.path.parent)
    except OSError as exc:
        raise UsageError(f"--disk {disk.path}: cannot create it ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        _create(Path(temp), disk.driver, disk.size or DEFAULT_SIZE)
        os.rename(temp, disk.path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return disk


def _create(path: Path, driver: str, size: int) -> None:
    if driver == "raw":
        with path.open("r+b") as handle:
            handle.truncate(size)  # sparse: reads as zeros, takes no space until written
        return
    from pkgtool.assemble.formats.hosttools import require_tool, run

    require_tool("qemu-img", "qemu-utils", purpose="--disk")
    try:
        run(["qemu-img", "create", "-q", "-f", driver, path, str(size)], what=f"--disk {path.name}")
    except PkgtoolError as exc:
        raise PkgtoolError(f"creating {path.name}: {exc}") from None
