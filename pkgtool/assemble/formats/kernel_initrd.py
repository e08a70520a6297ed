"""``kernel+initrd`` and ``tar-kernel-initrd``: the kernel, the initramfs and the command line.

``kernel+initrd`` writes ``NAME-kernel``, ``NAME-initrd.img`` and ``NAME-cmdline`` (plus
``NAME-ucode.img`` when the kernel image ships microcode), as ``linuxkit build`` does.
``tar-kernel-initrd`` packs the same into ``NAME-initrd.tar`` with the member names
``kernel``, ``initrd.img``, ``cmdline`` (and ``ucode.cpio``).  The initramfs itself is
built once by the build (:attr:`FormatInput.initrd`): a newc cpio, gzip by default.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from pkgtool.assemble.formats.base import FormatInput


def place(source: Path, dest: Path) -> Path:
    """``dest`` with the bytes of ``source``: a hard link when possible (same file system).

    Formats share names (``kernel+initrd`` and ``kernel+squashfs`` both write
    ``NAME-kernel``); the bytes are the same, so an existing ``dest`` is kept.
    """
    if dest.exists():
        return dest
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
    return dest


def write(inp: FormatInput, stage: Path) -> list[Path]:
    out = [
        place(inp.kernel, stage / f"{inp.name}-kernel"),
        place(inp.initrd, stage / f"{inp.name}-initrd.img"),
    ]
    cmdline = stage / f"{inp.name}-cmdline"
    cmdline.write_text(inp.cmdline)
    out.append(cmdline)
    if inp.ucode is not None:
        out.append(place(inp.ucode, stage / f"{inp.name}-ucode.img"))
    return out


def write_tar(inp: FormatInput, stage: Path) -> list[Path]:
    dest = stage / f"{inp.name}-initrd.tar"
    members: list[tuple[str, Path | bytes]] = [("kernel", inp.kernel), ("initrd.img", inp.initrd), ("cmdline", inp.cmdline.encode())]
    if inp.ucode is not None:
        members.append(("ucode.cpio", inp.ucode))
    # ustar, fixed mtime, numeric ids only, fixed member order: the same bytes every time.
    with dest.open("wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime, info.uname, info.gname = 0o644, inp.mtime, "", ""
            if isinstance(data, bytes):
                import io

                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                info.size = data.stat().st_size
                with data.open("rb") as handle:
                    archive.addfile(info, handle)
    return [dest]
