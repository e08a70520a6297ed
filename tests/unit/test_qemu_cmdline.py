"""QEMU command lines per arch and media, port forwards, media discovery."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from pkgtool.errors import UsageError
from pkgtool.run.disks import DiskSpec
from pkgtool.run.qemu import Media, VMConfig, find_media, parse_publish, pvh_kernel, qemu_command

KERNEL = Media(kernel=Path("k"), initrd=Path("i"), cmdline="console=ttyS0 panic=-1")


def _pairs(cmd: list[str]) -> dict[str, str]:
    return {a: b for a, b in itertools.pairwise(cmd) if a.startswith("-")}


def test_amd64_kernel_initrd() -> None:
    cmd = qemu_command(KERNEL, VMConfig(arch="amd64", publish=((2222, 22),)), kernel=Path("vmlinux"))
    opts = _pairs(cmd)
    assert cmd[0] == "qemu-system-x86_64" and opts["-accel"] == "tcg"
    assert opts["-kernel"] == "vmlinux" and opts["-initrd"] == "i" and opts["-append"] == "console=ttyS0 panic=-1"
    assert "-nographic" in cmd and "-no-reboot" in cmd and opts["-m"] == "2048"
    # Forwards listen on the host's loopback only.
    assert opts["-netdev"] == "user,id=n0,hostfwd=tcp:127.0.0.1:2222-:22" and opts["-device"] == "virtio-net-pci,netdev=n0"


def test_arm64_and_s390x_machines() -> None:
    arm = _pairs(qemu_command(KERNEL, VMConfig(arch="arm64")))
    assert arm["-M"] == "virt" and arm["-cpu"] == "cortex-a57"
    s390 = qemu_command(KERNEL, VMConfig(arch="s390x", networking=False))
    assert s390[0] == "qemu-system-s390x" and _pairs(s390)["-M"] == "s390-ccw-virtio" and _pairs(s390)["-nic"] == "none"
    assert _pairs(qemu_command(KERNEL, VMConfig(arch="s390x")))["-device"] == "virtio-net-ccw,netdev=n0"
    with pytest.raises(UsageError, match="s390x boots kernel\\+initrd only"):
        qemu_command(Media(iso=Path("x.iso")), VMConfig(arch="s390x"))


def test_uefi_iso_and_disk() -> None:
    cmd = qemu_command(Media(iso=Path("x.iso")), VMConfig(arch="amd64", uefi=True), vars_file=Path("vars.fd"))
    assert "q35" in cmd and "-cdrom" in cmd
    assert any(a.startswith("if=pflash") and "readonly=on" in a and "OVMF_CODE" in a for a in cmd)
    assert any(a.startswith("if=pflash") and a.endswith("file=vars.fd") for a in cmd)
    disk = qemu_command(Media(disk=Path("d.qcow2")), VMConfig(arch="amd64"))
    assert "file=d.qcow2,format=qcow2,if=virtio,snapshot=on" in disk
    arm = qemu_command(Media(disk=Path("d.img")), VMConfig(arch="arm64", uefi=True))
    assert "-bios" in arm and "file=d.img,format=raw,if=virtio,snapshot=on" in arm
    # A fixed VHD would probe as raw: the driver is named from the suffix.
    assert "file=d.vhd,format=vpc,if=virtio,snapshot=on" in qemu_command(Media(disk=Path("d.vhd")), VMConfig(arch="amd64"))
    assert "file=d.vmdk,format=vmdk,if=virtio,snapshot=on" in qemu_command(Media(disk=Path("d.vmdk")), VMConfig(arch="amd64"))


def test_data_disks_and_the_cidata_cdrom_follow_the_boot_media() -> None:
    vm = VMConfig(arch="amd64", disks=(DiskSpec(Path("data.qcow2")), DiskSpec(Path("raw.img"), format="raw")),
                  cdrom=Path("data.iso"))
    cmd = qemu_command(Media(disk=Path("boot.img")), vm)
    drives = [b for a, b in itertools.pairwise(cmd) if a == "-drive"]
    # The boot disk first (vda), persistent data disks after it (no snapshot: writes stay).
    assert drives[:3] == ["file=boot.img,format=raw,if=virtio,snapshot=on", "file=data.qcow2,format=qcow2,if=virtio",
                          "file=raw.img,format=raw,if=virtio"]
    assert "if=none,id=cidata,file=data.iso,format=raw,media=cdrom,readonly=on" in drives
    devices = [b for a, b in itertools.pairwise(cmd) if a == "-device"]
    assert "virtio-scsi-pci,id=cidata-scsi" in devices and "scsi-cd,drive=cidata,bus=cidata-scsi.0" in devices
    s390 = qemu_command(KERNEL, VMConfig(arch="s390x", cdrom=Path("d.iso")))
    assert "virtio-scsi-ccw,id=cidata-scsi" in s390


def test_parse_publish() -> None:
    assert parse_publish("2222:22") == (2222, 22)
    assert parse_publish("8080") == (8080, 8080)
    assert parse_publish("2222:22/tcp") == (2222, 22)
    for bad in ("x:22", "0:22", "70000:1"):
        with pytest.raises(UsageError):
            parse_publish(bad)


def test_find_media(tmp_path: Path) -> None:
    for name in ("m-kernel", "m-initrd.img"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "m-cmdline").write_text("console=ttyS0\n")
    media = find_media(tmp_path / "m")
    assert media.kind == "kernel" and media.cmdline == "console=ttyS0"
    (tmp_path / "m-efi.iso").write_bytes(b"")
    assert find_media(tmp_path / "m", iso=True, uefi=True).iso == tmp_path / "m-efi.iso"
    assert find_media(tmp_path / "m-efi.iso").kind == "iso"
    with pytest.raises(UsageError, match="no ISO"):
        find_media(tmp_path / "m", iso=True)
    with pytest.raises(UsageError, match="kernel\\+initrd"):
        find_media(tmp_path / "other")


def test_pvh_kernel_ignores_non_bzimages(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(b"\x00" * 4096)
    assert pvh_kernel(tmp_path / "k", tmp_path) is None
