"""A FAT file system image built from files with ``mkfs.vfat`` and mtools, no mounting.

Determinism: ``mkfs.vfat --invariant`` replaces its time- and random-based values with
constants, ``-i`` sets the volume serial explicitly (derived from the image name by the
caller), every file is copied with ``mcopy -m`` after its source mtime was set to the
build time, and mtools takes the time of the directories it creates from
``SOURCE_DATE_EPOCH``.  FAT cannot store times before 1980, so those clamp to 1980-01-01.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from pkgtool.assemble.formats.base import FAT_EPOCH
from pkgtool.assemble.formats.hosttools import require_tool, run

TOOLS = (("mkfs.vfat", "dosfstools"), ("mcopy", "mtools"), ("mmd", "mtools"))
_SECTOR = 512


def fat_size_kib(sizes: Sequence[int]) -> int:
    """A size with room for the files, their clusters' slack and the FAT metadata."""
    data = sum(-(-s // 4096) * 4096 for s in sizes)
    return max(8 * 1024, -(-(data * 11 // 10 + (2 << 20)) // (1 << 20)) * 1024)


def make_fat(dest: Path, files: Sequence[tuple[str, Path]], *, volume_id: int, label: str, mtime: int, purpose: str) -> Path:
    """``dest``: a FAT image holding ``files`` as (path inside, source file)."""
    for tool, package in TOOLS:
        require_tool(tool, package, purpose=purpose)
    when = max(mtime, FAT_EPOCH)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(when), "MTOOLS_SKIP_CHECK": "1"}
    size = fat_size_kib([src.stat().st_size for _, src in files])
    dest.unlink(missing_ok=True)
    run(["mkfs.vfat", "-C", "--invariant", "-i", f"{volume_id:08X}", "-n", label[:11].upper(), dest, str(size)],
        what=purpose, env=env)
    made: set[str] = set()
    for inside, src in files:
        parts = inside.strip("/").split("/")
        for i in range(1, len(parts)):
            directory = "/".join(parts[:i])
            if directory not in made:
                run(["mmd", "-i", dest, f"::/{directory}"], what=purpose, env=env)
                made.add(directory)
        os.utime(src, (when, when))
        run(["mcopy", "-m", "-i", dest, src, f"::/{'/'.join(parts)}"], what=purpose, env=env)
    return dest
