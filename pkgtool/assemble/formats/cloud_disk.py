"""The disk behind the cloud formats (``aws``, ``gcp``, ``vhd``, ``dynamic-vhd``, ``vmdk``):
one GPT disk that boots with BIOS and with UEFI, as cloud importers take either.

Layout (sectors of 512 bytes):

* LBA 0: the protective MBR, with GRUB's ``boot.img`` in its 440 bytes of boot code (amd64);
* LBA 1-33: the GPT;
* amd64 only, 1 MiB at 1 MiB: a BIOS boot partition (type ``ef02``) holding GRUB's i386-pc
  core image.  ``boot.img`` loads the core's first sector from the LBA patched into it, and
  that sector loads the rest from the block list patched into it: what ``grub-bios-setup``
  does on a real device, done here on the file;
* the EFI system partition (type ``ef00``): FAT with ``EFI/BOOT/BOOT*.EFI`` (GRUB for UEFI),
  ``/boot/kernel``, ``/boot/initrd.img`` and ``/boot/grub/grub.cfg``, which both GRUBs find
  by that file and read;
* free space up to the size's alignment, then the backup GPT in the last 33 sectors.

Determinism: as the other disks (:mod:`.disk`): a reproducible FAT, GPT GUIDs derived from the
image name, sizes that depend only on the content.  The size is a whole MiB (Azure's rule for
VHDs) or, for ``gcp``, a whole GiB (GCE's rule for ``disk.raw``): the alignment is chosen
before the GPT is written, since its backup copy lives at the disk's end.
"""

from __future__ import annotations

import struct
from pathlib import Path

from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.formats.disk import (
    EFI_TOOLS,
    ESP_TYPE,
    GPT_TRAILER,
    SECTOR,
    boot_partition,
    copy_into,
)
from pkgtool.assemble.formats.grub import EFI_BOOT_NAME, EFI_PLATFORM, GRUB_LIB, mkimage
from pkgtool.assemble.formats.hosttools import run
from pkgtool.assemble.formats.stable_ids import stable_uuid
from pkgtool.errors import PkgtoolError

MIB = 1 << 20
GIB = 1 << 30
TOOLS = EFI_TOOLS
BIOS_BOOT_TYPE = "ef02"
BIOS_BOOT_START = 2048  # 1 MiB, aligned like every partition here
BIOS_BOOT_SECTORS = 2048  # 1 MiB: GRUB's i386-pc core image with our modules is ~110 KiB
# Offsets GRUB's own setup patches (grub-core/boot/i386/pc/boot.S and diskboot.S):
KERNEL_SECTOR_OFFSET = 0x5C  # boot.img: u64 LBA of the core image's first sector
BLOCKLIST_START_OFFSET = SECTOR - 12  # diskboot.img (the core's first sector): u64 LBA of the rest
MBR_CODE_BYTES = 440  # the disk signature and partition table follow: sgdisk's, kept


def _bios_core(inp: FormatInput, work: Path, purpose: str) -> bytes:
    """GRUB's i386-pc core image, patched to load itself from the BIOS boot partition."""
    core = bytearray(mkimage("i386-pc", work / "core.img", prefix="(hd0,gpt2)/boot/grub", work=work,
                             purpose=purpose).read_bytes())
    if len(core) > BIOS_BOOT_SECTORS * SECTOR:
        raise PkgtoolError(f"{purpose}: GRUB core image ({len(core)} bytes) does not fit its 1 MiB partition")
    struct.pack_into("<Q", core, BLOCKLIST_START_OFFSET, BIOS_BOOT_START + 1)
    return bytes(core)


def _boot_code() -> bytes:
    boot = bytearray((GRUB_LIB / "i386-pc" / "boot.img").read_bytes())
    struct.pack_into("<Q", boot, KERNEL_SECTOR_OFFSET, BIOS_BOOT_START)
    return bytes(boot[:MBR_CODE_BYTES])


def _build(inp: FormatInput, dest: Path, *, align: int, purpose: str) -> Path:
    work = inp.work / purpose
    work.mkdir(exist_ok=True)
    bios = inp.arch == "amd64"
    loader = mkimage(EFI_PLATFORM[inp.arch], work / EFI_BOOT_NAME[inp.arch], prefix="/boot/grub", work=work,
                     purpose=purpose)
    esp = boot_partition(inp, purpose, [(f"EFI/BOOT/{EFI_BOOT_NAME[inp.arch]}", loader)])
    esp_start = BIOS_BOOT_START + (BIOS_BOOT_SECTORS if bios else 0)
    esp_sectors = esp.stat().st_size // SECTOR
    step = align // SECTOR
    total = -(-(esp_start + esp_sectors + GPT_TRAILER) // step) * step
    with dest.open("wb") as out:
        out.truncate(total * SECTOR)
    esp_number = 2 if bios else 1
    table = ["sgdisk", "--clear", f"--disk-guid={stable_uuid(inp.name, purpose, 'disk')}"]
    if bios:
        table += [
            f"--new=1:{BIOS_BOOT_START}:{BIOS_BOOT_START + BIOS_BOOT_SECTORS - 1}",
            f"--typecode=1:{BIOS_BOOT_TYPE}",
            f"--partition-guid=1:{stable_uuid(inp.name, purpose, 'bios-boot')}",
            "--change-name=1:BIOS boot",
        ]
    table += [
        f"--new={esp_number}:{esp_start}:{esp_start + esp_sectors - 1}",
        f"--typecode={esp_number}:{ESP_TYPE}",
        f"--partition-guid={esp_number}:{stable_uuid(inp.name, purpose, 'esp')}",
        f"--change-name={esp_number}:EFI System",
    ]
    run([*table, dest], what=purpose)
    copy_into(dest, esp, offset=esp_start * SECTOR)
    if bios:
        core = work / "core-patched.img"
        core.write_bytes(_bios_core(inp, work, purpose))
        copy_into(dest, core, offset=BIOS_BOOT_START * SECTOR)
        with dest.open("r+b") as out:
            out.write(_boot_code())
    return dest


def cloud_raw(inp: FormatInput, *, align: int = MIB) -> Path:
    """The disk for ``inp``, ``align`` bytes to a size; built once per build and alignment."""
    purpose = "cloud-disk" if align == MIB else f"cloud-disk-{align >> 20}m"
    dest = inp.work / f"{purpose}.raw"
    if not dest.exists():
        partial = inp.work / f"{purpose}.partial"
        _build(inp, partial, align=align, purpose=purpose)
        partial.rename(dest)
    return dest
