"""Every output format's name, arches and one-line summary: plain data, no heavy imports.

The CLI reads this for ``--format help`` and its help text without importing any writer;
:mod:`.registry` pairs each name with its writer and host tools.
"""

from __future__ import annotations

from dataclasses import dataclass

from pkgtool.arches import ARCHES

UEFI_ARCHES = ("amd64", "arm64")
BIOS_ARCHES = ("amd64",)


@dataclass(frozen=True)
class FormatInfo:
    name: str
    summary: str  # one line, for `--format help`
    arches: tuple[str, ...] = ARCHES


CATALOG: tuple[FormatInfo, ...] = (
    FormatInfo("kernel+initrd", "NAME-kernel, NAME-initrd.img, NAME-cmdline: boot with any loader or `pkgtool run qemu`"),
    FormatInfo("tar", "NAME.tar: the whole root file system, boot/ files included"),
    FormatInfo("tar-kernel-initrd", "NAME-initrd.tar: kernel, initrd.img and cmdline in one tar"),
    FormatInfo("kernel+squashfs", "NAME-kernel, NAME-squashfs.img (the root file system), NAME-cmdline"),
    FormatInfo("iso-bios", "NAME.iso: BIOS-bootable ISO (GRUB), also bootable from a USB stick", BIOS_ARCHES),
    FormatInfo("iso-efi", "NAME-efi.iso: UEFI-bootable ISO with an appended ESP partition", UEFI_ARCHES),
    FormatInfo("iso-efi-initrd", "NAME-efi-initrd.iso: UEFI ISO in LinuxKit's layout (/kernel, /initrd.img)",
               UEFI_ARCHES),
    FormatInfo("raw-bios", "NAME-bios.img: MBR disk, GRUB for BIOS, one FAT partition", BIOS_ARCHES),
    FormatInfo("raw-efi", "NAME-efi.img: GPT disk whose EFI system partition boots with UEFI", UEFI_ARCHES),
    FormatInfo("qcow2-bios", "NAME.qcow2: raw-bios as qcow2", BIOS_ARCHES),
    FormatInfo("qcow2-efi", "NAME-efi.qcow2: raw-efi as qcow2", UEFI_ARCHES),
    FormatInfo("aws", "NAME.raw: GPT disk booting BIOS and UEFI (amd64; UEFI on arm64), for AMI import",
               UEFI_ARCHES),
    FormatInfo("gcp", "NAME.img.tar.gz: that disk as disk.raw (whole GiB, sparse oldgnu tar), for GCE import",
               UEFI_ARCHES),
    FormatInfo("vhd", "NAME.vhd: that disk as a fixed VHD (1 MiB aligned), as Azure wants it", UEFI_ARCHES),
    FormatInfo("dynamic-vhd", "NAME-dynamic.vhd: that disk as a dynamic (sparse) VHD", UEFI_ARCHES),
    FormatInfo("vmdk", "NAME.vmdk: that disk as a monolithicSparse VMDK (VMware, VirtualBox, QEMU)", UEFI_ARCHES),
    FormatInfo("docker", "NAME-docker.tar: the root file system as an image for `docker load`; "
               "`docker run -t --privileged` boots its init"),
)

FORMAT_NAMES: tuple[str, ...] = tuple(info.name for info in CATALOG)


def help_text() -> str:
    """``--format help``: one line per format, with the arches it is built for."""
    width = max(len(info.name) for info in CATALOG)
    return "\n".join(f"{info.name:<{width}}  {info.summary} [{', '.join(info.arches)}]" for info in CATALOG)
