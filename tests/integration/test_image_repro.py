"""Every output format, built twice from the same inputs in different places and caches,
has the same sha256 (real host tools: tar2sqfs, grub-mkimage, mkfs.vfat, mtools, xorriso,
sgdisk, qemu-img; the VHD, VMDK, GCE tar and docker archive writers' own bytes)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import imagekit

from pkgtool.assemble.formats.registry import FORMAT_NAMES
from pkgtool.assemble.image_build import build_image
from pkgtool.oci.layout import Layout

pytestmark = pytest.mark.integration


def _build(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    layout = Layout(root / "cache")
    yml = root / "minimal.yml"
    yml.write_text(imagekit.minimal_yaml(layout, "amd64", marker="REPRO"))
    monkeypatch.chdir(root)  # relative paths differ between the two builds too
    outs = build_image([Path("minimal.yml")], formats=list(FORMAT_NAMES), arch="amd64",
                       out_dir=Path("out"), cache=Path("cache"))
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in outs}


def test_all_formats_are_bit_for_bit_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = _build(tmp_path / "one", monkeypatch)
    second_root = tmp_path / "two" / "other checkout"
    second_root.mkdir(parents=True)
    second = _build(second_root, monkeypatch)
    assert sorted(first) == sorted([
        "minimal-bios.img", "minimal-cmdline", "minimal-efi.img", "minimal-efi.iso", "minimal-efi.qcow2",
        "minimal-initrd.img", "minimal-initrd.tar", "minimal-kernel", "minimal-squashfs.img", "minimal.iso",
        "minimal.qcow2", "minimal.tar", "minimal-efi-initrd.iso", "minimal.raw", "minimal.img.tar.gz",
        "minimal.vhd", "minimal-dynamic.vhd", "minimal.vmdk", "minimal-docker.tar",
    ])
    assert first == second
    # and a warm-cache rebuild into the first place again
    assert _build(tmp_path / "one", monkeypatch) == first


def test_source_date_epoch_changes_timestamps_only_where_expected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    layout = Layout(tmp_path / "cache")
    yml = tmp_path / "m.yml"
    yml.write_text(imagekit.minimal_yaml(layout, "amd64", marker="SDE"))
    build_image([yml], formats=["tar"], arch="amd64", out_dir=tmp_path / "out", cache=tmp_path / "cache")
    import tarfile

    with tarfile.open(tmp_path / "out" / "m.tar") as tf:
        assert {m.mtime for m in tf.getmembers()} == {1700000000}
