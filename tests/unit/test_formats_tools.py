"""Format selection, host-tool checks and the determinism knobs of each format's tools."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from pkgtool.assemble.formats import squashfs
from pkgtool.assemble.formats.base import FormatInput
from pkgtool.assemble.formats.disk import mbr
from pkgtool.assemble.formats.fat import fat_size_kib
from pkgtool.assemble.formats.grub import EARLY_CONFIG, grub_cfg
from pkgtool.assemble.formats.registry import select
from pkgtool.assemble.formats.stable_ids import stable_u32, stable_uuid
from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.oci.filetree import Tree


def test_select_checks_arch_and_names() -> None:
    assert [f.name for f in select(["kernel+initrd", "tar", "kernel+initrd"], "s390x")] == ["kernel+initrd", "tar"]
    with pytest.raises(UsageError, match="iso-bios is not supported for s390x"):
        select(["iso-bios"], "s390x")
    with pytest.raises(UsageError, match="unknown output format 'vhdx'"):
        select(["vhdx"], "amd64")
    with pytest.raises(UsageError, match="vmdk is not supported for s390x"):
        select(["vmdk"], "s390x")
    with pytest.raises(UsageError, match="unsupported architecture"):
        select(["tar"], "riscv64")


def test_missing_tool_names_the_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(PkgtoolError, match=r"needs tar2sqfs.*apt-get install squashfs-tools-ng"):
        select(["kernel+squashfs"], "amd64")
    with pytest.raises(PkgtoolError, match="apt-get install xorriso"):
        select(["iso-efi"], "amd64")


def test_stable_ids_depend_only_on_inputs() -> None:
    assert stable_uuid("a", "b") == stable_uuid("a", "b") != stable_uuid("a", "c")
    assert stable_uuid("a").version == 4
    assert stable_u32("x") == stable_u32("x") < 2**32


def test_squashfs_flags_pin_everything_that_varies() -> None:
    cmd = squashfs.command(Path("/o.img"), mtime=1234)
    assert cmd[0] == "tar2sqfs"
    for flag, value in (("--compressor", "gzip"), ("--block-size", "131072"), ("--num-jobs", "1")):
        assert cmd[cmd.index(flag) + 1] == value
    assert "uid=0,gid=0,mode=0755,mtime=1234" in cmd and "--no-skip" in cmd


def test_mbr_has_one_bootable_fat_partition() -> None:
    sector = mbr(b"\xeb" * 512, signature=0x11223344, start=2048, sectors=4096)
    assert len(sector) == 512 and sector[510:] == b"\x55\xaa"
    assert struct.unpack_from("<I", sector, 440)[0] == 0x11223344
    assert sector[446] == 0x80 and sector[450] == 0x0C
    assert struct.unpack_from("<II", sector, 454) == (2048, 4096)
    with pytest.raises(PkgtoolError):
        mbr(b"short", signature=0, start=2048, sectors=1)


def test_fat_size_has_room() -> None:
    assert fat_size_kib([]) == 8 * 1024
    big = fat_size_kib([50 << 20, 10 << 20])
    assert big * 1024 > 60 << 20 and big % 1024 == 0


def test_grub_config_boots_kernel_with_cmdline(tmp_path: Path) -> None:
    with Tree() as tree:
        inp = FormatInput(name="demo", arch="amd64", mtime=0, make_tree=lambda: tree, kernel=tmp_path / "k",
                          cmdline="console=ttyS0 quiet", work=tmp_path)
        cfg = grub_cfg(inp)
        assert "linux /boot/kernel console=ttyS0 quiet" in cfg and "initrd /boot/initrd.img" in cfg
        assert "set timeout=0" in cfg and "serial --unit=0" in cfg
        inp.cmdline = "a\nb"
        with pytest.raises(PkgtoolError):
            grub_cfg(inp)
    assert "--file /boot/grub/grub.cfg" in EARLY_CONFIG
