"""Cached initrd segments with the real package set: two builds at once that share segments,
and a build killed with kill -9 in the middle, leave a cache every later build trusts and
gets the same bytes from."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pkgsetkit import PackageSet

from pkgtool.oci import layout_gc
from pkgtool.oci.layout import Layout

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _build_cmd(pkgset: PackageSet, cache: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pkgtool", "--cache-dir", str(cache), "image", "build",
            str(pkgset.root / "examples/minimal.yml"), "--dir", str(out)]


def _initrd(out: Path) -> bytes:
    return (out / "minimal-initrd.img").read_bytes()


def test_concurrent_builds_and_a_killed_build_leave_a_trustworthy_cache(pkgset: PackageSet, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    subprocess.run(_build_cmd(pkgset, tmp_path / "reference-cache", reference), check=True, capture_output=True,
                   timeout=900)

    # Two cold builds at once on one cache: both succeed, with the reference's bytes.
    shared = tmp_path / "shared"
    running = [subprocess.Popen(_build_cmd(pkgset, shared, tmp_path / f"concurrent{n}"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE) for n in range(2)]
    for proc in running:
        _out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err.decode()[-2000:]
    assert _initrd(tmp_path / "concurrent0") == _initrd(tmp_path / "concurrent1") == _initrd(reference)
    assert layout_gc.verify(Layout(shared)) == []

    # A cold build killed while it writes segments leaves nothing a later build uses.
    killed = tmp_path / "killed"
    # (gzip: slower than the default zstd, so the kill lands while segments are written)
    proc = subprocess.Popen([*_build_cmd(pkgset, killed, tmp_path / "dead"), "--initrd-compression", "gzip"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("pkgtool: compressing"):
            time.sleep(0.2)  # mid-way through writing a segment
            break
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert layout_gc.verify(Layout(killed)) == []
    assert not (tmp_path / "dead").exists() or not [p for p in (tmp_path / "dead").iterdir()
                                                      if not p.name.startswith(".pkgtool-tmp")]
    done = subprocess.run([*_build_cmd(pkgset, killed, tmp_path / "after"), "--initrd-compression", "gzip"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    fresh = subprocess.run([*_build_cmd(pkgset, tmp_path / "fresh-cache", tmp_path / "fresh"), "--initrd-compression",
                            "gzip"], capture_output=True, text=True, timeout=900)
    assert fresh.returncode == 0, fresh.stderr
    assert _initrd(tmp_path / "after") == _initrd(tmp_path / "fresh")
