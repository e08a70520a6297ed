"""`pkgtool kernel build --from-source`: compile Debian's linux-source-6.1 with the committed
Kconfig fragments, check the image layout, and boot each kernel under QEMU (TCG) to a
marker, loading one of its modules with modprobe.

Slow (about 10-15 minutes of compile per arch on 2 cores) and needs the cross toolchains,
so it only runs when asked: PKGTOOL_TEST_KERNEL_SOURCE=1 (arches from
PKGTOOL_TEST_KERNEL_SOURCE_ARCHES, default amd64,arm64,s390x).  Run it with `nice`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import sys
import tarfile
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import imagekit

from pkgtool.assemble.image_build import build_image
from pkgtool.kernel import bzimage
from pkgtool.kernel.kernel_yml import load_kernel_spec
from pkgtool.kernel.source import (
    SourceBuildResult,
    build_kernel_from_source,
    parse_config,
    read_fragments,
)
from pkgtool.oci.layout import Layout
from pkgtool.run.qemu import VMConfig, boot, find_media

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("PKGTOOL_TEST_KERNEL_SOURCE") != "1",
                       reason="compiles kernels from source (10-15 min per arch): set PKGTOOL_TEST_KERNEL_SOURCE=1 to run"),
]
REPO = Path(__file__).resolve().parents[2]
ARCHES = [a for a in os.environ.get("PKGTOOL_TEST_KERNEL_SOURCE_ARCHES", "amd64,arm64,s390x").split(",") if a]
MARKER = "PKGTOOL-SOURCE-KERNEL-MARKER"
CONSOLE = {"amd64": "ttyS0", "arm64": "ttyAMA0", "s390x": "ttysclp0"}

INIT = """#!/bin/busybox sh
export PATH=/bin
busybox mkdir -p /proc /sys /tmp
busybox mount -t proc proc /proc
busybox mount -t sysfs sysfs /sys
rel=$(busybox uname -r)
busybox echo "RELEASE=$rel"
busybox mount -t cgroup2 cgroup2 /sys/fs/cgroup && busybox echo CGROUP2-OK
busybox grep -q overlay /proc/filesystems && busybox grep -q squashfs /proc/filesystems && busybox echo FS-OK
busybox unshare -p -n -u -i -m -f busybox true && busybox echo NAMESPACES-OK
[ -e "/lib/modules/$rel/modules.dep" ] && busybox modprobe veth && busybox grep -q '^veth ' /proc/modules \\
  && busybox echo MODPROBE-VETH-OK
busybox echo @MARKER@
busybox poweroff -f
""".replace("@MARKER@", MARKER)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, registry: str) -> tuple[SourceBuildResult, Path, str]:
    out = tmp_path_factory.mktemp("kernel-source")
    spec = load_kernel_spec(REPO / "kernel/bookworm-6.1/kernel.yml")
    assert spec.source is not None
    repo = f"pkgtool-test/kernel-source-{os.getpid()}"
    spec = dataclasses.replace(spec, source=dataclasses.replace(spec.source, image=repo))
    result = build_kernel_from_source(spec, registry=registry, arches=ARCHES, out_dir=out, log=print)
    return result, out, repo


def _get(registry: str, repo: str, what: str, accept: str = "") -> bytes:
    req = urllib.request.Request(f"http://{registry}/v2/{repo}/{what}", headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(req, timeout=60) as resp:
        data: bytes = resp.read()
    return data


def test_layout_matches_the_deb_path(built: tuple[SourceBuildResult, Path, str], registry: str) -> None:
    result, out, repo = built
    assert not result.skipped and result.arches is not None
    spec = load_kernel_spec(REPO / "kernel/bookworm-6.1/kernel.yml")
    assert spec.source is not None
    for arch_result in result.arches:
        arch = arch_result.arch
        files = sorted(p.name for p in (out / arch).iterdir())
        assert files == ["System.map", "config", "kernel", "kernel.tar"] + (["vmlinux"] if arch == "amd64" else [])
        assert arch_result.release == f"{spec.source.version.rsplit('-', 1)[0]}-pkgtool-{arch}"
        kernel = (out / arch / "kernel").read_bytes()
        assert bzimage.kernel_kind(kernel) == bzimage.EXPECTED_KIND[arch]
        with tarfile.open(out / arch / "kernel.tar") as tf:
            names = tf.getnames()
        prefix = f"lib/modules/{arch_result.release}"
        assert f"{prefix}/modules.dep" in names
        assert any(n.endswith("/veth.ko") for n in names)
        assert not any(n.endswith(("/build", "/source")) for n in names)
        config = parse_config((out / arch / "config").read_text())
        for symbol, want in read_fragments(spec.source.configs[arch]).wanted.items():
            assert config.get(symbol, "n") == want, symbol
        print(f"{arch}: compile {arch_result.compile_seconds:.0f}s, /kernel {arch_result.kernel_bytes} B, "
              f"kernel.tar {arch_result.kernel_tar_bytes} B, layer {arch_result.layer_bytes} B")
    index = json.loads(_get(registry, repo, f"manifests/{result.tag}", "application/vnd.oci.image.index.v1+json"))
    assert [m["platform"]["architecture"] for m in index["manifests"]] == ARCHES
    manifest = json.loads(_get(registry, repo, f"manifests/{index['manifests'][0]['digest']}",
                               "application/vnd.oci.image.manifest.v1+json"))
    layer = _get(registry, repo, f"blobs/{manifest['layers'][0]['digest']}")
    with tarfile.open(fileobj=io.BytesIO(layer), mode="r:gz") as tf:
        assert "kernel.tar" in tf.getnames()


@pytest.mark.parametrize("arch", ARCHES)
def test_source_kernel_boots_and_loads_a_module(built: tuple[SourceBuildResult, Path, str], arch: str,
                                               tmp_path: Path) -> None:
    _result, out, _repo = built
    layout = Layout(tmp_path / "cache")
    kernel_ref = imagekit.store_image(layout, "127.0.0.1:5000/pkgtool-test/source-kernel", [imagekit.layer_tar([
        ("kernel", "file", (out / arch / "kernel").read_bytes(), 0o644),
        ("kernel.tar", "file", (out / arch / "kernel.tar").read_bytes(), 0o644),
    ])], arch=arch)
    init_ref = imagekit.store_image(layout, "127.0.0.1:5000/pkgtool-test/source-init", [imagekit.busybox_layer(
        arch, [("init", "file", INIT.encode(), 0o755)])], arch=arch)
    yml = tmp_path / "source-kernel.yml"
    yml.write_text(f"kernel:\n  image: {kernel_ref}\n  cmdline: \"console={CONSOLE[arch]} panic=-1\"\n"
                   f"init:\n  - {init_ref}\n")
    build_image([yml], formats=["kernel+initrd"], arch=arch, out_dir=tmp_path / "out", cache=tmp_path / "cache")
    result = boot(find_media(tmp_path / "out" / "source-kernel"), VMConfig(arch=arch, networking=False),
                  work=tmp_path, timeout=180, capture=True)
    lines = [line.strip() for line in result.text().splitlines()]
    tail = result.text()[-3000:]
    assert MARKER in lines, tail
    for marker in ("CGROUP2-OK", "FS-OK", "NAMESPACES-OK", "MODPROBE-VETH-OK"):
        assert marker in lines, tail
    assert not result.timed_out
