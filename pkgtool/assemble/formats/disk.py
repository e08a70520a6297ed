"""Disk images: ``raw-bios`` (``NAME-bios.img``), ``raw-efi`` (``NAME-efi.img``) and their
``qcow2-bios`` (``NAME.qcow2``) / ``qcow2-efi`` (``NAME-efi.qcow2``) conversions.

Both raw images hold one FAT partition at 1 MiB with ``/boot/kernel``, ``/boot/initrd.img``
and ``/boot/grub/grub.cfg``:

* ``raw-bios``: an MBR disk.  GRUB's ``boot.img`` goes into the MBR's code area and a
  ``grub-mkimage -O i386-pc`` core image into the sectors after it (the gap before the
  partition), which is where ``boot.img`` and the core's own block list point by
  default, so no ``grub-install``/``grub-bios-setup`` (which want a real device) is needed.
  The MBR is written here byte by byte with a disk signature derived from the name.
* ``raw-efi``: a GPT disk (``sgdisk``) whose only partition is the EFI system partition,
  with ``EFI/BOOT/BOOT*.EFI`` built by ``grub-mkimage``.

Determinism: the FAT file system is built reproducibly (see :mod:`.fat`); ``sgdisk`` gets
explicit disk and partition GUIDs derived from the image name; sizes depend only on the
content.  ``qemu-img convert`` writes no timestamps or random ids into a qcow2, and its
output is checked by the reproducibility tests.
"""

from __future__ import annotations

import struct
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
from pkgtool.assemble.formats.stable_ids import stable_u32, stable_uuid
from pkgtool.errors import PkgtoolError

SECTOR = 512
PART_START = 2048  # 1 MiB: room for GRUB's core image on BIOS disks, aligned for everyone
GPT_TRAILER = 34  # sectors of the backup GPT at the end of the disk
ESP_TYPE = "ef00"
QEMU_IMG = ("qemu-img", "qemu-utils")
BIOS_TOOLS = (MKIMAGE, *FAT_TOOLS)
EFI_TOOLS = (MKIMAGE, *FAT_TOOLS, ("sgdisk", "gdisk"))


def boot_partition(inp: FormatInput, purpose: str, extra: list[tuple[str, Path]]) -> Path:
    work = inp.work / f"{purpose}-fs"
    work.mkdir(exist_ok=True)
    cfg = work / "grub.cfg"
    cfg.write_text(grub_cfg(inp))
    files = [*extra, ("boot/kernel", inp.kernel), ("boot/initrd.img", inp.initrd), ("boot/grub/grub.cfg", cfg)]
    if inp.ucode is not None:
        files.append(("boot/ucode.img", inp.ucode))
    return make_fat(work / "part.img", files, volume_id=stable_u32(inp.name, purpose), label="PKGTOOL",
                    mtime=inp.mtime, purpose=purpose)


def copy_into(dest: Path, src: Path, *, offset: int) -> None:
    with src.open("rb") as reader, dest.open("r+b") as writer:
        writer.seek(offset)
        while chunk := reader.read(1 << 20):
            writer.write(chunk)


def mbr(boot_code: bytes, *, signature: int, start: int, sectors: int) -> bytes:
    """An MBR: 440 bytes of boot code, disk signature, one bootable FAT32-LBA partition."""
    if len(boot_code) < 440:
        raise PkgtoolError("GRUB boot.img is shorter than 440 bytes")
    # CHS fields are the "use LBA" marker (1023/254/63): every BIOS since the 1990s reads LBA.
    chs = b"\xfe\xff\xff"
    entry = b"\x80" + chs + b"\x0c" + chs + struct.pack("<II", start, sectors)
    return boot_code[:440] + struct.pack("<I", signature) + b"\x00\x00" + entry + b"\x00" * 48 + b"\x55\xaa"


def write_raw_bios(inp: FormatInput, stage: Path) -> list[Path]:
    purpose = "raw-bios"
    part = boot_partition(inp, purpose, [])
    core = mkimage("i386-pc", inp.work / "core.img", prefix="(hd0,msdos1)/boot/grub", work=inp.work, purpose=purpose)
    core_bytes = core.read_bytes()
    if 1 + -(-len(core_bytes) // SECTOR) > PART_START:
        raise PkgtoolError(f"{purpose}: GRUB core image ({len(core_bytes)} bytes) does not fit before the partition")
    boot = (GRUB_LIB / "i386-pc" / "boot.img").read_bytes()
    sectors = part.stat().st_size // SECTOR
    dest = stage / f"{inp.name}-bios.img"
    with dest.open("wb") as out:
        out.write(mbr(boot, signature=stable_u32(inp.name, purpose), start=PART_START, sectors=sectors))
        out.write(core_bytes)  # sector 1 on: boot.img's default kernel sector
        out.truncate((PART_START + sectors) * SECTOR)
    copy_into(dest, part, offset=PART_START * SECTOR)
    return [dest]


def raw_efi(inp: FormatInput, dest: Path, purpose: str) -> Path:
    work = inp.work / f"{purpose}-loader"
    work.mkdir(exist_ok=True)
    loader = mkimage(EFI_PLATFORM[inp.arch], work / EFI_BOOT_NAME[inp.arch], prefix="/boot/grub", work=work, purpose=purpose)
    part = boot_partition(inp, purpose, [(f"EFI/BOOT/{EFI_BOOT_NAME[inp.arch]}", loader)])
    sectors = part.stat().st_size // SECTOR
    total = PART_START + sectors + GPT_TRAILER
    total = -(-total // 2048) * 2048  # whole MiB: what qemu and most hypervisors prefer
    with dest.open("wb") as out:
        out.truncate(total * SECTOR)
    run([
        "sgdisk", "--clear",
        f"--disk-guid={stable_uuid(inp.name, purpose, 'disk')}",
        f"--new=1:{PART_START}:{PART_START + sectors - 1}",
        f"--typecode=1:{ESP_TYPE}",
        f"--partition-guid=1:{stable_uuid(inp.name, purpose, 'esp')}",
        "--change-name=1:EFI System",
        dest,
    ], what=purpose)
    copy_into(dest, part, offset=PART_START * SECTOR)
    return dest


def write_raw_efi(inp: FormatInput, stage: Path) -> list[Path]:
    return [raw_efi(inp, stage / f"{inp.name}-efi.img", "raw-efi")]


def _qcow2(raw: Path, dest: Path, purpose: str) -> Path:
    # -c off / default cluster size / no backing file: nothing in the output depends on time.
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=65536", raw, dest], what=purpose)
    return dest


def write_qcow2_bios(inp: FormatInput, stage: Path) -> list[Path]:
    raw = write_raw_bios(inp, inp.work)[0]
    return [_qcow2(raw, stage / f"{inp.name}.qcow2", "qcow2-bios")]


def write_qcow2_efi(inp: FormatInput, stage: Path) -> list[Path]:
    raw = raw_efi(inp, inp.work / "qcow2-efi.img", "qcow2-efi")
    return [_qcow2(raw, stage / f"{inp.name}-efi.qcow2", "qcow2-efi")]
