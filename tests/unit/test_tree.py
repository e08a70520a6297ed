"""The streamed image tree: whiteouts, hostile layers, hard links, files:, overlays."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest
import zstandard
from ocikit import REF, make_layer

from pkgtool.assemble.files import add_files, ensure_console
from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.filetree import (
    FileRange,
    Inode,
    Kind,
    SpillContent,
    Tree,
)
from pkgtool.oci.layer import Layer
from pkgtool.oci.layout import Layout
from pkgtool.spec.image import parse_image_spec
from pkgtool.yamlload import parse_yaml

Member = tuple[str, str, object]  # (name, kind, payload)


def layer(members: Sequence[Member], *, compress: str = "none") -> bytes:
    """A layer tar: kind is file (payload bytes), dir, symlink/link (payload target), chr, fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.mtime = 1000
            data = None
            if kind == "file":
                assert isinstance(payload, bytes)
                info.size, data = len(payload), io.BytesIO(payload)
                info.mode = 0o644
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind in ("symlink", "link"):
                info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
                info.linkname = str(payload)
            elif kind == "chr":
                info.type, info.devmajor, info.devminor, info.mode = tarfile.CHRTYPE, 1, 3, 0o666
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "xattr":
                info.size, data = 1, io.BytesIO(b"p")
                info.pax_headers = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
            tf.addfile(info, data)
    raw = buf.getvalue()
    if compress == "gzip":
        return gzip.compress(raw, mtime=0)
    if compress == "zstd":
        return zstandard.ZstdCompressor().compress(raw)
    return raw


def apply(tree: Tree, layers: Sequence[Sequence[Member]], *, image: str = "img", root: str = "") -> None:
    for i, members in enumerate(layers, start=1):
        tree.apply_layer(make_layer(layer(members), what=f"{image}: layer {i}"), number=i, root=root)


def paths(tree: Tree) -> list[str]:
    return [p for p, _, _ in tree.walk()]


@pytest.fixture
def tree() -> Tree:
    t = Tree()
    yield t  # type: ignore[misc]
    t.close()


def test_layers_stream_into_tree_with_metadata(tree: Tree) -> None:
    apply(tree, [[("./", "dir", None), ("./etc/", "dir", None), ("etc/hostname", "file", b"box\n"),
                  ("dev/null", "chr", None), ("run/fifo", "fifo", None), ("bin/ping", "xattr", None)]])
    assert paths(tree) == ["bin", "bin/ping", "dev", "dev/null", "etc", "etc/hostname", "run", "run/fifo"]
    assert tree.read("etc/hostname") == b"box\n"
    hostname = tree.get("etc/hostname")
    assert hostname is not None and hostname.mode == 0o644 and hostname.mtime == 1000
    assert isinstance(hostname.content, SpillContent)
    null = tree.get("dev/null")
    assert null is not None and (null.kind, null.devmajor, null.devminor) == (Kind.CHAR, 1, 3)
    fifo = tree.get("run/fifo")
    assert fifo is not None and fifo.kind is Kind.FIFO
    ping = tree.get("bin/ping")
    assert ping is not None and ping.xattrs == {"security.capability": b"\x01\x00\x00\x02"}


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_compressed_layers(tree: Tree, compress: str) -> None:
    big = bytes(range(256)) * 9000  # > 1 chunk
    tree.apply_layer(make_layer(layer([("a/big", "file", big)], compress=compress)), number=1)
    assert tree.read("a/big") == big


def test_uncompressed_blob_is_referenced_in_place(tree: Tree, tmp_path: Path) -> None:
    cache = Layout(tmp_path / "cache")
    cache.ensure()
    data = layer([("x", "file", b"in place"), ("y", "file", b"")])
    descriptor = Descriptor.for_bytes(mediatypes.OCI_LAYER, data)
    cache.write_blob(data)
    tree.apply_layer(Layer(descriptor, cache, REF, what="i: layer 1"), number=1)
    x = tree.get("x")
    assert x is not None and isinstance(x.content, FileRange) and tree.read("x") == b"in place"
    assert tree.read("y") == b""


def test_whiteout_deletes_file_and_directory(tree: Tree) -> None:
    apply(tree, [
        [("etc/a", "file", b"a"), ("etc/b", "file", b"b"), ("usr/share/doc/x", "file", b"x")],
        [("etc/.wh.a", "file", b""), ("usr/share/.wh.doc", "file", b"")],
    ])
    assert paths(tree) == ["etc", "etc/b", "usr", "usr/share"]


def test_whiteout_spares_same_layer_and_recreation_after_whiteout(tree: Tree) -> None:
    apply(tree, [
        [("etc/a", "file", b"old")],
        [("etc/a", "file", b"same-layer"), ("etc/.wh.a", "file", b"")],  # same layer: kept
        [("etc/.wh.a", "file", b"")],
        [("etc/a", "file", b"recreated")],
    ])
    assert tree.read("etc/a") == b"recreated"
    t2 = Tree()
    apply(t2, [[("d/x", "file", b"1")], [("d/.wh.x", "file", b""), ("d/x/", "dir", None), ("d/x/y", "file", b"2")]])
    assert paths(t2) == ["d", "d/x", "d/x/y"]
    t2.close()


def test_opaque_directory(tree: Tree) -> None:
    apply(tree, [
        [("opt/app/old1", "file", b"1"), ("opt/app/sub/old2", "file", b"2"), ("opt/keep", "file", b"k")],
        [("opt/app/new", "file", b"n"), ("opt/app/.wh..wh..opq", "file", b""), ("opt/app/sub/", "dir", None)],
    ])
    assert paths(tree) == ["opt", "opt/app", "opt/app/new", "opt/app/sub", "opt/keep"]


def test_whiteout_of_missing_path_is_harmless(tree: Tree) -> None:
    apply(tree, [[("a", "file", b"")], [("nope/.wh.x", "file", b""), (".wh.zzz", "file", b"")]])
    assert paths(tree) == ["a"]


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("../etc/passwd", "file", b"root::0:0")], r"with '\.\.'"),
        ([("a/../../etc/passwd", "file", b"x")], r"with '\.\.'"),
        ([("/abs", "file", b"x")], "absolute path"),
        ([("a", "symlink", "../../.."), ("a/x", "file", b"x")], "escapes the image root"),
        ([("d/", "dir", None), ("d/up", "symlink", "../.."), ("d/up/etc/shadow", "file", b"x")], "escapes"),
        ([("loop", "symlink", "loop"), ("loop/x", "file", b"x")], "too many levels"),
        ([("h", "link", "../../etc/shadow")], r"with '\.\.'"),
        ([("h", "link", "/etc/shadow")], "absolute"),
        ([("h", "link", "etc/missing")], "not in the image"),
        ([("d/", "dir", None), ("h", "link", "d")], "directory"),
        ([("f", "file", b"x"), ("f/g", "file", b"y")], "parent directory 'f' is a file"),
    ],
)
def test_hostile_layers_are_rejected(tree: Tree, members: list[Member], message: str) -> None:
    with pytest.raises(PkgtoolError, match=message) as err:
        apply(tree, [members], image="evil/img:1")
    assert "evil/img:1: layer 1: entry" in str(err.value)


def test_absolute_symlink_is_followed_inside_the_image_root(tree: Tree, tmp_path: Path) -> None:
    """b -> /etc then b/passwd lands in the container's own etc, never on the host."""
    root = "containers/onboot/000-x/rootfs"
    apply(tree, [[("etc/", "dir", None), ("b", "symlink", "/etc"), ("b/passwd", "file", b"mine")]], root=root)
    assert tree.read(f"{root}/etc/passwd") == b"mine"
    assert tree.get(f"{root}/b/passwd") is None
    assert tree.get("etc/passwd") is None  # not escaped to the image's /


def test_relative_symlink_within_root_is_followed(tree: Tree) -> None:
    apply(tree, [[("usr/lib/", "dir", None), ("lib", "symlink", "usr/lib"), ("lib/libc.so", "file", b"c")]])
    assert tree.read("usr/lib/libc.so") == b"c"


def test_device_nodes_are_never_created_on_the_host(tree: Tree, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    apply(tree, [[("dev/sda", "chr", None), ("dev/fifo", "fifo", None)]])
    assert list(tmp_path.iterdir()) == []
    assert tree.get("dev/sda") is not None


def test_hard_links_share_an_inode(tree: Tree) -> None:
    apply(tree, [[("bin/busybox", "file", b"BB"), ("bin/sh", "link", "bin/busybox"), ("./usr/bin/ls", "link", "./bin/busybox")]])
    entries = {p: (i, n) for p, i, n in tree.walk()}
    assert entries["bin/sh"][0] is entries["bin/busybox"][0] is entries["usr/bin/ls"][0]
    assert entries["bin/sh"][1] == 3
    assert entries["bin"][1] == 2 and entries["usr"][1] == 3  # dirs: 2 + subdirectories


def test_hard_link_survives_removal_of_its_target(tree: Tree) -> None:
    apply(tree, [[("a", "file", b"data"), ("b", "link", "a")], [(".wh.a", "file", b"")]])
    assert paths(tree) == ["b"] and tree.read("b") == b"data"
    assert next(n for p, _, n in tree.walk() if p == "b") == 1


def test_hard_links_are_scoped_to_the_image_root(tree: Tree) -> None:
    tree.put("etc/shadow", Inode(Kind.FILE))
    with pytest.raises(PkgtoolError, match="not in the image"):
        apply(tree, [[("x", "link", "etc/shadow")]], root="containers/services/s/rootfs")


def test_overlay_grafts_and_later_images_win(tree: Tree) -> None:
    first, second = Tree(store=tree.store), Tree(store=tree.store)
    apply(first, [[("usr/lib/", "dir", None), ("lib", "symlink", "usr/lib"), ("etc/os", "file", b"one"), ("etc/only1", "file", b"1")]])
    apply(second, [[("lib/", "dir", None), ("lib/modules/m.ko", "file", b"ko"), ("etc/os", "file", b"two")]])
    tree.overlay(first, at="")
    tree.overlay(second, at="")
    assert tree.read("etc/os") == b"two" and tree.read("etc/only1") == b"1"
    link = tree.get("lib")
    assert link is not None and link.kind is Kind.SYMLINK  # merged-/usr symlink kept
    assert tree.read("usr/lib/modules/m.ko") == b"ko"

    container = Tree(store=tree.store)
    apply(container, [[("bin/sh", "file", b"sh")]])
    tree.overlay(container, at="containers/onboot/000-a/rootfs")
    assert tree.read("containers/onboot/000-a/rootfs/bin/sh") == b"sh"
    later = Tree(store=tree.store)
    apply(later, [[("bin/sh", "file", b"new"), ("x", "file", b"x")]])
    tree.overlay(later, at="containers/onboot/000-a/rootfs")
    assert tree.read("containers/onboot/000-a/rootfs/bin/sh") == b"new"


def test_corrupt_layer_is_a_clean_error(tree: Tree) -> None:
    data = layer([("a", "file", b"x" * 5000)])
    with pytest.raises(PkgtoolError, match="img: layer 1"):
        tree.apply_layer(make_layer(data[:1500], what="img: layer 1"), number=1)
    with pytest.raises(PkgtoolError, match="img: layer 2"):
        tree.apply_layer(make_layer(gzip.compress(b"not a tar at all" * 100), what="img: layer 2"), number=2)


def _files(text: str, base: Path) -> tuple:  # type: ignore[type-arg]
    return parse_image_spec(parse_yaml(text, str(base / "t.yml")), base_dir=base).files


def test_files_section(tree: Tree, tmp_path: Path) -> None:
    (tmp_path / "key.pub").write_bytes(b"ssh-ed25519 AAA\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / "h.txt").write_text("from home")
    tree.put("etc", Inode(Kind.DIR, mode=0o755))
    files = _files(
        "files:\n"
        "  - {path: /root/.ssh/authorized_keys, source: key.pub, mode: '0600'}\n"
        "  - {path: etc/motd, contents: hi, mode: '0644', uid: app, gid: 7}\n"
        "  - {path: var/empty, directory: true}\n"
        "  - {path: etc/alias, symlink: motd}\n"
        "  - {path: etc/skip, source: missing.txt, optional: true}\n"
        "  - {path: etc/linuxkit.yml, metadata: yaml}\n"
        "  - {path: etc/h, source: ~/h.txt}\n",
        tmp_path,
    )
    add_files(tree, files, resolve_id=lambda v: 150 if v == "app" else int(v), metadata=lambda kind: f"meta:{kind}".encode(), home=home)
    assert tree.read("root/.ssh/authorized_keys") == b"ssh-ed25519 AAA\n"
    ssh = tree.get("root/.ssh")
    assert ssh is not None and ssh.mode == 0o700  # leading dirs: mode from the file + x bits
    etc = tree.get("etc")
    assert etc is not None and etc.mode == 0o755  # existing dirs keep their metadata
    motd = tree.get("etc/motd")
    assert motd is not None and (motd.mode, motd.uid, motd.gid) == (0o644, 150, 7)
    empty = tree.get("var/empty")
    assert empty is not None and empty.kind is Kind.DIR and empty.mode == 0o700
    alias = tree.get("etc/alias")
    assert alias is not None and alias.linkname == "motd"
    assert tree.get("etc/skip") is None
    assert tree.read("etc/linuxkit.yml") == b"meta:yaml"
    assert tree.read("etc/h") == b"from home"


def test_files_missing_source_is_an_error(tree: Tree, tmp_path: Path) -> None:
    files = _files("files:\n  - {path: etc/x, source: nope.txt}\n", tmp_path)
    with pytest.raises(UsageError, match=r"t.yml:2: files\[0\]: cannot read source .*nope.txt"):
        add_files(tree, files, resolve_id=int)


def test_files_cannot_escape(tree: Tree, tmp_path: Path) -> None:
    files = _files("files:\n  - {path: ../x, contents: y}\n", tmp_path)
    with pytest.raises(PkgtoolError, match=r"'\.\.'"):
        add_files(tree, files, resolve_id=int)


def test_ensure_console(tree: Tree) -> None:
    ensure_console(tree)
    console = tree.get("dev/console")
    assert console is not None and (console.kind, console.devmajor, console.devminor, console.mode) == (Kind.CHAR, 5, 1, 0o600)
