"""The output formats by name: which writer, on which arches, with which host tools.

:func:`select` checks a request before any work is done; the writer modules are imported
only then, so that importing this module stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from pkgtool.arches import ARCHES
from pkgtool.assemble.formats.base import Writer
from pkgtool.assemble.formats.catalog import CATALOG, FORMAT_NAMES
from pkgtool.assemble.formats.hosttools import require_tool
from pkgtool.errors import UsageError


@dataclass(frozen=True)
class Format:
    name: str
    writer: Writer
    arches: tuple[str, ...] = ARCHES
    tools: tuple[tuple[str, str], ...] = ()  # (executable, Debian package)
    needs_kernel: bool = True


def _registry() -> dict[str, Format]:
    # Imported here so that importing the package stays cheap.
    from pkgtool.assemble.formats import (
        aws,
        cloud_disk,
        disk,
        docker_archive,
        gcp,
        iso,
        iso_efi_initrd,
        kernel_initrd,
        squashfs,
        tar,
        vhd,
        vmdk,
    )

    arches = {info.name: info.arches for info in CATALOG}
    formats = [
        Format("kernel+initrd", kernel_initrd.write),
        Format("tar", tar.write, needs_kernel=False),
        Format("tar-kernel-initrd", kernel_initrd.write_tar),
        Format("kernel+squashfs", squashfs.write, tools=squashfs.TOOLS),
        Format("iso-bios", iso.write_bios, tools=iso.BIOS_TOOLS),
        Format("iso-efi", iso.write_efi, tools=iso.EFI_TOOLS),
        Format("iso-efi-initrd", iso_efi_initrd.write, tools=iso_efi_initrd.TOOLS),
        Format("raw-bios", disk.write_raw_bios, tools=disk.BIOS_TOOLS),
        Format("raw-efi", disk.write_raw_efi, tools=disk.EFI_TOOLS),
        Format("qcow2-bios", disk.write_qcow2_bios, tools=(*disk.BIOS_TOOLS, disk.QEMU_IMG)),
        Format("qcow2-efi", disk.write_qcow2_efi, tools=(*disk.EFI_TOOLS, disk.QEMU_IMG)),
        Format("aws", aws.write, tools=cloud_disk.TOOLS),
        Format("gcp", gcp.write, tools=cloud_disk.TOOLS),
        Format("vhd", vhd.write_fixed, tools=cloud_disk.TOOLS),
        Format("dynamic-vhd", vhd.write_dynamic, tools=cloud_disk.TOOLS),
        Format("vmdk", vmdk.write, tools=cloud_disk.TOOLS),
        Format("docker", docker_archive.write, needs_kernel=False),
    ]
    return {f.name: replace(f, arches=arches[f.name]) for f in formats}


__all__ = ["FORMAT_NAMES", "Format", "select"]


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
