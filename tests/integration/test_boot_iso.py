"""ISO and disk images boot under QEMU on every arch that has the format: amd64 with BIOS
(SeaBIOS) and UEFI (OVMF), arm64 with UEFI (AAVMF), each through GRUB, with the kernel in the
form the VM flavour ships it (arm64: a gzip'd Image, which GRUB unpacks with gzio)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import imagekit

from pkgtool.assemble.image_build import build_image
from pkgtool.oci.layout import Layout
from pkgtool.run.qemu import Media, VMConfig, boot

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MARKER = "PKGTOOL-ISO-MARKER"
FORMATS = {
    "amd64": ["iso-bios", "iso-efi", "raw-bios", "raw-efi", "qcow2-bios", "qcow2-efi"],
    "arm64": ["iso-efi", "raw-efi", "qcow2-efi"],
}
# (arch, output file, UEFI firmware): every boot path of those formats.
BOOTS = [
    ("amd64", "m.iso", False), ("amd64", "m-efi.iso", True), ("amd64", "m-bios.img", False),
    ("amd64", "m-efi.img", True), ("amd64", "m.qcow2", False), ("amd64", "m-efi.qcow2", True),
    ("arm64", "m-efi.iso", True), ("arm64", "m-efi.img", True), ("arm64", "m-efi.qcow2", True),
]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    made = {}
    for arch, formats in FORMATS.items():
        root = tmp_path_factory.mktemp(f"iso-{arch}")
        layout = Layout(root / "cache")
        yml = root / "m.yml"
        yml.write_text(imagekit.minimal_yaml(layout, arch, marker=MARKER))
        build_image([yml], formats=formats, arch=arch, out_dir=root / "out", cache=root / "cache")
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
