"""The byte layouts pkgtool writes itself (VHD footer and dynamic header, VMDK header and
descriptor, GNU sparse tar headers, the docker archive's config) and the format catalog.
Whole images are built, booted and read back by qemu-img and GNU tar in the integration
tests; these check the fields against the specifications."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from pkgtool.assemble.formats import docker_archive, gcp, vhd, vmdk
from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.formats.catalog import CATALOG, FORMAT_NAMES, help_text
from pkgtool.assemble.formats.registry import _registry


def _ones_complement_ok(block: bytes, at: int) -> bool:
    stored = struct.unpack_from(">I", block, at)[0]
    zeroed = block[:at] + b"\0\0\0\0" + block[at + 4:]
    return stored == (~sum(zeroed) & 0xFFFFFFFF)


def test_vhd_geometry_follows_the_specification() -> None:
    # Small disks: 17 sectors per track, at least 4 heads; large ones: 63 or 255.
    assert vhd.chs_geometry(16 << 20) == (481, 4, 17)
    for size in (16 << 20, 17825792, 1 << 30, 10 << 30, 127 << 30, 4 << 40):
        cylinders, heads, sectors = vhd.chs_geometry(size)
        assert cylinders * heads * sectors * 512 <= size and cylinders <= 65535 and heads <= 16 and sectors <= 255
    assert vhd.chs_geometry(4 << 40) == (65535, 16, 255)


def test_vhd_footer_and_dynamic_header_fields() -> None:
    footer = vhd.footer(size=17825792, disk_type=vhd.FIXED, data_offset=vhd.NO_OFFSET, timestamp=1234,
                        unique_id=bytes(range(16)))
    assert len(footer) == 512 and footer[:8] == b"conectix" and footer[28:32] == b"qem2"
    assert struct.unpack_from(">IIQI", footer, 8) == (2, 0x00010000, vhd.NO_OFFSET, 1234)
    assert struct.unpack_from(">QQ", footer, 40) == (17825792, 17825792)
    assert struct.unpack_from(">I", footer, 60)[0] == vhd.FIXED and footer[68:84] == bytes(range(16))
    assert _ones_complement_ok(footer, 64)
    header = vhd.dynamic_header(table_offset=1536, entries=9)
    assert len(header) == 1024 and header[:8] == b"cxsparse"
    assert struct.unpack_from(">QQIII", header, 8) == (vhd.NO_OFFSET, 1536, 0x00010000, 9, 2 << 20)
    assert _ones_complement_ok(header, 36)


def test_vmdk_header_and_descriptor() -> None:
    header = vmdk.header(capacity=34816, rgd_offset=21, gd_offset=30, overhead=128)
    assert len(header) == 512 and header[:4] == b"KDMV"
    assert struct.unpack_from("<IIQQQQI", header, 4) == (1, 3, 34816, 128, 1, 20, 512)
    assert struct.unpack_from("<QQQ", header, 48) == (21, 30, 128)
    assert header[72:77] == b"\0\n \r\n"  # uncleanShutdown, then the end-of-line check characters
    text = vmdk.descriptor(name="m.vmdk", capacity=34816, cid=0xABC).rstrip(b"\0").decode()
    assert "CID=00000abc" in text and 'createType="monolithicSparse"' in text and 'RW 34816 SPARSE "m.vmdk"' in text


def _raw_with_runs() -> bytes:
    raw = bytearray(1 << 22)  # 4 MiB, data in six separate places: the map needs an extension block
    for n, at in enumerate((0, 8192, 65536, 1 << 20, (1 << 21) + 4096, (1 << 22) - 4096)):
        raw[at:at + 10] = bytes([n + 1]) * 10
    return bytes(raw)


def test_gcp_sparse_member_reads_back_with_python_and_gnu_tar(tmp_path: Path) -> None:
    raw = _raw_with_runs()
    runs = gcp.data_runs(io.BytesIO(raw), len(raw))
    assert runs == [(0, 4096), (8192, 4096), (65536, 4096), (1 << 20, 4096), ((1 << 21) + 4096, 4096),
                    ((1 << 22) - 4096, 4096)]
    entries = gcp._sparse_entries(runs, len(raw))
    archive = gcp.sparse_headers("disk.raw", entries, size=len(raw), mtime=0)
    assert len(archive) == 2 * 512  # 4 entries in the header, the rest in one extension block
    stored = b"".join(raw[o:o + n] for o, n in runs)
    data = archive + stored + bytes(-len(stored) % 512) + bytes(1024)
    (tmp_path / "disk.tar").write_bytes(data)
    with tarfile.open(tmp_path / "disk.tar") as tf:
        member = tf.getmember("disk.raw")
        assert member.type == tarfile.GNUTYPE_SPARSE and member.size == len(raw)
        extracted = tf.extractfile(member)
        assert extracted is not None and extracted.read() == raw
    listing = subprocess.run(["tar", "-tvf", str(tmp_path / "disk.tar")], capture_output=True, text=True, check=True)
    assert "disk.raw" in listing.stdout and str(len(raw)) in listing.stdout
    subprocess.run(["tar", "-xf", str(tmp_path / "disk.tar"), "-C", str(tmp_path)], check=True)
    assert (tmp_path / "disk.raw").read_bytes() == raw
    # A disk that ends in a hole says where it ends: the last entry is (size, 0).
    assert gcp._sparse_entries([(0, 4096)], 8192) == [(0, 4096), (8192, 0)]
    assert gcp._number(8 ** 11, 12)[0] == 0x80  # too large for octal: GNU's base-256


def test_docker_archive_config_and_tags(tmp_path: Path) -> None:
    inp = FormatInput(name="m", arch="arm64", mtime=86400, kernel=tmp_path / "k", cmdline="", work=tmp_path)
    config = json.loads(docker_archive.image_config(inp, "sha256:" + "0" * 64))
    assert config["architecture"] == "arm64" and config["variant"] == "v8" and config["created"] == "1970-01-02T00:00:00Z"
    assert config["config"] == {"Entrypoint": ["/init"], "StopSignal": "SIGUSR2"}
    assert docker_archive.image_config(inp, "sha256:" + "0" * 64) == docker_archive.image_config(inp, "sha256:" + "0" * 64)
    assert docker_archive.repo_tags("minimal") == ["minimal:latest"]
    assert docker_archive.repo_tags("My_Image") == [] and docker_archive.repo_tags("a--b") == ["a--b:latest"]
    assert docker_archive._kernel_path("usr/lib/modules/6.1/x.ko") and docker_archive._kernel_path("lib/modules")
    assert not docker_archive._kernel_path("usr/lib/modules-load.d")


def test_the_catalog_names_every_registered_format_once() -> None:
    assert tuple(_registry()) == FORMAT_NAMES and len(set(FORMAT_NAMES)) == len(FORMAT_NAMES)
    for info in CATALOG:
        assert _registry()[info.name].arches == info.arches and "\n" not in info.summary
    lines = help_text().splitlines()
    assert [line.split()[0] for line in lines] == list(FORMAT_NAMES)


def test_format_help_on_the_command_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "pkgtool", "image", "build", "--format", "help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == help_text()
    bare = subprocess.run([sys.executable, "-m", "pkgtool", "image", "build"], capture_output=True, text=True, timeout=60)
    assert bare.returncode == 2 and "give one or more image YAML files" in bare.stderr and "Traceback" not in bare.stderr


@pytest.mark.parametrize("name", ["vhd", "dynamic-vhd", "vmdk", "aws", "gcp"])
def test_cloud_formats_are_refused_on_s390x(name: str) -> None:
    from pkgtool.assemble.formats.registry import select
    from pkgtool.errors import UsageError

    with pytest.raises(UsageError, match=f"{name} is not supported for s390x"):
        select([name], "s390x")
