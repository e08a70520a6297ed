"""ISO and disk images boot under QEMU on every arch that has the format: amd64 with BIOS
(SeaBIOS) and UEFI (OVMF), arm64 with UEFI (AAVMF), each through GRUB, with the kernel in the
form the VM flavour ships it (arm64: a gzip'd Image, which GRUB unpacks with gzio).

The cloud formats wrap one disk (aws's NAME.raw; gcp's disk.raw is the same layout at a GiB
size): qemu-img reads every wrapper back to exactly that disk's bytes, and each format boots
once, the hybrid disk through both firmwares (BIOS as aws, UEFI as the others)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import imagekit

from pkgtool.assemble.image_build import build_image
from pkgtool.oci.layout import Layout
from pkgtool.run.qemu import Media, VMConfig, boot

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MARKER = "PKGTOOL-ISO-MARKER"
CLOUD = ["aws", "gcp", "vhd", "dynamic-vhd", "vmdk"]
FORMATS = {
    "amd64": ["iso-bios", "iso-efi", "iso-efi-initrd", "raw-bios", "raw-efi", "qcow2-bios", "qcow2-efi", *CLOUD],
    "arm64": ["iso-efi", "iso-efi-initrd", "raw-efi", "qcow2-efi", *CLOUD],
}
# (arch, output file, UEFI firmware): every boot path of those formats.
BOOTS = [
    ("amd64", "m.iso", False), ("amd64", "m-efi.iso", True), ("amd64", "m-bios.img", False),
    ("amd64", "m-efi.img", True), ("amd64", "m.qcow2", False), ("amd64", "m-efi.qcow2", True),
    ("arm64", "m-efi.iso", True), ("arm64", "m-efi.img", True), ("arm64", "m-efi.qcow2", True),
    ("amd64", "m-efi-initrd.iso", True), ("arm64", "m-efi-initrd.iso", True),
    ("amd64", "m.raw", False), ("arm64", "m.raw", True), ("amd64", "gcp-disk.raw", True),
    ("amd64", "m.vhd", True), ("amd64", "m-dynamic.vhd", True), ("amd64", "m.vmdk", True),
]
# QEMU's driver for each wrapper of the cloud disk, and qemu-img's own name for it.
WRAPPERS = {"m.vhd": "vpc", "m-dynamic.vhd": "vpc", "m.vmdk": "vmdk"}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    made = {}
    for arch, formats in FORMATS.items():
        root = tmp_path_factory.mktemp(f"iso-{arch}")
        layout = Layout(root / "cache")
        yml = root / "m.yml"
        yml.write_text(imagekit.minimal_yaml(layout, arch, marker=MARKER))
        build_image([yml], formats=formats, arch=arch, out_dir=root / "out", cache=root / "cache")
        # GCE imports disk.raw out of the tar.gz: boot what it would (holes restored as zeros).
        with tarfile.open(root / "out" / "m.img.tar.gz") as archive:
            member = archive.getmember("disk.raw")
            assert member.type == tarfile.GNUTYPE_SPARSE and member.size == 1 << 30
            archive.extract(member, root / "gcp", filter="data")
        (root / "gcp" / "disk.raw").rename(root / "out" / "gcp-disk.raw")
        made[arch] = root / "out"
    return made


@pytest.mark.parametrize(("arch", "name", "uefi"), BOOTS)
def test_boots(outputs: dict[str, Path], tmp_path: Path, arch: str, name: str, uefi: bool) -> None:
    path = outputs[arch] / name
    media = Media(iso=path) if name.endswith(".iso") else Media(disk=path)
    result = boot(media, VMConfig(arch=arch, uefi=uefi, networking=False), work=tmp_path, timeout=240, capture=True)
    assert MARKER in [line.strip() for line in result.text().splitlines()], result.text()[-3000:]


def test_the_arm64_disk_carries_the_gzip_form(outputs: dict[str, Path]) -> None:
    """What GRUB loaded above is the gzip'd Image (its FAT partition starts at 1 MiB)."""
    kernel = subprocess.run(["mcopy", "-n", "-i", f"{outputs['arm64'] / 'm-efi.img'}@@1M", "::/boot/kernel", "-"],
                            capture_output=True, check=True, env={**os.environ, "MTOOLS_SKIP_CHECK": "1"}).stdout
    assert kernel[:2] == b"\x1f\x8b" and kernel == imagekit.shipped_kernel("arm64").read_bytes()


@pytest.mark.parametrize("arch", ["amd64", "arm64"])
def test_cloud_wrappers_read_back_as_the_disk(outputs: dict[str, Path], arch: str) -> None:
    raw = outputs[arch] / "m.raw"
    for name, driver in WRAPPERS.items():
        same = subprocess.run(["qemu-img", "compare", "-f", driver, "-F", "raw", str(outputs[arch] / name), str(raw)],
                              capture_output=True, text=True)
        assert same.returncode == 0 and "Images are identical" in same.stdout, (name, same.stdout, same.stderr)
    check = subprocess.run(["qemu-img", "check", "-f", "vmdk", str(outputs[arch] / "m.vmdk")], capture_output=True, text=True)
    assert check.returncode == 0 and "No errors were found" in check.stdout, check.stdout + check.stderr
    # Azure's rule: a fixed VHD is the disk, a whole number of MiB, plus a 512-byte footer.
    assert (outputs[arch] / "m.vhd").stat().st_size == raw.stat().st_size + 512 and raw.stat().st_size % (1 << 20) == 0
    # The GPT of every cloud disk checks out, the GiB-sized one of gcp included.
    for disk in (raw, outputs[arch] / "gcp-disk.raw"):
        verify = subprocess.run(["sgdisk", "--verify", str(disk)], capture_output=True, text=True)
        assert "No problems found" in verify.stdout, verify.stdout
    table = subprocess.run(["sgdisk", "--print", str(raw)], capture_output=True, text=True, check=True).stdout
    assert ("EF02" in table) == (arch == "amd64") and "EF00" in table
