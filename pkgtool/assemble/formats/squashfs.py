"""``kernel+squashfs``: ``NAME-kernel``, ``NAME-squashfs.img`` and ``NAME-cmdline``.

The root file system goes to ``tar2sqfs`` (squashfs-tools-ng) as a tar stream on its stdin,
so nothing is unpacked on the host (device nodes stay metadata; ownership is kept exactly,
no ``-all-root`` flattening).  ``mksquashfs`` from squashfs-tools 4.5 cannot read a tar.

Determinism: squashfs-tools-ng packs in input order and documents its output as a
function of input and options only; the tar is already sorted with every mtime
``SOURCE_DATE_EPOCH``.  ``--defaults mtime=`` pins the root inode and the super block's
modification time (``SOURCE_DATE_EPOCH`` is also set for it).  The compressor, block size
and job count are fixed here rather than left to the tool's defaults, which may change.
"""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.formats.kernel_initrd import place
from pkgtool.assemble.tarwriter import write_tar
from pkgtool.errors import PkgtoolError

TOOLS = (("tar2sqfs", "squashfs-tools-ng"),)
COMPRESSOR = "gzip"  # every kernel with squashfs support reads it
BLOCK_SIZE = 131072
JOBS = 1  # one fixed value: the job count is part of "the same options"


def command(dest: Path, *, mtime: int) -> list[str]:
    return [
        "tar2sqfs", "--quiet", "--force", "--no-skip",
        "--compressor", COMPRESSOR, "--block-size", str(BLOCK_SIZE), "--num-jobs", str(JOBS),
        "--defaults", f"uid=0,gid=0,mode=0755,mtime={mtime}",
        str(dest),
    ]


def write(inp: FormatInput, stage: Path) -> list[Path]:
    image = stage / f"{inp.name}-squashfs.img"
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(inp.mtime)}
    proc = subprocess.Popen(command(image, mtime=inp.mtime), stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdin is not None and proc.stderr is not None
    errors: list[bytes] = []
    reader = threading.Thread(target=lambda: errors.append(proc.stderr.read() if proc.stderr else b""), daemon=True)
    reader.start()
    try:
        write_tar(inp.tree, proc.stdin, mtime=inp.mtime)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # tar2sqfs gave up; its exit status and message say why
    finally:
        code = proc.wait()
        reader.join()
    if code != 0:
        text = b"".join(errors).decode("utf-8", "replace").strip().splitlines()
        raise PkgtoolError(f"kernel+squashfs: tar2sqfs failed: {text[-1] if text else f'exit status {code}'}")
    cmdline = stage / f"{inp.name}-cmdline"
    cmdline.write_text(inp.cmdline)
    return [place(inp.kernel, stage / f"{inp.name}-kernel"), image, cmdline]
