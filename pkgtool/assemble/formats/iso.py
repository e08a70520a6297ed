"""``iso-bios`` (``NAME.iso``) and ``iso-efi`` (``NAME-efi.iso``): bootable ISO 9660 images.

Layout: ``/boot/kernel``, ``/boot/initrd.img``, ``/boot/grub/grub.cfg`` and the boot images.
BIOS boots a GRUB El Torito image (``grub-mkimage -O i386-pc-eltorito``, hybrid MBR so the
file also boots from a USB stick); UEFI boots ``EFI/BOOT/BOOT*.EFI`` from a FAT image that
is both the El Torito EFI entry and an appended GPT partition.  Both GRUBs find the ISO by
its ``/boot/grub/grub.cfg``.

Determinism: ``xorriso`` honours ``SOURCE_DATE_EPOCH`` (volume dates, the volume "uuid"
GRUB could search for, GPT GUIDs derived from it, and it never uses the current time for
file dates); every staged file also gets that mtime.  The volume id is fixed.
"""

from __future__ import annotations

import os
from pathlib import Path

from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.formats.fat import TOOLS as FAT_TOOLS
from pkgtool.assemble.formats.fat import make_fat
from pkgtool.assemble.formats.grub import (
    EFI_BOOT_NAME,
    EFI_PLATFORM,
    GRUB_LIB,
    MKIMAGE,
    grub_cfg,
    mkimage,
)
from pkgtool.assemble.formats.hosttools import run
from pkgtool.assemble.formats.kernel_initrd import place
from pkgtool.assemble.formats.stable_ids import stable_u32

XORRISO = ("xorriso", "xorriso")
BIOS_TOOLS = (XORRISO, MKIMAGE)
EFI_TOOLS = (XORRISO, MKIMAGE, *FAT_TOOLS)
VOLUME_ID = "PKGTOOL"


def _stage(inp: FormatInput, root: Path) -> None:
    (root / "boot" / "grub").mkdir(parents=True)
    place(inp.kernel, root / "boot" / "kernel")
    place(inp.initrd, root / "boot" / "initrd.img")
    if inp.ucode is not None:
        place(inp.ucode, root / "boot" / "ucode.img")
    (root / "boot" / "grub" / "grub.cfg").write_text(grub_cfg(inp))


def _efi_image(inp: FormatInput, purpose: str) -> Path:
    work = inp.work / f"{purpose}-efi"
    work.mkdir(exist_ok=True)
    loader = mkimage(EFI_PLATFORM[inp.arch], work / EFI_BOOT_NAME[inp.arch], prefix="/boot/grub", work=work, purpose=purpose)
    return make_fat(work / "efi.img", [(f"EFI/BOOT/{EFI_BOOT_NAME[inp.arch]}", loader)],
                    volume_id=stable_u32(inp.name, "iso-esp"), label="EFIBOOT", mtime=inp.mtime, purpose=purpose)


def _set_times(root: Path, mtime: int) -> None:
    for path in [root, *root.rglob("*")]:
        os.utime(path, (mtime, mtime), follow_symlinks=False)


def xorriso(inp: FormatInput, root: Path, dest: Path, boot_args: list[str], purpose: str) -> Path:
    _set_times(root, inp.mtime)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(inp.mtime)}
    run(["xorriso", "-as", "mkisofs", "-o", dest, "-V", VOLUME_ID, "-R", *boot_args, root], what=purpose, env=env)
    return dest


def bios_args(root: Path, inp: FormatInput, purpose: str) -> list[str]:
    mkimage("i386-pc-eltorito", root / "boot" / "grub" / "bios.img", prefix="/boot/grub", work=inp.work, purpose=purpose)
    return [
        "-b", "boot/grub/bios.img", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
        "--grub2-boot-info", "--grub2-mbr", str(GRUB_LIB / "i386-pc" / "boot_hybrid.img"),
    ]


def write_bios(inp: FormatInput, stage: Path) -> list[Path]:
    root = inp.work / "iso-bios-root"
    _stage(inp, root)
    return [xorriso(inp, root, stage / f"{inp.name}.iso", bios_args(root, inp, "iso-bios"), "iso-bios")]


def write_efi(inp: FormatInput, stage: Path) -> list[Path]:
    root = inp.work / "iso-efi-root"
    _stage(inp, root)
    esp = _efi_image(inp, "iso-efi")
    place(esp, root / "boot" / "grub" / "efi.img")
    args = [
        "-e", "boot/grub/efi.img", "-no-emul-boot",
        "-append_partition", "2", "0xef", str(esp), "-appended_part_as_gpt",
    ]
    return [xorriso(inp, root, stage / f"{inp.name}-efi.iso", args, "iso-efi")]
