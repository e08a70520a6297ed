"""newc cpio and tar writers: byte-level format, GNU cpio/tar agreement, determinism."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from pkgtool.assemble.cpio import compressor, source_date_epoch, write_cpio
from pkgtool.assemble.files import ensure_console
from pkgtool.assemble.tarwriter import write_tar
from pkgtool.errors import UsageError
from pkgtool.oci.filetree import BytesContent, Inode, Kind, Tree

EPOCH = 1_700_000_000


def read_newc(data: bytes) -> list[dict[str, object]]:
    """A minimal independent newc parser: every header field, name and data."""
    out: list[dict[str, object]] = []
    pos = 0
    names = ("ino", "mode", "uid", "gid", "nlink", "mtime", "size", "devmajor", "devminor", "rdevmajor", "rdevminor", "namesize", "check")
    while True:
        assert data[pos:pos + 6] == b"070701", f"bad magic at {pos}"
        fields = {k: int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i, k in enumerate(names)}
        pos += 110
        name = data[pos:pos + fields["namesize"] - 1].decode()
        assert data[pos + fields["namesize"] - 1] == 0
        pos += fields["namesize"]
        pos += -pos % 4
        body = data[pos:pos + fields["size"]]
        pos += fields["size"]
        pos += -pos % 4
        out.append({**fields, "name": name, "data": body})
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out


def sample_tree() -> Tree:
    tree = Tree()
    tree.put("bin", Inode(Kind.DIR, mode=0o755))
    busybox = Inode(Kind.FILE, mode=0o755, content=BytesContent(b"#!busybox\n" * 3))
    tree.put("bin/busybox", busybox)
    tree.put("bin/sh", busybox)  # hard link
    tree.put("usr/bin/env", busybox)  # hard link in another dir
    tree.put("init", Inode(Kind.SYMLINK, linkname="bin/busybox"))
    tree.put("etc/passwd", Inode(Kind.FILE, mode=0o644, uid=0, gid=0, content=BytesContent(b"root:x:0:0::/:/bin/sh\n")))
    tree.put("etc/shadow", Inode(Kind.FILE, mode=0o600, uid=0, gid=42, mtime=5, content=BytesContent(b"x")))
    tree.put("etc/empty", Inode(Kind.FILE, mode=0o644))
    tree.put("tmp", Inode(Kind.DIR, mode=0o1777))
    tree.put("usr/bin/sudo", Inode(Kind.FILE, mode=0o4755, content=BytesContent(b"s" * 5)))
    return tree


def cpio_bytes(tree: Tree, *, devices: bool = True) -> bytes:
    if devices:
        ensure_console(tree)
        tree.put("dev/sda", Inode(Kind.BLOCK, mode=0o660, gid=6, devmajor=8, devminor=0))
    buf = io.BytesIO()
    written = write_cpio(tree, buf, mtime=EPOCH)
    assert written == len(buf.getvalue())
    return buf.getvalue()


def test_newc_bytes() -> None:
    with sample_tree() as tree:
        entries = read_newc(cpio_bytes(tree))
    by_name = {e["name"]: e for e in entries}
    order = [e["name"] for e in entries]
    assert order == [
        "bin", "bin/busybox", "bin/sh", "dev", "dev/console", "dev/sda", "etc", "etc/empty", "etc/passwd",
        "etc/shadow", "init", "tmp", "usr", "usr/bin", "usr/bin/env", "usr/bin/sudo", "TRAILER!!!",
    ]
    inos = [e["ino"] for e in entries[:-1]]
    assert inos[:3] == [1, 2, 2]  # numbered in order; hard links share the first number
    assert all(e["mtime"] == EPOCH for e in entries[:-1])
    # Hard-link group: nlink 3, data only on the last link (GNU newc convention).
    group = [by_name[n] for n in ("bin/busybox", "bin/sh", "usr/bin/env")]
    assert {e["ino"] for e in group} == {2} and all(e["nlink"] == 3 for e in group)
    assert [e["size"] for e in group] == [0, 0, 30] and group[2]["data"] == b"#!busybox\n" * 3
    console = by_name["dev/console"]
    assert stat.S_ISCHR(console["mode"]) and (console["rdevmajor"], console["rdevminor"]) == (5, 1)  # type: ignore[arg-type]
    sda = by_name["dev/sda"]
    assert stat.S_ISBLK(sda["mode"]) and (sda["rdevmajor"], sda["gid"]) == (8, 6)  # type: ignore[arg-type]
    init = by_name["init"]
    assert stat.S_ISLNK(init["mode"]) and init["data"] == b"bin/busybox"  # type: ignore[arg-type]
    assert by_name["usr/bin/sudo"]["mode"] == stat.S_IFREG | 0o4755
    assert by_name["tmp"]["mode"] == stat.S_IFDIR | 0o1777
    assert by_name["usr"]["nlink"] == 3 and by_name["etc/passwd"]["nlink"] == 1
    assert by_name["etc/shadow"]["gid"] == 42
    trailer = entries[-1]
    assert trailer["nlink"] == 1 and trailer["ino"] == 0 and trailer["size"] == 0


def test_gnu_cpio_extracts_what_we_wrote(tmp_path: Path) -> None:
    if not shutil.which("cpio"):
        pytest.skip("GNU cpio not installed")
    with sample_tree() as tree:
        data = cpio_bytes(tree, devices=False)
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--no-absolute-filenames", "--quiet"], input=data, cwd=out, check=True)
    assert (out / "etc/passwd").read_bytes() == b"root:x:0:0::/:/bin/sh\n"
    assert (out / "bin/busybox").read_bytes() == b"#!busybox\n" * 3
    bb = (out / "bin/busybox").stat()
    assert bb.st_nlink == 3 and (out / "usr/bin/env").stat().st_ino == bb.st_ino
    assert os.readlink(out / "init") == "bin/busybox"
    assert (out / "etc/empty").read_bytes() == b""
    assert stat.S_IMODE((out / "tmp").stat().st_mode) == 0o1777
    assert int((out / "etc/passwd").stat().st_mtime) == EPOCH


def test_gnu_cpio_lists_device_nodes() -> None:
    if not shutil.which("cpio"):
        pytest.skip("GNU cpio not installed")
    with sample_tree() as tree:
        data = cpio_bytes(tree)
    # Listing only: extracting device nodes would create them on this host.
    listing = subprocess.run(["cpio", "-tv", "--quiet"], input=data, capture_output=True, check=True).stdout.decode()
    console = next(line for line in listing.splitlines() if line.endswith("dev/console"))
    assert console.split()[0] == "crw-------" and "5,   1" in console
    assert any(line.startswith("lrwxrwxrwx") and line.endswith("init -> bin/busybox") for line in listing.splitlines())


def test_cpio_is_deterministic_and_gzip_too() -> None:
    def build() -> tuple[bytes, bytes, bytes]:
        with sample_tree() as tree:
            raw = cpio_bytes(tree)
            gz, zst = io.BytesIO(), io.BytesIO()
            with compressor(gz, "gzip") as stream:
                write_cpio(tree, stream, mtime=EPOCH)
            with compressor(zst, "zstd") as stream:
                write_cpio(tree, stream, mtime=EPOCH)
        return raw, gz.getvalue(), zst.getvalue()

    first, second = build(), build()
    assert [hashlib.sha256(b).digest() for b in first] == [hashlib.sha256(b).digest() for b in second]
    raw, gz, zst = first
    assert gz[4:8] == b"\x00\x00\x00\x00"  # gzip header mtime is zero
    assert gzip.decompress(gz) == raw
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(zst)).read() == raw
    with pytest.raises(UsageError), compressor(io.BytesIO(), "lzma"):
        pass


def test_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert source_date_epoch() == 0 and source_date_epoch(7) == 7
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234")
    assert source_date_epoch() == 1234
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(UsageError):
        source_date_epoch()


def test_tar_writer_round_trip_and_determinism() -> None:
    def build() -> bytes:
        with sample_tree() as tree:
            ensure_console(tree)
            tree.put("bin/ping", Inode(Kind.FILE, mode=0o755, xattrs={"security.capability": b"\x01\x00\xff"}, content=BytesContent(b"p")))
            buf = io.BytesIO()
            write_tar(tree, buf, mtime=EPOCH)
            return buf.getvalue()

    data = build()
    assert data == build()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = {m.name: m for m in tf.getmembers()}
        assert members["bin/busybox"].isreg() and members["bin/sh"].islnk() and members["bin/sh"].linkname == "bin/busybox"
        assert members["dev/console"].ischr() and (members["dev/console"].devmajor, members["dev/console"].devminor) == (5, 1)
        assert members["init"].issym() and members["usr/bin/sudo"].mode == 0o4755
        assert all(m.mtime == EPOCH and m.uname == "" for m in members.values())
        assert members["bin/ping"].pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == b"\x01\x00\xff"
        reader = tf.extractfile("etc/passwd")
        assert reader is not None and reader.read() == b"root:x:0:0::/:/bin/sh\n"
    if shutil.which("tar"):
        listing = subprocess.run(["tar", "-tvf", "-"], input=data, capture_output=True, check=True).stdout.decode()
        assert "bin/sh link to bin/busybox" in listing
