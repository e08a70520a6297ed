"""`pkgtool image build` end to end through the CLI, from a warm (offline) cache."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import imagekit

from pkgtool.oci.layout import Layout

pytestmark = pytest.mark.integration


def _pkgtool(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pkgtool", "--cache-dir", str(cache), *args], capture_output=True, text=True, check=False)


def test_cli_build_and_errors(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    yml = tmp_path / "sys.yml"
    yml.write_text(imagekit.minimal_yaml(Layout(cache), "arm64", marker="CLI"))
    out = tmp_path / "out"
    done = _pkgtool("image", "build", str(yml), "--arch", "arm64", "--format", "kernel+initrd,tar",
                    "--dir", str(out), "--name", "demo", cache=cache)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["demo-cmdline", "demo-initrd.img", "demo-kernel", "demo.tar"]
    assert done.stdout.split() == [str(out / n) for n in ("demo.tar", "demo-kernel", "demo-initrd.img", "demo-cmdline")]

    bad = _pkgtool("image", "build", str(yml), "--arch", "s390x", "--format", "iso-bios", "--dir", str(tmp_path / "o2"), cache=cache)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "not supported for s390x" in bad.stderr
    assert not (tmp_path / "o2").exists()

    (tmp_path / "extra.yml").write_text("files:\n  - path: etc/x\n    source: nope\n")
    bad = _pkgtool("image", "build", str(yml), str(tmp_path / "extra.yml"), "--arch", "arm64", "--dir", str(tmp_path / "o3"), cache=cache)
    assert bad.returncode != 0 and "nope" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "o3").exists() or list((tmp_path / "o3").iterdir()) == []

    (tmp_path / "unknown.yml").write_text("kernel:\n  imagez: x\n")
    bad = _pkgtool("image", "build", str(tmp_path / "unknown.yml"), cache=cache)
    assert bad.returncode == 2 and "unknown.yml:2" in bad.stderr
