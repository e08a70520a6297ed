"""``vhd`` (``NAME.vhd``, fixed) and ``dynamic-vhd`` (``NAME-dynamic.vhd``): the cloud disk
(:mod:`.cloud_disk`) as Virtual Hard Disk images, written here byte by byte from the VHD
specification (Microsoft, "Virtual Hard Disk Image Format Specification" 1.0).

* fixed: the raw disk followed by a 512-byte footer.  This is what Azure imports: a fixed
  VHD whose virtual size is a whole number of MiB (the cloud disk always is).
* dynamic: a copy of the footer, the dynamic disk header, the block allocation table (BAT),
  then one 2 MiB block (a sector bitmap and the data) per block of the disk that holds a
  non-zero byte, in disk order, and the footer.  All-zero blocks are left unallocated.

Determinism: the footer's time stamp is ``SOURCE_DATE_EPOCH`` (as seconds since 2000-01-01,
clamped there), its unique id is derived from the image name (:mod:`.stable_ids`), and
blocks are allocated in disk order, so the bytes depend only on the disk's content.

The creator application is ``qem2``: the field tells readers whether to trust the footer's
size or the CHS geometry (which cannot express most sizes exactly); QEMU reads the size
field for ``qem2`` (it writes that value itself for Azure's fixed, 1 MiB-aligned VHDs), and
Azure and Hyper-V always read it.  With another value QEMU would truncate the disk to the
geometry and lose the backup GPT.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.formats.cloud_disk import cloud_raw
from pkgtool.assemble.formats.stable_ids import stable_uuid

SECTOR = 512
BLOCK_SIZE = 2 << 20  # the default block size of dynamic VHDs
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z, the VHD time stamp's origin
FIXED, DYNAMIC = 2, 3
NO_OFFSET = 0xFFFFFFFFFFFFFFFF
UNUSED_BLOCK = 0xFFFFFFFF
CREATOR_APP = b"qem2"
CREATOR_VERSION = 0x00010000
CREATOR_HOST_OS = b"Wi2k"  # the value every VHD writer uses; readers ignore it


def chs_geometry(size: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track), by the algorithm in the specification's appendix."""
    total = min(size // SECTOR, 65535 * 16 * 255)
    if total >= 65535 * 16 * 63:
        sectors, heads = 255, 16
        cylinders_times_heads = total // sectors
    else:
        sectors = 17
        cylinders_times_heads = total // sectors
        heads = max((cylinders_times_heads + 1023) // 1024, 4)
        if cylinders_times_heads >= heads * 1024 or heads > 16:
            sectors, heads = 31, 16
            cylinders_times_heads = total // sectors
        if cylinders_times_heads >= heads * 1024:
            sectors, heads = 63, 16
            cylinders_times_heads = total // sectors
    return cylinders_times_heads // heads, heads, sectors


def _checksum(data: bytes) -> int:
    """One's complement of the byte sum (the checksum field itself counted as zero)."""
    return ~sum(data) & 0xFFFFFFFF


def footer(*, size: int, disk_type: int, data_offset: int, timestamp: int, unique_id: bytes) -> bytes:
    cylinders, heads, sectors = chs_geometry(size)
    fields = struct.pack(
        ">8sIIQI4sI4sQQHBBII16sB",
        b"conectix", 2, 0x00010000, data_offset, timestamp, CREATOR_APP, CREATOR_VERSION, CREATOR_HOST_OS,
        size, size, cylinders, heads, sectors, disk_type, 0, unique_id, 0,
    )
    fields += bytes(SECTOR - len(fields))
    return fields[:64] + struct.pack(">I", _checksum(fields)) + fields[68:]


def dynamic_header(*, table_offset: int, entries: int) -> bytes:
    fields = struct.pack(">8sQQIIII", b"cxsparse", NO_OFFSET, table_offset, 0x00010000, entries, BLOCK_SIZE, 0)
    fields += bytes(1024 - len(fields))  # parent id, time stamp, name and locators: none
    return fields[:36] + struct.pack(">I", _checksum(fields)) + fields[40:]


def _timestamp(inp: FormatInput) -> int:
    return max(inp.mtime - VHD_EPOCH, 0)


def _copy(src: BinaryIO, dest: BinaryIO) -> None:
    while chunk := src.read(1 << 20):
        dest.write(chunk)


def write_fixed(inp: FormatInput, stage: Path) -> list[Path]:
    raw = cloud_raw(inp)
    size = raw.stat().st_size
    dest = stage / f"{inp.name}.vhd"
    with raw.open("rb") as src, dest.open("wb") as out:
        _copy(src, out)
        out.write(footer(size=size, disk_type=FIXED, data_offset=NO_OFFSET, timestamp=_timestamp(inp),
                         unique_id=stable_uuid(inp.name, "vhd").bytes))
    return [dest]


def write_dynamic(inp: FormatInput, stage: Path) -> list[Path]:
    raw = cloud_raw(inp)
    size = raw.stat().st_size
    blocks = -(-size // BLOCK_SIZE)
    tail = footer(size=size, disk_type=DYNAMIC, data_offset=SECTOR, timestamp=_timestamp(inp),
                  unique_id=stable_uuid(inp.name, "dynamic-vhd").bytes)
    table_offset = 3 * SECTOR  # after the footer copy and the 1024-byte dynamic header
    table_bytes = -(-blocks * 4 // SECTOR) * SECTOR
    bitmap = b"\xff" * SECTOR  # 4096 sectors per block: one bit each, every one present
    table = [UNUSED_BLOCK] * blocks
    dest = stage / f"{inp.name}-dynamic.vhd"
    with raw.open("rb") as src, dest.open("wb") as out:
        out.write(tail)
        out.write(dynamic_header(table_offset=table_offset, entries=blocks))
        out.seek(table_offset + table_bytes)
        for index in range(blocks):
            data = src.read(BLOCK_SIZE)
            if not data.strip(b"\0"):
                continue
            table[index] = out.tell() // SECTOR
            out.write(bitmap)
            out.write(data.ljust(BLOCK_SIZE, b"\0"))
        out.write(tail)
        out.seek(table_offset)
        out.write(struct.pack(f">{blocks}I", *table).ljust(table_bytes, b"\xff"))
    return [dest]
