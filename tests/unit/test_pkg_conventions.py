"""Every package in pkg/ follows the set's conventions (no stack needed):

* build.yml loads, builds for amd64, arm64 and s390x without network;
* the Dockerfile declares ``ARG PKGTOOL_REGISTRY`` before its first FROM, builds FROM the
  Debian base of pkg/base pinned by tag *and* digest, and ends ``FROM scratch``;
* the tag it pins is the base's current one (the recipe and locks hash to it);
* scripts in rootfs/ are executable, start with ``#!/bin/sh`` and pass ``sh -n``;
* a service or onboot package carries its image-entry config in build.yml.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pkgtool.base.base_build import base_tag, load_locks
from pkgtool.base.recipe import load_recipe
from pkgtool.spec.package import load_package

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "pkg"
PACKAGES = sorted(p.parent.name for p in PKG.glob("*/build.yml"))
# Packages for an image's init: section (unpacked into /) have no container config.
INIT_PACKAGES = {"init", "runc", "containerd"}
BASE_FROM = re.compile(r"^FROM \$\{PKGTOOL_REGISTRY\}/pkgtool/base:([0-9a-f]{40})@sha256:[0-9a-f]{64} AS build$")


def test_the_whole_set_is_there() -> None:
    assert PACKAGES == [
        "containerd", "dockerd", "format", "getty", "init", "metadata", "modprobe", "mount",
        "poweroff", "rngd", "runc", "sshd", "sysctl", "udhcpc",
    ]  # fmt: skip


@pytest.mark.parametrize("name", PACKAGES)
def test_build_yml(name: str) -> None:
    spec = load_package(PKG / name)
    assert spec.arches == ("amd64", "arm64", "s390x") and not spec.network and spec.org == "pkgtool"
    assert spec.image == name
    assert [(e.src, e.dst) for e in spec.extra_sources] == [("../lib/pkgcopy.sh", "pkgcopy.sh")]
    if name in INIT_PACKAGES:
        assert spec.config is None
    else:
        assert spec.config is not None and spec.config_label()


@pytest.mark.parametrize("name", PACKAGES)
def test_dockerfile_builds_from_the_current_pinned_base_and_ends_from_scratch(name: str) -> None:
    lines = [line for line in (PKG / name / "Dockerfile").read_text().splitlines() if line and not line.startswith("#")]
    froms = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    assert lines[0] == "ARG PKGTOOL_REGISTRY=127.0.0.1:5000" and froms[0] == 1
    match = BASE_FROM.match(lines[froms[0]])
    assert match, lines[froms[0]]
    recipe = load_recipe(PKG / "base" / "base.yml")
    assert match.group(1) == base_tag(recipe, load_locks(recipe)), "stale base pin: run `pkgtool update-hashes`"
    assert lines[froms[-1]] == "FROM scratch" and len(froms) == 2
    assert not any(line.startswith(("ADD ", "RUN apt", "RUN wget", "RUN curl")) for line in lines)


SCRIPTS = sorted(p for p in PKG.glob("*/rootfs/**/*") if p.is_file() and p.read_bytes().startswith(b"#!"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(PKG)))
def test_scripts_are_executable_posix_sh(script: Path) -> None:
    assert script.read_text().startswith("#!/bin/sh\n")
    assert script.stat().st_mode & 0o111
    sh = shutil.which("busybox") or "sh"
    args = [sh, "sh", "-n", str(script)] if sh.endswith("busybox") else [sh, "-n", str(script)]
    proc = subprocess.run(args, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_pkgcopy_is_plain_sh() -> None:
    proc = subprocess.run(["sh", "-n", str(PKG / "lib" / "pkgcopy.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
