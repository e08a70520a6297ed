"""Resilience against a bad network, on the real stack: the stack's registry behind a proxy
that resets 10% of pkgtool's requests, answers 503 to 10%, cuts 5% of bodies short and
corrupts 5% (fixed seeds).  Image builds and package pushes must (nearly always) succeed
with exactly the bytes of a fault-free run, fail with one clean line otherwise, and never
leave a corrupt blob, a temp file or a half-published index behind."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import basekit
import faultproxy
import pytest
from pkgsetkit import PackageSet

from pkgtool.oci import layout_gc
from pkgtool.oci.layout import Layout
from pkgtool.oci.registry import RegistryClient

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BUILDS = 20
PUSHES = 10


def _pkgtool(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pkgtool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PKGTOOL_PROGRESS": "plain", **(env or {})})


def _clean_failure(done: subprocess.CompletedProcess[str]) -> None:
    lines = [line for line in done.stderr.splitlines() if line.startswith("pkgtool: error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr


def _healthy(cache: Path) -> None:
    layout = Layout(cache)
    if layout.exists():
        assert layout_gc.verify(layout) == []
        assert not [p for p in layout.blobs_dir.iterdir() if p.name.startswith(".pkgtool-tmp")]


def test_image_builds_through_a_faulty_registry(pkgset: PackageSet, registry: str, tmp_path: Path) -> None:
    minimal = (pkgset.root / "examples/minimal.yml").read_text()
    reference = tmp_path / "reference"
    done = _pkgtool("--cache-dir", str(tmp_path / "reference-cache"), "image", "build",
                    str(pkgset.root / "examples/minimal.yml"), "--format", "tar", "--dir", str(reference),
                    cwd=pkgset.root)
    assert done.returncode == 0, done.stderr
    expected = {p.name: p.read_bytes() for p in reference.iterdir()}
    with faultproxy.running(registry, seed=14) as proxy:
        yml = tmp_path / "minimal.yml"
        yml.write_text(minimal.replace(f"{registry}/", f"{proxy.address}/"))
        succeeded = 0
        for n in range(BUILDS):
            out, cache = tmp_path / f"out{n}", tmp_path / f"cache{n}"
            # tar: the pulls are what is under test; compressing an initrd 20 times is not.
            done = _pkgtool("--cache-dir", str(cache), "image", "build", str(yml), "--name", "minimal",
                            "--format", "tar", "--dir", str(out), cwd=tmp_path)
            if done.returncode == 0:
                succeeded += 1
                assert {p.name: p.read_bytes() for p in out.iterdir()} == expected
            else:
                _clean_failure(done)
                assert not out.exists() or not any(out.iterdir())
            _healthy(cache)
            shutil.rmtree(cache, ignore_errors=True)  # 20 cold caches would hold 2 GB
            shutil.rmtree(out, ignore_errors=True)
    print(f"image builds through faults: {succeeded}/{BUILDS}; faults injected: {proxy.counts}")
    assert proxy.counts.get("reset", 0) and proxy.counts.get("corrupt", 0) and proxy.counts.get("truncate", 0)
    assert succeeded >= BUILDS - 1


def test_package_pushes_through_a_faulty_registry(registry: str, tmp_path: Path) -> None:
    base = basekit.push_busybox_base(registry)
    org = f"pkgtool-test/f{secrets.token_hex(5)}"
    repo = tmp_path / "repo"
    package = repo / "pkg" / "app"
    package.mkdir(parents=True)
    (package / "build.yml").write_text(f"image: app\norg: {org}\narches: [amd64]\n")
    # Each push carries new content (N is in the image), so every upload really happens.
    (package / "Dockerfile").write_text(
        f"ARG PKGTOOL_REGISTRY={registry}\nFROM ${{PKGTOOL_REGISTRY}}/{base.repository}:{base.tag}@{base.digest} AS build\n"
        "ARG N\nRUN mkdir /out && head -c 300000 /dev/zero | tr '\\0' x > /out/fill && echo $N > /out/n\n"
        "FROM scratch\nCOPY --from=build /out/ /\n"
    )
    client = RegistryClient(registry)
    with faultproxy.running(registry, seed=41) as proxy:
        complete = 0
        for n in range(PUSHES):
            done = _pkgtool("build", "pkg/app", "--registry", proxy.address, "--build-arg", f"N={n}",
                            "--allow-dirty", cwd=repo)
            tag = _pkgtool("show-tag", "pkg/app", "--build-arg", f"N={n}", cwd=repo).stdout.strip().rsplit(":", 1)[1]
            index = client.get_manifest_or_none(f"{org}/app", tag)
            if done.returncode == 0:
                complete += 1
                assert index is not None and [m.platform.architecture for m in index.manifests] == ["amd64"]  # type: ignore[union-attr]
            else:
                _clean_failure(done)
                assert index is None  # nothing published as complete
    print(f"package pushes through faults: {complete}/{PUSHES}; faults injected: {proxy.counts}")
    assert complete >= PUSHES - 1
