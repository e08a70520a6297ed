"""Output formats: one small module each, a function from the assembled image to files.

Every writer gets a :class:`FormatInput` (the tree, the kernel, the compressed initrd and
the command line) and a staging directory; it writes its files there under their final
names and returns them.  :mod:`pkgtool.assemble.image_build` renames them into the output
directory only when every requested format has succeeded.

Determinism is each writer's job: every timestamp is ``mtime`` (``SOURCE_DATE_EPOCH``), and
ids that tools would otherwise draw at random (volume serials, GPT GUIDs) are derived from
the image name with :func:`stable_uuid`, so a rebuild gives the same bytes.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import subprocess
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pkgtool.arches import ARCHES
from pkgtool.assemble.tree import Tree
from pkgtool.errors import PkgtoolError, UsageError

# FAT and some boot tools cannot store times before 1980-01-01; those clamp to this.
FAT_EPOCH = 315532800


@dataclass
class FormatInput:
    """The assembled image as the writers see it."""

    name: str
    arch: str
    mtime: int
    tree: Tree  # the root file system, without boot/kernel, boot/cmdline, boot/ucode.cpio
    kernel: Path  # the kernel binary, staged on disk
    cmdline: str
    work: Path  # scratch space that is removed after the build
    ucode: Path | None = None
    compression: str = "gzip"
    make_initrd: Callable[[], Path] | None = field(default=None, repr=False)

    @functools.cached_property
    def initrd(self) -> Path:
        """The compressed cpio, built once however many formats need it."""
        if self.make_initrd is None:
            raise PkgtoolError("internal: no initrd builder")
        return self.make_initrd()


Writer = Callable[[FormatInput, Path], list[Path]]


@dataclass(frozen=True)
class Format:
    name: str
    writer: Writer
    arches: tuple[str, ...] = ARCHES
    tools: tuple[tuple[str, str], ...] = ()  # (executable, Debian package)
    needs_kernel: bool = True


def _registry() -> dict[str, Format]:
    # Imported here so that importing the package stays cheap.
    from pkgtool.assemble.formats import disk, iso, kernel_initrd, squashfs, tar

    formats = [
        Format("kernel+initrd", kernel_initrd.write),
        Format("tar", tar.write, needs_kernel=False),
        Format("tar-kernel-initrd", kernel_initrd.write_tar),
        Format("kernel+squashfs", squashfs.write, tools=squashfs.TOOLS),
        Format("iso-bios", iso.write_bios, arches=("amd64",), tools=iso.BIOS_TOOLS),
        Format("iso-efi", iso.write_efi, arches=("amd64", "arm64"), tools=iso.EFI_TOOLS),
        Format("raw-bios", disk.write_raw_bios, arches=("amd64",), tools=disk.BIOS_TOOLS),
        Format("raw-efi", disk.write_raw_efi, arches=("amd64", "arm64"), tools=disk.EFI_TOOLS),
        Format("qcow2-bios", disk.write_qcow2_bios, arches=("amd64",), tools=(*disk.BIOS_TOOLS, disk.QEMU_IMG)),
        Format("qcow2-efi", disk.write_qcow2_efi, arches=("amd64", "arm64"), tools=(*disk.EFI_TOOLS, disk.QEMU_IMG)),
    ]
    return {f.name: f for f in formats}


FORMAT_NAMES: tuple[str, ...] = (
    "kernel+initrd", "tar", "tar-kernel-initrd", "kernel+squashfs", "iso-bios", "iso-efi",
    "raw-bios", "raw-efi", "qcow2-bios", "qcow2-efi",
)


def select(names: Sequence[str], arch: str) -> list[Format]:
    """The formats to write, checked before any work: known, supported on ``arch``, tools present."""
    if arch not in ARCHES:
        raise UsageError(f"unsupported architecture {arch!r} (one of: {', '.join(ARCHES)})")
    registry = _registry()
    chosen: list[Format] = []
    for name in names:
        fmt = registry.get(name)
        if fmt is None:
            raise UsageError(f"unknown output format {name!r} (one of: {', '.join(FORMAT_NAMES)})")
        if arch not in fmt.arches:
            raise UsageError(f"format {name} is not supported for {arch} (only {', '.join(fmt.arches)})")
        if fmt not in chosen:
            chosen.append(fmt)
    for fmt in chosen:
        for tool, package in fmt.tools:
            require_tool(tool, package, purpose=fmt.name)
    return chosen


def require_tool(tool: str, package: str, *, purpose: str) -> str:
    found = shutil.which(tool)
    if not found:
        raise PkgtoolError(f"{purpose} needs {tool}, which is not installed: apt-get install {package}")
    return found


def run(cmd: Sequence[str | Path], *, what: str, env: dict[str, str] | None = None, stdin: int | None = None,
        cwd: Path | None = None) -> None:
    """Run a host tool; a failure becomes one line naming the tool and its last stderr line."""
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, env=env, stdin=stdin, cwd=cwd, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
        tail = lines[-1] if lines else f"exit status {proc.returncode}"
        raise PkgtoolError(f"{what}: {Path(str(cmd[0])).name} failed: {tail}")


def stable_uuid(*parts: str) -> uuid.UUID:
    """A UUID that depends only on ``parts`` (so rebuilds reproduce it)."""
    digest = hashlib.sha256("\x00".join(("pkgtool", *parts)).encode()).digest()
    return uuid.UUID(bytes=digest[:16], version=4)


def stable_u32(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(("pkgtool", *parts)).encode()).digest()[:4], "big")
