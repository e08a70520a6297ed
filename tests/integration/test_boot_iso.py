"""amd64 ISO and raw disk images boot with BIOS (SeaBIOS) and UEFI (OVMF) under QEMU."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("iso")
    layout = Layout(root / "cache")
    yml = root / "m.yml"
    yml.write_text(imagekit.minimal_yaml(layout, "amd64", marker=MARKER))
    build_image([yml], formats=["iso-bios", "iso-efi", "raw-bios", "raw-efi", "qcow2-efi"], arch="amd64",
                out_dir=root / "out", cache=root / "cache")
    return root / "out"


@pytest.mark.parametrize(("name", "uefi"), [
    ("m.iso", False), ("m-efi.iso", True), ("m-bios.img", False), ("m-efi.img", True), ("m-efi.qcow2", True),
])
def test_boots(outputs: Path, tmp_path: Path, name: str, uefi: bool) -> None:
    path = outputs / name
    media = Media(iso=path) if name.endswith(".iso") else Media(disk=path)
    result = boot(media, VMConfig(arch="amd64", uefi=uefi, networking=False), work=tmp_path, timeout=150, capture=True)
    assert MARKER in [line.strip() for line in result.text().splitlines()], result.text()[-3000:]
