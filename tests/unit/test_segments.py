"""The initrd as cached segments (pkgtool.assemble.segments), from images in a cache layout:
warm rebuilds reuse every segment and give the same bytes, a changed service recompresses
only its own, damaged segments are rebuilt, and unpacking the segments in order gives the
same file system as the whole tree (what `tar` holds)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import zlib
from pathlib import Path

import imagekit
import pytest

from pkgtool.assemble.image_build import build_image
from pkgtool.oci import layout_gc
from pkgtool.oci.layout import Layout

REPO = "127.0.0.1:5000/seg"


def _images(cache: Path, *, service: bytes = b"ELF", motd: str = "hi") -> Path:
    layout = Layout(cache)
    ktar = imagekit.layer_tar([("lib/modules/6.1/kernel/a.ko", "file", b"module", 0o644),
                               ("lib/modules/6.1/modules.dep", "file", b"", 0o644)])
    kernel = imagekit.store_image(layout, f"{REPO}/kernel", [imagekit.layer_tar([
        ("kernel", "file", b"KERNEL" * 100, 0o644), ("kernel.tar", "file", gzip.decompress(ktar), 0o644),
    ])], arch="amd64")
    init = imagekit.store_image(layout, f"{REPO}/init", [imagekit.layer_tar([
        ("lib", "symlink", "usr/lib", 0o777), ("usr/lib", "dir", None, 0o755), ("etc", "dir", None, 0o755),
        ("etc/hostname", "file", b"h", 0o644), ("init", "file", b"#!/bin/sh\n", 0o755),
        ("bin/busybox", "file", b"BB", 0o755), ("bin/sh", "link", "bin/busybox", 0o755),
    ])], arch="amd64")
    base = [("etc/passwd", "file", b"root:x:0:0::/:/bin/sh\nsshd:x:22:22::/:/bin/false\n", 0o644)]
    svc = imagekit.store_image(layout, f"{REPO}/svc", [imagekit.layer_tar([*base, ("bin/sshd", "file", service, 0o755)])],
                               arch="amd64", config={"Cmd": ["/bin/sshd"]})
    tool = imagekit.store_image(layout, f"{REPO}/tool", [imagekit.layer_tar([*base, ("bin/tool", "file", b"T", 0o755)])],
                                arch="amd64", config={"Cmd": ["/bin/tool"]})
    yml = cache.parent / "img.yml"
    yml.write_text(
        f"kernel:\n  image: {kernel}\n  cmdline: console=ttyS0\n"
        f"init:\n  - {init}\n"
        f"onboot:\n  - name: one\n    image: {tool}\n  - name: two\n    image: {tool}\n    readonly: true\n"
        f"services:\n  - name: sshd\n    image: {svc}\n    uid: sshd\n"
        f"files:\n  - path: etc/motd\n    contents: {motd}\n    mode: \"0600\"\n"
        "  - path: var/lib/state/conf\n    contents: x\n"
    )
    return yml


def _build(yml: Path, cache: Path, out: Path, formats: list[str] | None = None) -> list[str]:
    said: list[str] = []
    build_image([yml], formats=formats or ["kernel+initrd"], arch="amd64", out_dir=out, cache=cache,
                progress=said.append)
    return said


def _compressed(said: list[str]) -> list[str]:
    return [m.removeprefix("compressing ").split("@")[0] for m in said if m.startswith("compressing ")]


def members(data: bytes) -> list[bytes]:
    """The uncompressed cpio archives of a concatenated gzip initrd, in order."""
    out = []
    while data:
        dec = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        out.append(dec.decompress(data))
        data = dec.unused_data
    return out


def test_a_warm_build_reuses_every_segment_and_gives_the_same_bytes(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    yml = _images(cache)
    cold = _build(yml, cache, tmp_path / "cold")
    assert _compressed(cold) == [f"init {REPO}/init", f"kernel modules {REPO}/kernel", "onboot one", "onboot two",
                                 "services sshd"]
    warm = _build(yml, cache, tmp_path / "warm")
    assert _compressed(warm) == [] and not any(m.startswith("kernel ") for m in warm)  # nothing read, nothing packed
    initrd = (tmp_path / "cold" / "img-initrd.img").read_bytes()
    assert (tmp_path / "warm" / "img-initrd.img").read_bytes() == initrd
    assert (tmp_path / "warm" / "img-kernel").read_bytes() == b"KERNEL" * 100
    assert len(members(initrd)) == 6  # init, modules, three bundles, files + console


def test_one_changed_service_recompresses_only_its_segment(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _build(_images(cache), cache, tmp_path / "first")
    changed = _images(cache, service=b"ELF v2")
    assert _compressed(_build(changed, cache, tmp_path / "second")) == ["services sshd"]
    fresh = tmp_path / "fresh"
    _build(_images(fresh / "cache", service=b"ELF v2"), fresh / "cache", fresh / "out")
    assert (tmp_path / "second" / "img-initrd.img").read_bytes() == (fresh / "out" / "img-initrd.img").read_bytes()


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_a_damaged_segment_is_rebuilt_never_used(tmp_path: Path, damage: str) -> None:
    cache = tmp_path / "cache"
    yml = _images(cache)
    _build(yml, cache, tmp_path / "first")
    layout = Layout(cache)
    segment = next(d for name, d in layout.list_refs() if name.startswith("pkgtool-initrd-segment/")
                   and "onboot one" in json.dumps(layout.manifest_at(d).document))
    blob = layout.blob_path(layout.manifest_at(segment).layers[0].digest)
    blob.chmod(0o644)
    data = blob.read_bytes()
    if damage == "flip":
        blob.write_bytes(data[:10] + bytes([data[10] ^ 1]) + data[11:])
    elif damage == "truncate":
        blob.write_bytes(data[: len(data) // 2])
    else:
        blob.unlink()
    said = _build(yml, cache, tmp_path / "again")
    assert _compressed(said) == ["onboot one"]
    assert (tmp_path / "again" / "img-initrd.img").read_bytes() == (tmp_path / "first" / "img-initrd.img").read_bytes()


def _extract_segments(initrd: bytes, root: Path) -> None:
    """Unpack each archive over the previous ones, as the kernel does."""
    root.mkdir()
    for archive in members(initrd):
        subprocess.run(["cpio", "-idmu", "--quiet", "--no-absolute-filenames"], input=archive, cwd=root,
                       check=True, capture_output=True)


def _listing(root: Path) -> dict[str, tuple[int, str]]:
    out: dict[str, tuple[int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = str(path.relative_to(root))
            what = os.readlink(path) if path.is_symlink() else path.read_bytes().hex() if path.is_file() else "dir"
            out[rel] = (st.st_mode, what)
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="extracting device nodes and owners needs root")
def test_the_segments_unpack_to_the_whole_tree(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    yml = _images(cache)
    _build(yml, cache, tmp_path / "out", formats=["kernel+initrd", "tar"])
    _extract_segments((tmp_path / "out" / "img-initrd.img").read_bytes(), tmp_path / "initrd")
    whole = tmp_path / "whole"
    whole.mkdir()
    subprocess.run(["tar", "-xpf", str(tmp_path / "out" / "img.tar"), "-C", str(whole), "--exclude", "./boot",
                    "--exclude", "boot"], check=True)
    assert _listing(tmp_path / "initrd") == _listing(whole)
    # The files: segment made /var/lib/state but left /etc as the init image has it (0755),
    # and the modules went through the init image's lib -> usr/lib symlink.
    assert (tmp_path / "initrd" / "etc").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "initrd" / "lib").is_symlink() and (tmp_path / "initrd" / "usr/lib/modules/6.1/kernel/a.ko").is_file()


def test_segments_show_in_cache_ls_and_go_with_cache_clean(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _build(_images(cache), cache, tmp_path / "out")
    listed = subprocess.run(["python", "-m", "pkgtool", "--cache-dir", str(cache), "cache", "ls"],
                            capture_output=True, text=True, check=True).stdout
    assert listed.count("initrd-segment") == 5 and "kernel-files" in listed
    assert layout_gc.verify(Layout(cache)) == []
    subprocess.run(["python", "-m", "pkgtool", "--cache-dir", str(cache), "cache", "clean"], check=True,
                   capture_output=True)
    assert Layout(cache).list_refs() == []
