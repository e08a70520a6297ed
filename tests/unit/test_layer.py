"""The Layer: compression sniffing, digest and diff_id checks, entries with whiteouts marked,
hard links, and hostile input (pkgtool.oci.layer, applied by pkgtool.oci.filetree)."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import zstandard
from ocikit import REF, MemorySource, make_layer

from pkgtool.errors import PkgtoolError
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.filetree import FileRange, Kind, Tree
from pkgtool.oci.layer import Layer, LayerError, finite_mtime, sniff
from pkgtool.oci.layout import Layout


def tar(*members: tarfile.TarInfo | tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tf.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def hardlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.LNKTYPE, target
    return info


def diff_id(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


PLAIN = tar(("etc/hostname", b"box\n"), ("usr/bin/x", b"\x7fELF" * 100))


@pytest.mark.parametrize("compress", [
    lambda d: d,
    lambda d: gzip.compress(d, mtime=0),
    lambda d: zstandard.ZstdCompressor().compress(d),
    # Several gzip members and several zstd frames, as parallel compressors write them.
    lambda d: gzip.compress(d[:1000], mtime=0) + gzip.compress(d[1000:], mtime=0),
    lambda d: zstandard.ZstdCompressor().compress(d[:1000]) + zstandard.ZstdCompressor().compress(d[1000:]),
], ids=["plain", "gzip", "zstd", "gzip-members", "zstd-frames"])
def test_every_compression_is_sniffed_and_the_diff_id_holds(compress: object) -> None:
    data = compress(PLAIN)  # type: ignore[operator]
    layer = make_layer(data, diff_id=diff_id(PLAIN))
    with layer.uncompressed() as stream:
        assert stream.read() == PLAIN
    assert [e.path for e in layer.entries()] == ["etc/hostname", "usr/bin/x"]


def test_sniff_goes_by_the_bytes_not_the_media_type() -> None:
    assert (sniff(b"\x1f\x8b\x08\x00"), sniff(b"\x28\xb5\x2f\xfd"), sniff(b"etc/")) == ("gzip", "zstd", "none")
    source = MemorySource()
    mislabelled = source.add(gzip.compress(PLAIN), mediatypes.OCI_LAYER)  # says plain, is gzip
    assert [e.path for e in Layer(mislabelled, source, REF).entries()] == ["etc/hostname", "usr/bin/x"]


def test_a_diff_id_mismatch_names_the_image_and_the_layer() -> None:
    layer = make_layer(gzip.compress(PLAIN), what="org/app@sha256:abc: layer 2", diff_id="sha256:" + "0" * 64)
    with pytest.raises(LayerError, match=r"^org/app@sha256:abc: layer 2 \(sha256:\w+\): uncompressed content "
                                         r"hashes to sha256:\w+, not the diff_id sha256:0{64}"):
        list(layer.entries())


def test_a_blob_that_does_not_match_its_digest_fails_at_the_end() -> None:
    source = MemorySource()
    layer = make_layer(PLAIN, source=source)
    source.corrupt[layer.descriptor.digest] = PLAIN.replace(b"box", b"bad")
    with pytest.raises(PkgtoolError, match="hashes to"):
        list(layer.entries())


def test_whiteouts_and_opaque_markers_are_marked() -> None:
    layer = make_layer(tar(("a/.wh.gone", b""), ("b/.wh..wh..opq", b""), (".wh.top", b""), ("c/keep", b"k")))
    marks = [(e.path, e.whiteout, e.opaque) for e in layer.entries()]
    assert marks == [("a/.wh.gone", "a/gone", None), ("b/.wh..wh..opq", None, "b"),
                     (".wh.top", "top", None), ("c/keep", None, None)]


def test_whiteouts_hide_only_lower_layers_in_the_tree() -> None:
    lower = make_layer(tar(("a/gone", b"1"), ("a/kept", b"2"), ("b/old", b"3")), what="img: layer 1")
    upper = make_layer(tar(("a/.wh.gone", b""), ("b/.wh..wh..opq", b""), ("b/new", b"4"), ("a/gone", b"5")),
                       what="img: layer 2")
    with Tree() as tree:
        tree.apply_layer(lower, number=1)
        tree.apply_layer(upper, number=2)
        # The same layer's a/gone survives its whiteout; b's lower content is gone, b/new stays.
        assert [p for p, _, _ in tree.walk()] == ["a", "a/gone", "a/kept", "b", "b/new"]
        assert tree.read("a/gone") == b"5"


def test_hard_links_share_one_inode_across_layers() -> None:
    with Tree() as tree:
        tree.apply_layer(make_layer(tar(("bin/busybox", b"BB"), hardlink("bin/sh", "bin/busybox"))), number=1)
        tree.apply_layer(make_layer(tar(hardlink("sbin/init", "bin/busybox"))), number=2)
        inodes = {p: i for p, i, _ in tree.walk()}
        assert inodes["bin/sh"] is inodes["bin/busybox"] is inodes["sbin/init"]
        assert [n for p, _, n in tree.walk() if p == "bin/sh"] == [3]
        with pytest.raises(PkgtoolError, match="not in the image"):
            tree.apply_layer(make_layer(tar(hardlink("x", "nowhere")), what="img: layer 3"), number=3)


def test_an_uncompressed_cached_layer_is_read_in_place(tmp_path: Path) -> None:
    layout = Layout(tmp_path / "cache")
    layout.ensure()
    layout.write_blob(PLAIN)
    layout.write_blob(gzip.compress(PLAIN, mtime=0))
    plain = Layer(Descriptor.for_bytes(mediatypes.OCI_LAYER, PLAIN), layout, REF)
    packed = Layer(Descriptor.for_bytes(mediatypes.OCI_LAYER_GZIP, gzip.compress(PLAIN, mtime=0)), layout, REF)
    assert plain.local_tar() == layout.blob_path(plain.descriptor.digest) and packed.local_tar() is None
    with Tree() as tree:
        tree.apply_layer(plain, number=1)
        inode = tree.get("usr/bin/x")
        assert inode is not None and isinstance(inode.content, FileRange)
        assert tree.read("usr/bin/x") == b"\x7fELF" * 100


def test_of_image_pairs_layers_with_diff_ids_and_refuses_a_mismatch() -> None:
    source = MemorySource()
    one = source.add(PLAIN)
    (layer,) = Layer.of_image(source, REF, [one], {"rootfs": {"diff_ids": [diff_id(PLAIN)]}}, image="img")
    assert (layer.diff_id, layer.what) == (diff_id(PLAIN), "img: layer 1")
    with pytest.raises(LayerError, match="lists 2 diff_ids for 1 layers"):
        Layer.of_image(source, REF, [one], {"rootfs": {"diff_ids": [diff_id(PLAIN)] * 2}}, image="img")
    with pytest.raises(LayerError, match=r"no rootfs\.diff_ids"):
        Layer.of_image(source, REF, [one], {"rootfs": {}}, image="img")
    weird = source.add(b"x", "application/octet-stream")
    with pytest.raises(LayerError, match="unsupported media type"):
        Layer.of_image(source, REF, [weird], None, image="img")


@pytest.mark.parametrize(("mtime", "expected"), [
    ("nan", 0), ("inf", 0), ("-inf", 0), ("1e300", 2**63 - 1), ("-1e300", -(2**63 - 1)), ("1700000000.7", 1700000000),
])
def test_absurd_pax_mtimes_become_finite(mtime: str, expected: int) -> None:
    assert finite_mtime(float(mtime)) == expected
    info = tarfile.TarInfo("f")
    info.size = 1
    info.pax_headers = {"mtime": mtime}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.addfile(info, io.BytesIO(b"x"))
    (entry,) = make_layer(buf.getvalue()).entries()
    assert entry.mtime == expected


def test_a_path_thousands_of_directories_deep_is_refused_cleanly() -> None:
    deep = "/".join(["d"] * 5000) + "/f"
    with pytest.raises(LayerError, match=r"img: layer 1: entry .*path longer than 4096 bytes"):
        list(make_layer(tar((deep, b"x"))).entries())


def test_a_tree_as_deep_as_paths_allow_walks_without_recursion() -> None:
    deep = "/".join(["d"] * 2040) + "/f"  # under PATH_MAX, past Python's recursion limit
    with Tree() as tree:
        tree.apply_layer(make_layer(tar((deep, b"x"))), number=1)
        paths = [p for p, _, _ in tree.walk()]
        assert len(paths) == 2041 and paths[-1] == deep
        tree.apply_layer(make_layer(tar(("d/.wh..wh..opq", b""))), number=2)
        assert [p for p, i, _ in tree.walk()] == ["d"] and tree.get("d").kind is Kind.DIR  # type: ignore[union-attr]


def _with_size_field(data: bytes, member: int, field: bytes) -> bytes:
    """``data`` with the 12-byte size field of the ``member``-th header (0-based, one 512-byte
    data block each) replaced and the header checksum recomputed."""
    start = member * 1024
    header = bytearray(data[start:start + 512])
    header[124:136] = field
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return data[:start] + bytes(header) + data[start + 512:]


def test_a_negative_size_in_a_header_is_one_line_not_a_seek_backwards() -> None:
    plain = tar(("a", b"x" * 100), ("b", b"y" * 100))
    # Base-256 size field: the high bit set, then a big-endian two's complement: -4096 bytes.
    hostile = _with_size_field(plain, 0, b"\xff" * 10 + (-4096 & 0xFFFF).to_bytes(2, "big"))
    with pytest.raises(LayerError, match=r"img: layer 1: not a readable tar layer"):
        list(make_layer(hostile).entries())


def test_entries_are_read_in_one_pass_and_a_hard_link_has_no_data_of_its_own() -> None:
    entries = list(make_layer(tar(("a", b"x" * 3000), hardlink("b", "a"), ("c", b"z" * 10))).entries())
    assert [e.path for e in entries] == ["a", "b", "c"]
    with pytest.raises(LayerError, match=r"'b'.*not a regular file"):
        entries[1].open()
    # Skipping a file's data (never opened) is a forward seek of the one-pass stream.
    with Tree() as tree:
        tree.apply_layer(make_layer(tar(("a", b"x" * 3000), ("c", b"z" * 10))), number=1)
        assert tree.read("c") == b"z" * 10 and tree.read("a") == b"x" * 3000
