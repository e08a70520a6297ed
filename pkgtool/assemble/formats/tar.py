"""``tar``: the whole root file system, boot files included, as one deterministic pax tar.

``NAME.tar``, written by :func:`pkgtool.assemble.tarwriter.write_tar` (sorted entries, every
mtime ``SOURCE_DATE_EPOCH``, numeric ids).  The build writes it before it takes
``boot/kernel`` and ``boot/cmdline`` out of the tree for the initramfs, so, like
``linuxkit build -format tar``, it contains them.
"""

from __future__ import annotations

from pathlib import Path

from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.tarwriter import write_tar


def write(inp: FormatInput, stage: Path) -> list[Path]:
    dest = stage / f"{inp.name}.tar"
    with dest.open("wb") as out:
        write_tar(inp.tree, out, mtime=inp.mtime)
    return [dest]
