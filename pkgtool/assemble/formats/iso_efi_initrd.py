"""``iso-efi-initrd``: ``NAME-efi-initrd.iso``, a UEFI ISO in the layout of LinuxKit's output
of that name: ``/kernel``, ``/initrd.img`` and ``/EFI/BOOT/grub.cfg`` at the top of the ISO
9660 tree, and an El Torito EFI image (FAT, hidden from the tree) holding only GRUB as
``EFI/BOOT/BOOT*.EFI``.  GRUB finds the ISO by its ``/EFI/BOOT/grub.cfg`` and boots the
kernel with the initramfs and the image's command line.

pkgtool's ``iso-efi`` boots the same kernel and initramfs, from ``/boot``, and is also a GPT
disk (the ESP appended as a partition, for USB sticks); this one is a plain ISO, for tools
and scripts that expect LinuxKit's file and layout.

Determinism: as :mod:`.iso` (``xorriso`` with ``SOURCE_DATE_EPOCH``, fixed volume id, every
staged file at that mtime) and :mod:`.fat` for the EFI image.
"""

from __future__ import annotations

from pathlib import Path

from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.formats.fat import make_fat
from pkgtool.assemble.formats.grub import (
    EFI_BOOT_NAME,
    EFI_PLATFORM,
    early_config,
    grub_cfg,
    mkimage,
)
from pkgtool.assemble.formats.iso import EFI_TOOLS, xorriso
from pkgtool.assemble.formats.kernel_initrd import place
from pkgtool.assemble.formats.stable_ids import stable_u32

TOOLS = EFI_TOOLS
PURPOSE = "iso-efi-initrd"
CONFIG = "/EFI/BOOT/grub.cfg"
BOOT_IMAGE = "efiboot.img"


def write(inp: FormatInput, stage: Path) -> list[Path]:
    work = inp.work / PURPOSE
    root = work / "root"
    (root / "EFI" / "BOOT").mkdir(parents=True)
    place(inp.kernel, root / "kernel")
    place(inp.initrd, root / "initrd.img")
    if inp.ucode is not None:
        place(inp.ucode, root / "ucode.img")
    (root / "EFI" / "BOOT" / "grub.cfg").write_text(grub_cfg(inp, boot_dir=""))
    loader = mkimage(EFI_PLATFORM[inp.arch], work / EFI_BOOT_NAME[inp.arch], prefix="/EFI/BOOT", work=work,
                     purpose=PURPOSE, early=early_config(CONFIG))
    make_fat(root / BOOT_IMAGE, [(f"EFI/BOOT/{EFI_BOOT_NAME[inp.arch]}", loader)],
             volume_id=stable_u32(inp.name, PURPOSE), label="EFIBOOT", mtime=inp.mtime, purpose=PURPOSE)
    args = ["-e", BOOT_IMAGE, "-no-emul-boot", "-hide", BOOT_IMAGE, "-hide", "boot.catalog"]
    return [xorriso(inp, root, stage / f"{inp.name}-efi-initrd.iso", args, PURPOSE)]
