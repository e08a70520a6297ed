"""An initramfs from our tree + cpio writer boots a real Debian kernel under QEMU (TCG)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pkgtool.assemble.cpio import compressor, write_cpio
from pkgtool.assemble.files import ensure_console
from pkgtool.oci.filetree import BytesContent, Inode, Kind, Tree

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MARKER = "PKGTOOL-INITRAMFS-MARKER"
BUSYBOX = Path("/bin/busybox")


def _kernel(tmp_path: Path) -> Path:
    """A Debian amd64 kernel: $PKGTOOL_TEST_KERNEL, or unpacked from a linux-image .deb in apt's cache."""
    if os.environ.get("PKGTOOL_TEST_KERNEL"):
        return Path(os.environ["PKGTOOL_TEST_KERNEL"])
    debs = sorted(glob.glob("/var/cache/apt/archives/linux-image-*amd64*.deb"))
    debs = [d for d in debs if "-dbg" not in d and "unsigned" not in d] or debs
    for deb in debs:
        out = tmp_path / "kernel"
        out.mkdir(exist_ok=True)
        tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", deb], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "--wildcards", "./boot/vmlinuz-*"], input=tar, cwd=out, check=False, capture_output=True)
        found = sorted(out.glob("boot/vmlinuz-*"))
        if found:
            return found[0]
    pytest.skip("no kernel: set PKGTOOL_TEST_KERNEL or `apt-get download` a linux-image-*-amd64 package")


def test_initramfs_boots_and_prints_marker(tmp_path: Path) -> None:
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("qemu-system-x86 not installed")
    if not BUSYBOX.exists():
        pytest.skip("busybox-static not installed")
    kernel = _kernel(tmp_path)
    initrd = tmp_path / "initrd.img"
    with Tree() as tree, initrd.open("wb") as out:
        with BUSYBOX.open("rb") as handle:
            busybox = Inode(Kind.FILE, mode=0o755, content=tree.store.put(handle, BUSYBOX.stat().st_size, what="busybox"))
        tree.put("bin/busybox", busybox)
        tree.put("bin/sh", busybox)  # a hard link, exercised by the kernel's unpacker
        script = f"#!/bin/sh\n/bin/busybox echo {MARKER}\n/bin/busybox poweroff -f\n"
        tree.put("init", Inode(Kind.FILE, mode=0o755, content=BytesContent(script.encode())))
        ensure_console(tree)
        with compressor(out, "gzip") as stream:
            write_cpio(tree, stream, mtime=0)
    cmd = [
        "qemu-system-x86_64", "-accel", "tcg", "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "console=ttyS0 panic=-1", "-m", "512", "-nographic", "-no-reboot", "-net", "none",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=240, check=False)
        output = proc.stdout.decode("utf-8", "replace").replace("\r", "")
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode("utf-8", "replace").replace("\r", "")
        pytest.fail(f"no poweroff within 240 s; serial tail:\n{output[-3000:]}")
    # QEMU exits 0 even after a panic: the marker on the serial console is the proof.
    assert any(line.strip() == MARKER for line in output.splitlines()), output[-3000:]
