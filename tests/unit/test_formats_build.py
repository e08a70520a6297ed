"""Image assembly into outputs from synthetic images in a cache layout (no registry, no QEMU)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import imagekit

from pkgtool.assemble.image_build import build_image
from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.oci.layout import Layout

REPO = "127.0.0.1:5000/unit"


def _images(cache: Path) -> str:
    layout = Layout(cache)
    ktar = imagekit.layer_tar([("lib/modules/x/modules.order", "file", b"m", 0o644)])
    kernel = imagekit.store_image(layout, f"{REPO}/kernel", [imagekit.layer_tar([
        ("kernel", "file", b"KERNEL" * 100, 0o644), ("kernel.tar", "file", gzip.decompress(ktar), 0o644),
    ])], arch="amd64")
    init = imagekit.store_image(layout, f"{REPO}/init", [
        imagekit.layer_tar([("lib", "symlink", "usr/lib", 0o777), ("usr/lib", "dir", None, 0o755),
                            ("Dockerfile", "file", b"FROM x", 0o644), ("etc/hostname", "file", b"h", 0o644),
                            ("init", "file", b"#!/bin/sh\n", 0o755)]),
    ], arch="amd64")
    svc = imagekit.store_image(layout, f"{REPO}/svc", [
        imagekit.layer_tar([("etc/passwd", "file", b"root:x:0:0::/:/bin/sh\nsshd:x:22:22::/:/bin/false\n", 0o644),
                            ("bin/sshd", "file", b"ELF", 0o755)]),
    ], arch="amd64", config={"Cmd": ["/bin/sshd"], "Env": ["A=1"],
                             "Labels": {"org.mobyproject.config": json.dumps({"capabilities": ["CAP_NET_BIND_SERVICE"]})}})
    yml = cache.parent / "img.yml"
    yml.write_text(
        "# a comment\n"
        f"kernel:\n  image: {kernel}\n  cmdline: console=ttyS0\n"
        f"init:\n  - {init}\n"
        f"onboot:\n  - name: one\n    image: {svc}\n    readonly: true\n"
        f"services:\n  - name: sshd\n    image: {svc}\n    uid: sshd\n"
        "files:\n  - path: etc/motd\n    contents: hi\n    mode: \"0644\"\n"
        "  - path: etc/pkgtool.yml\n    metadata: yaml\n"
    )
    return str(yml)


def _members(tar_path: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tar_path) as tf:
        return {m.name: m for m in tf.getmembers()}


def test_tar_and_kernel_initrd_layout_and_rewrites(tmp_path: Path) -> None:
    yml = _images(tmp_path / "cache")
    outs = build_image([Path(yml)], formats=["tar", "kernel+initrd", "tar-kernel-initrd"], arch="amd64",
                       out_dir=tmp_path / "out", cache=tmp_path / "cache")
    names = sorted(p.name for p in outs)
    assert names == ["img-cmdline", "img-initrd.img", "img-initrd.tar", "img-kernel", "img.tar"]
    assert (tmp_path / "out" / "img-kernel").read_bytes() == b"KERNEL" * 100
    assert (tmp_path / "out" / "img-cmdline").read_text() == "console=ttyS0"
    members = _members(tmp_path / "out" / "img.tar")
    # kernel files and kernel.tar (through the merged-/usr symlink of the init image)
    assert "boot/kernel" in members and "boot/cmdline" in members
    assert "usr/lib/modules/x/modules.order" in members and members["lib"].issym()
    # LinuxKit's rewrites: dropped build leftovers, resolv.conf symlink for init, mtab, console
    assert "Dockerfile" not in members and "etc/hostname" not in members
    assert members["etc/resolv.conf"].linkname == "/run/resolvconf/resolv.conf"
    assert members["etc/mtab"].linkname == "/proc/mounts"
    assert members["dev/console"].ischr() and members["proc"].isdir()
    # bundles: readonly onboot in rootfs/; the writable service of the same image reuses
    # those files as its overlay's lower dir (LinuxKit's dedup) and has tmp/ + rootfs/
    assert "containers/onboot/000-one/rootfs/bin/sshd" in members
    assert "containers/services/sshd/lower" not in members
    for path in ("tmp", "rootfs", "config.json", "runtime.json"):
        assert f"containers/services/sshd/{path}" in members
    with tarfile.open(tmp_path / "out" / "img.tar") as tf:
        cfg = json.load(tf.extractfile("containers/services/sshd/config.json"))  # type: ignore[arg-type]
        runtime = json.load(tf.extractfile("containers/services/sshd/runtime.json"))  # type: ignore[arg-type]
        resolv = tf.extractfile("containers/onboot/000-one/rootfs/etc/resolv.conf").read()  # type: ignore[union-attr]
        metadata = tf.extractfile("etc/pkgtool.yml").read().decode()  # type: ignore[union-attr]
    # a container name wins over the image's passwd (LinuxKit): one=100, sshd=101
    assert cfg["process"]["args"] == ["/bin/sshd"] and cfg["process"]["user"]["uid"] == 101
    assert "CAP_NET_BIND_SERVICE" in cfg["process"]["capabilities"]["effective"]
    assert runtime["mounts"][0]["type"] == "tmpfs"  # the overlay set-up comes first
    assert "lowerdir=/containers/onboot/000-one/rootfs" in runtime["mounts"][2]["options"]
    assert b"no resolv.conf configured" in resolv
    assert "name: sshd" in metadata and "@sha256:" in metadata
    # tar-kernel-initrd members
    assert list(_members(tmp_path / "out" / "img-initrd.tar")) == ["kernel", "initrd.img", "cmdline"]
    # the initrd has no boot/kernel (it is a separate file) but has the console
    cpio = gzip.decompress((tmp_path / "out" / "img-initrd.img").read_bytes())
    assert b"boot/kernel\x00" not in cpio and b"dev/console\x00" in cpio


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_rebuild_in_another_place_is_identical(tmp_path: Path) -> None:
    fmts = ["tar", "kernel+initrd", "tar-kernel-initrd"]
    a, b = tmp_path / "a", tmp_path / "b" / "deeper"
    b.mkdir(parents=True)
    build_image([Path(_images(a / "cache"))], formats=fmts, arch="amd64", out_dir=a / "out", cache=a / "cache")
    build_image([Path(_images(b / "cache"))], formats=fmts, arch="amd64", out_dir=b / "out", cache=b / "cache")
    assert _digests(a / "out") == _digests(b / "out")


def test_zstd_initrd(tmp_path: Path) -> None:
    yml = _images(tmp_path / "cache")
    build_image([Path(yml)], formats=["kernel+initrd"], arch="amd64", out_dir=tmp_path / "out",
                cache=tmp_path / "cache", compression="zstd")
    assert (tmp_path / "out" / "img-initrd.img").read_bytes()[:4] == b"\x28\xb5\x2f\xfd"


def test_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    yml = Path(_images(tmp_path / "cache"))
    yml.write_text(yml.read_text() + "  - path: etc/missing\n    source: does-not-exist\n")
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="does-not-exist"):
        build_image([yml], formats=["tar", "kernel+initrd"], arch="amd64", out_dir=out, cache=tmp_path / "cache")
    assert not out.exists() or list(out.iterdir()) == []


def test_unpinned_and_unsupported_are_refused_before_work(tmp_path: Path) -> None:
    yml = tmp_path / "x.yml"
    yml.write_text("init:\n  - 127.0.0.1:5000/x/init:latest\n")
    with pytest.raises(UsageError, match="not pinned"):
        build_image([yml], formats=["tar"], arch="amd64", out_dir=tmp_path / "out", cache=tmp_path / "cache")
    with pytest.raises(UsageError, match="not supported for s390x"):
        build_image([yml], formats=["iso-bios"], arch="s390x", out_dir=tmp_path / "out", cache=tmp_path / "cache")
    with pytest.raises(UsageError, match="unknown output format"):
        build_image([yml], formats=["floppy"], arch="amd64", out_dir=tmp_path / "out", cache=tmp_path / "cache")
    assert not (tmp_path / "out").exists()


def test_missing_image_is_a_clear_error(tmp_path: Path) -> None:
    yml = tmp_path / "x.yml"
    yml.write_text("init:\n  - 127.0.0.1:5000/x/init@sha256:" + "0" * 64 + "\n")
    with pytest.raises(PkgtoolError, match="not in the cache"):
        build_image([yml], formats=["tar"], arch="amd64", out_dir=tmp_path / "out", cache=tmp_path / "cache")


def test_hostile_layer_names_the_image(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "cache")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        info = tarfile.TarInfo("../escape")
        tf.addfile(info, io.BytesIO(b""))
    bad = imagekit.store_image(layout, f"{REPO}/bad", [gzip.compress(raw.getvalue(), mtime=0)], arch="amd64")
    yml = tmp_path / "x.yml"
    yml.write_text(f"init:\n  - {bad}\n")
    with pytest.raises(PkgtoolError, match=r"bad@sha256.*'\.\.'"):
        build_image([yml], formats=["tar"], arch="amd64", out_dir=tmp_path / "out", cache=tmp_path / "cache")


def test_wrong_arch_is_refused(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "cache")
    ref = imagekit.store_image(layout, f"{REPO}/arm", [imagekit.layer_tar([("a", "file", b"", 0o644)])], arch="arm64")
    yml = tmp_path / "x.yml"
    yml.write_text(f"init:\n  - {ref}\n")
    with pytest.raises(PkgtoolError, match="no image for linux/amd64"):
        build_image([yml], formats=["tar"], arch="amd64", out_dir=tmp_path / "out", cache=tmp_path / "cache")


def test_a_warm_pinned_build_reads_only_the_cache_and_imports_no_http(tmp_path: Path) -> None:
    """The whole CLI path of a cached build: no registry client is made, so neither requests
    nor any other network library is imported (the registry address here does not exist)."""
    import subprocess

    yml = _images(tmp_path / "cache")
    code = (
        "import sys\n"
        "from pkgtool.cli import main\n"
        f"rc = main(['--cache-dir', {str(tmp_path / 'cache')!r}, 'image', 'build', {yml!r}, '--dir', "
        f"{str(tmp_path / 'out')!r}, '--registry', '192.0.2.1:9'])\n"
        "print('HEAVY', [m for m in ('requests', 'urllib3', 'grpc', 'docker', 'cryptography') if m in sys.modules])\n"
        "sys.exit(rc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "HEAVY []" in done.stdout
    assert (tmp_path / "out" / "img-initrd.img").is_file()


@pytest.mark.parametrize("where", ["a-file", "/proc/self/no-such/out"])
def test_an_unusable_output_directory_is_one_line_before_any_work(tmp_path: Path, where: str) -> None:
    yml = _images(tmp_path / "cache")
    out = tmp_path / where if not where.startswith("/") else Path(where)
    if where == "a-file":
        out.write_text("not a directory")
    with pytest.raises(UsageError, match=rf"^--dir {out}: (exists and is not a directory|cannot write there \(.+\))$"):
        build_image([Path(yml)], formats=["tar"], arch="amd64", out_dir=out, cache=tmp_path / "cache")
    assert not [p for p in tmp_path.rglob(".pkgtool-tmp-*") if p.is_dir()]
