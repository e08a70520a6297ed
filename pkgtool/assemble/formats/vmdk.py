"""``vmdk``: ``NAME.vmdk``, the cloud disk (:mod:`.cloud_disk`) as a VMware "hosted sparse
extent" with its descriptor embedded (``createType="monolithicSparse"``), written here from
VMware's "Virtual Disk Format 1.1" specification.  VMware Workstation and Fusion,
VirtualBox and QEMU run it as it is; ESXi imports it with ``vmkfstools -i``.

Layout, in 512-byte sectors: the header; the descriptor (20 sectors); the redundant grain
directory and its grain tables; the grain directory and its grain tables (every table is
allocated, as VMware's own tools do); then, from the first 64 KiB boundary, one 64 KiB grain
for every grain of the disk that holds a non-zero byte, in disk order.  A grain table entry
of 0 reads as zeros.

Determinism: grains are allocated in disk order, so the bytes depend only on the disk's
content.  The descriptor's content id (``CID``), which VMware would draw at random and
change on every write, is the first 32 bits of the SHA-256 of the disk's bytes: it still
changes when the content does, which is all a reader uses it for (checking a child disk
against its parent).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.formats.cloud_disk import cloud_raw

SECTOR = 512
GRAIN_SECTORS = 128  # 64 KiB grains: VMware's default
GRAIN = GRAIN_SECTORS * SECTOR
GTES_PER_GT = 512  # a grain table covers 512 grains (32 MiB)
DESCRIPTOR_OFFSET = 1
DESCRIPTOR_SECTORS = 20
MAGIC = 0x564D444B  # "KDMV" little-endian
VERSION = 1
# bit 0: the header's end-of-line characters are valid (readers check them for transfer
# damage); bit 1: a redundant grain directory is kept.
FLAGS = 0x3
# The IDE geometry VMware writes for hosted disks: 16 heads, 63 sectors per track.
HEADS, SECTORS_PER_TRACK, MAX_CYLINDERS = 16, 63, 16383


def header(*, capacity: int, rgd_offset: int, gd_offset: int, overhead: int) -> bytes:
    fields = struct.pack(
        "<IIIQQQQIQQQB4sH",
        MAGIC, VERSION, FLAGS, capacity, GRAIN_SECTORS, DESCRIPTOR_OFFSET, DESCRIPTOR_SECTORS, GTES_PER_GT,
        rgd_offset, gd_offset, overhead, 0, b"\n \r\n", 0,
    )
    return fields.ljust(SECTOR, b"\0")


def descriptor(*, name: str, capacity: int, cid: int) -> bytes:
    cylinders = min(capacity // (HEADS * SECTORS_PER_TRACK), MAX_CYLINDERS)
    text = (
        "# Disk DescriptorFile\n"
        "version=1\n"
        f"CID={cid:08x}\n"
        "parentCID=ffffffff\n"
        'createType="monolithicSparse"\n'
        "\n"
        "# Extent description\n"
        f'RW {capacity} SPARSE "{name}"\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        'ddb.virtualHWVersion = "4"\n'
        f'ddb.geometry.cylinders = "{cylinders}"\n'
        f'ddb.geometry.heads = "{HEADS}"\n'
        f'ddb.geometry.sectors = "{SECTORS_PER_TRACK}"\n'
        'ddb.adapterType = "ide"\n'
    ).encode()
    return text.ljust(DESCRIPTOR_SECTORS * SECTOR, b"\0")


def _content_id(raw: Path) -> int:
    digest = hashlib.sha256()
    with raw.open("rb") as src:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
    return int.from_bytes(digest.digest()[:4], "big")


def write(inp: FormatInput, stage: Path) -> list[Path]:
    raw = cloud_raw(inp)
    size = raw.stat().st_size
    capacity = -(-size // SECTOR)
    grains = -(-capacity // GRAIN_SECTORS)
    tables = -(-grains // GTES_PER_GT)
    dir_sectors = -(-tables * 4 // SECTOR)
    table_sectors = GTES_PER_GT * 4 // SECTOR
    rgd_offset = DESCRIPTOR_OFFSET + DESCRIPTOR_SECTORS
    redundant_tables = rgd_offset + dir_sectors
    gd_offset = redundant_tables + tables * table_sectors
    primary_tables = gd_offset + dir_sectors
    overhead = -(-(primary_tables + tables * table_sectors) // GRAIN_SECTORS) * GRAIN_SECTORS
    entries = [0] * (tables * GTES_PER_GT)
    name = f"{inp.name}.vmdk"
    dest = stage / name
    with raw.open("rb") as src, dest.open("wb") as out:
        out.write(header(capacity=capacity, rgd_offset=rgd_offset, gd_offset=gd_offset, overhead=overhead))
        out.write(descriptor(name=name, capacity=capacity, cid=_content_id(raw)))
        out.seek(overhead * SECTOR)
        for index in range(grains):
            grain = src.read(GRAIN)
            if grain.count(0) == len(grain):
                continue
            entries[index] = out.tell() // SECTOR
            out.write(grain.ljust(GRAIN, b"\0"))
        packed_tables = struct.pack(f"<{len(entries)}I", *entries)
        for directory, first_table in ((rgd_offset, redundant_tables), (gd_offset, primary_tables)):
            out.seek(directory * SECTOR)
            out.write(struct.pack(f"<{tables}I", *(first_table + t * table_sectors for t in range(tables))))
            out.seek(first_table * SECTOR)
            out.write(packed_tables)
    return [dest]
