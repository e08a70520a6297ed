"""Normalized layer tars and deterministic compression (pkgtool.oci.normalize, pkgtool.oci.compress)."""

from __future__ import annotations

import gzip
import hashlib
import io
import random
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
import zstandard

from pkgtool.oci.compress import DeterministicCompressor, HashingWriter, compress_deterministic
from pkgtool.oci.layer import DEFAULT_LIMITS, LayerError, LayerLimits
from pkgtool.oci.normalize import NormalizedLayer, normalize_layer

EPOCH = 1_700_000_000
CAP = b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xfe"


@dataclass
class Item:
    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    linkname: str = ""
    major: int = 0
    minor: int = 0
    pax: dict[str, str] = field(default_factory=dict)


def make_tar(items: Iterable[Item], *, mtime: float = EPOCH - 100, uname: str = "builder",
             fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for item in items:
            info = tarfile.TarInfo(item.name)
            info.type, info.mode, info.uid, info.gid = item.type, item.mode, item.uid, item.gid
            info.mtime, info.uname, info.gname = mtime, uname, uname
            info.linkname = item.linkname
            info.devmajor, info.devminor = item.major, item.minor
            info.pax_headers = dict(item.pax)
            if item.type == tarfile.REGTYPE:
                info.size = len(item.data)
                tar.addfile(info, io.BytesIO(item.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def normalize(data: bytes, *, epoch: int = EPOCH, **kwargs: object) -> tuple[bytes, NormalizedLayer]:
    out = io.BytesIO()
    result = normalize_layer(io.BytesIO(data), out, source_date_epoch=epoch, **kwargs)  # type: ignore[arg-type]
    return out.getvalue(), result


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data), encoding="utf-8", errors="surrogateescape") as tar:
        return tar.getmembers()


def read(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        reader = tar.extractfile(name)
        assert reader is not None
        return reader.read()


TREE = [
    Item("usr/", tarfile.DIRTYPE, mode=0o755),
    Item("usr/bin/", tarfile.DIRTYPE, mode=0o755),
    Item("usr/bin/ping", data=b"\x7fELF ping", mode=0o4755,
         pax={"SCHILY.xattr.security.capability": CAP.decode("utf-8", "surrogateescape")}),
    Item("usr/bin/sh", tarfile.SYMTYPE, linkname="/bin/busybox", mode=0o777),
    Item("a", data=b"a"),
    Item("a-b", data=b"a-b"),
    Item("a.d/", tarfile.DIRTYPE),
    Item("a.d/x", data=b"x", uid=1000, gid=1000),
    Item("etc/", tarfile.DIRTYPE),
    Item("etc/.wh.old.conf", data=b""),
    Item("var/", tarfile.DIRTYPE),
    Item("var/lib/", tarfile.DIRTYPE),
    Item("var/lib/.wh..wh..opq", data=b""),
    Item("dev/", tarfile.DIRTYPE),
    Item("dev/console", tarfile.CHRTYPE, mode=0o600, major=5, minor=1),
    Item("dev/sda", tarfile.BLKTYPE, mode=0o660, major=8, minor=0),
    Item("run/", tarfile.DIRTYPE),
    Item("run/fifo", tarfile.FIFOTYPE),
]


def test_same_content_different_order_times_and_names_gives_identical_bytes() -> None:
    shuffled = TREE[:]
    random.Random(7).shuffle(shuffled)
    one, r1 = normalize(make_tar(TREE, mtime=EPOCH + 5000, uname="alice"))
    two, r2 = normalize(make_tar(shuffled, mtime=EPOCH + 99, uname="bob"))
    assert one == two
    assert r1 == r2
    assert r1.diff_id == "sha256:" + hashlib.sha256(one).hexdigest()
    assert r1.size == len(one)
    assert r1.entries == len(TREE)


def test_gnu_format_input_normalizes_like_pax() -> None:
    plain = [i for i in TREE if not i.pax]  # GNU format carries no xattrs
    assert normalize(make_tar(plain, fmt=tarfile.GNU_FORMAT))[0] == normalize(make_tar(plain))[0]


def test_order_is_component_wise_parents_first() -> None:
    out, _ = normalize(make_tar(TREE))
    names = [m.name for m in members(out)]
    assert names.index("a") < names.index("a-b") < names.index("a.d")
    assert names.index("a.d") < names.index("a.d/x") < names.index("dev")
    for i, name in enumerate(names):
        parent = name.rsplit("/", 1)[0] if "/" in name else None
        if parent is not None:
            assert parent in names[:i], f"{parent} must precede {name}"
    assert names == sorted(names, key=lambda n: n.encode().split(b"/"))


def test_mtime_clamped_names_dropped_ids_and_modes_kept() -> None:
    items = [Item("old", data=b"o"), Item("new", data=b"n", uid=33, gid=44, mode=0o2750)]
    out_old, _ = normalize(make_tar(items[:1], mtime=1_000_000))
    assert members(out_old)[0].mtime == 1_000_000  # older than the epoch: an input, kept
    out, _ = normalize(make_tar(items[1:], mtime=EPOCH + 12345.75))
    (new,) = members(out)
    assert new.mtime == EPOCH
    assert (new.uid, new.gid, new.mode) == (33, 44, 0o2750)
    assert new.uname == new.gname == ""


def test_pax_noise_dropped_xattrs_kept_byte_exact_and_sorted() -> None:
    item = Item("bin/ping", data=b"x", pax={
        "atime": "1700000123.5", "ctime": "1700000124.25", "comment": "hi",
        "SCHILY.xattr.user.z": "last",
        "SCHILY.xattr.security.capability": CAP.decode("utf-8", "surrogateescape"),
    })
    out, _ = normalize(make_tar([item]))
    (info,) = members(out)
    # hdrcharset=BINARY is how pax marks values that are not UTF-8 (the capability blob).
    assert list(info.pax_headers) == ["hdrcharset", "SCHILY.xattr.security.capability",
                                      "SCHILY.xattr.user.z"]
    assert info.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == CAP
    assert b"atime" not in out and b"ctime" not in out and b"comment" not in out


def test_libarchive_xattrs_are_converted() -> None:
    import base64

    pax = {"LIBARCHIVE.xattr.security.capability": base64.b64encode(CAP).decode()}
    out, _ = normalize(make_tar([Item("bin/ping", data=b"x", pax=pax)]))
    (info,) = members(out)
    assert info.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == CAP


def test_whiteouts_and_opaque_markers_survive() -> None:
    out, _ = normalize(make_tar(TREE))
    by_name = {m.name: m for m in members(out)}
    assert by_name["etc/.wh.old.conf"].isreg()
    assert by_name["var/lib/.wh..wh..opq"].isreg()


def test_devices_fifos_and_symlinks_kept() -> None:
    out, _ = normalize(make_tar(TREE))
    by_name = {m.name: m for m in members(out)}
    assert by_name["dev/console"].ischr() and (by_name["dev/console"].devmajor, by_name["dev/console"].devminor) == (5, 1)
    assert by_name["dev/sda"].isblk() and by_name["dev/sda"].devmajor == 8
    assert by_name["run/fifo"].isfifo()
    assert by_name["usr/bin/sh"].issym() and by_name["usr/bin/sh"].linkname == "/bin/busybox"


def test_hardlink_before_its_target_swaps_roles() -> None:
    # "z/data" holds the bytes in the input, but "a/link" sorts first: it must become
    # the data holder and z/data a link to it, or extraction would fail.
    items = [Item("z/", tarfile.DIRTYPE), Item("z/data", data=b"payload", mode=0o755, uid=7),
             Item("a/", tarfile.DIRTYPE), Item("a/link", tarfile.LNKTYPE, linkname="z/data"),
             Item("m/link2", tarfile.LNKTYPE, linkname="a/link")]
    out, result = normalize(make_tar(items))
    by_name = {m.name: m for m in members(out)}
    assert by_name["a/link"].isreg() and by_name["a/link"].mode == 0o755 and by_name["a/link"].uid == 7
    assert read(out, "a/link") == b"payload"
    assert by_name["z/data"].islnk() and by_name["z/data"].linkname == "a/link"
    assert by_name["m/link2"].islnk() and by_name["m/link2"].linkname == "a/link"
    assert result.entries == 5
    # The same group stored the other way round normalizes to the same bytes.
    other = [Item("a/", tarfile.DIRTYPE), Item("a/link", data=b"payload", mode=0o755, uid=7),
             Item("z/", tarfile.DIRTYPE), Item("z/data", tarfile.LNKTYPE, linkname="a/link"),
             Item("m/link2", tarfile.LNKTYPE, linkname="z/data")]
    assert normalize(make_tar(other))[0] == out


@pytest.mark.parametrize(("items", "message"), [
    ([Item("/etc/passwd", data=b"x")], "absolute"),
    ([Item("../escape", data=b"x")], "'..'"),
    ([Item("a/../../b", data=b"x")], "'..'"),
    ([Item("link", tarfile.LNKTYPE, linkname="missing")], "not in the layer"),
    ([Item("d/", tarfile.DIRTYPE), Item("link", tarfile.LNKTYPE, linkname="d")], "directory"),
    ([Item("link", tarfile.LNKTYPE, linkname="../x")], "'..'"),
    ([Item("vol", b"V")], "unsupported tar entry type"),
])
def test_hostile_entries_are_refused(items: list[Item], message: str) -> None:
    with pytest.raises(LayerError, match=message):
        normalize(make_tar(items))


def test_long_and_unicode_names_round_trip() -> None:
    long_dir = "d" * 150 + "/"
    long_name = long_dir + "f" * 200
    odd = "späce and ünïcode/ファイル"
    items = [Item(long_dir, tarfile.DIRTYPE), Item(long_name, data=b"L"),
             Item("späce and ünïcode/", tarfile.DIRTYPE), Item(odd, data=b"U"),
             Item("ln", tarfile.SYMTYPE, linkname="t" * 300)]
    out, _ = normalize(make_tar(items))
    by_name = {m.name: m for m in members(out)}
    assert read(out, long_name) == b"L"
    assert read(out, odd) == b"U"
    assert by_name["ln"].linkname == "t" * 300


def test_dot_prefixes_and_root_entry_normalized() -> None:
    out, result = normalize(make_tar([Item("./", tarfile.DIRTYPE), Item("./etc/", tarfile.DIRTYPE),
                                      Item("./etc//hosts", data=b"h")]))
    assert [m.name for m in members(out)] == ["etc", "etc/hosts"]
    assert result.entries == 2
    assert out == normalize(make_tar([Item("etc/", tarfile.DIRTYPE), Item("etc/hosts", data=b"h")]))[0]


def test_empty_layer_reports_no_entries() -> None:
    _, result = normalize(b"\0" * 1024)
    assert result.entries == 0
    _, only_root = normalize(make_tar([Item("./", tarfile.DIRTYPE)]))
    assert only_root.entries == 0


def test_duplicate_paths_last_one_wins() -> None:
    out, result = normalize(make_tar([Item("f", data=b"first"), Item("g", data=b"g"), Item("f", data=b"second")]))
    assert [m.name for m in members(out)] == ["f", "g"]
    assert read(out, "f") == b"second"
    assert result.entries == 2


def test_compressed_and_non_seekable_input_accepted() -> None:
    raw = make_tar(TREE)
    expected, _ = normalize(raw)

    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
            chunk = self._data.read(min(len(buffer), 777))
            buffer[:len(chunk)] = chunk
            return len(chunk)

    for data in (gzip.compress(raw), zstandard.ZstdCompressor().compress(raw)):
        assert normalize(data)[0] == expected
    out = io.BytesIO()
    normalize_layer(Pipe(raw), out, source_date_epoch=EPOCH)  # type: ignore[arg-type]
    assert out.getvalue() == expected


def test_expected_diff_id_is_checked() -> None:
    raw = make_tar(TREE)
    good = "sha256:" + hashlib.sha256(raw).hexdigest()
    normalize(raw, expect_diff_id=good)
    normalize(gzip.compress(raw), expect_diff_id=good)
    with pytest.raises(LayerError, match="diff_id"):
        normalize(raw, expect_diff_id="sha256:" + "0" * 64)
    with pytest.raises(LayerError, match="diff_id"):
        normalize(gzip.compress(raw), expect_diff_id="sha256:" + "0" * 64)


def test_limits_are_enforced() -> None:
    raw = make_tar(TREE)
    with pytest.raises(LayerError, match="entries"):
        normalize(raw, limits=LayerLimits(max_entries=3))
    with pytest.raises(LayerError, match="uncompressed bytes"):
        normalize(gzip.compress(raw), limits=LayerLimits(max_bytes=1000))
    big_pax = make_tar([Item("f", data=b"x", pax={"comment": "c" * 5000})])
    with pytest.raises(LayerError, match="header extension"):
        normalize(big_pax, limits=LayerLimits(max_header_extension=4096))
    with pytest.raises(LayerError, match="longer than"):
        normalize(make_tar([Item("x" * 5000, data=b"")]))
    assert DEFAULT_LIMITS.max_path_bytes == 4096


def test_garbage_is_a_clear_error() -> None:
    with pytest.raises(LayerError, match="not a valid tar"):
        normalize(b"this is not a tar archive" * 40)
    with pytest.raises(LayerError, match="gzip"):
        normalize(gzip.compress(make_tar(TREE))[:-30])


def test_negative_epoch_refused() -> None:
    with pytest.raises(Exception, match="SOURCE_DATE_EPOCH"):
        normalize(make_tar(TREE), epoch=-1)


# --------------------------------------------------------------------------- compression

# Pseudo-random but fixed: compressible text mixed with incompressible noise, over
# several gzip blocks so the block seams and dictionaries are exercised.
PAYLOAD = b"".join(
    random.Random(i).randbytes(40_000) + (b"reproducible %d\n" % i) * 5000 for i in range(20)
)


def test_gzip_output_is_pinned_and_independent_of_workers() -> None:
    outputs = set()
    for workers in (1, 2, 5):
        out = io.BytesIO()
        digest, size = compress_deterministic(io.BytesIO(PAYLOAD), out, workers=workers)
        assert digest == "sha256:" + hashlib.sha256(out.getvalue()).hexdigest()
        assert size == len(out.getvalue())
        outputs.add(out.getvalue())
    (data,) = outputs
    assert gzip.decompress(data) == PAYLOAD
    # Header: deflate, no flags (no file name), mtime 0, OS "unknown".
    assert data[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    # Pinned bytes: a change here changes every layer digest pkgtool has ever pushed.
    assert hashlib.sha256(data).hexdigest() == PINNED_GZIP_SHA256


PINNED_GZIP_SHA256 = "b3714bd66b564b449de5225f3135267290e9308651e79fe1da8ccb683886389a"


def test_gzip_of_empty_and_small_input() -> None:
    for payload in (b"", b"x", PAYLOAD[: 1024 * 1024], PAYLOAD[: 1024 * 1024 + 1]):
        out = io.BytesIO()
        compress_deterministic(io.BytesIO(payload), out, workers=2)
        assert gzip.decompress(out.getvalue()) == payload


def test_zstd_output_independent_of_workers() -> None:
    outputs = set()
    for workers in (1, 3):
        out = io.BytesIO()
        compress_deterministic(io.BytesIO(PAYLOAD), out, compression="zstd", workers=workers)
        outputs.add(out.getvalue())
    (data,) = outputs
    assert zstandard.ZstdDecompressor().decompressobj().decompress(data) == PAYLOAD


def test_streaming_writer_chain_hashes_both_sides() -> None:
    raw = make_tar(TREE)
    compressed = HashingWriter(io.BytesIO())
    compressor = DeterministicCompressor(compressed, compression="gzip", workers=2)
    result = normalize_layer(io.BytesIO(raw), compressor, source_date_epoch=EPOCH)
    compressor.close()
    assert isinstance(compressed.inner, io.BytesIO)
    blob = compressed.inner.getvalue()
    assert compressed.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert result.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest()


def test_unknown_compression_refused() -> None:
    with pytest.raises(Exception, match="unknown layer compression"):
        DeterministicCompressor(io.BytesIO(), compression="xz")  # type: ignore[arg-type]


def test_big_file_streams_through() -> None:
    big = random.Random(1).randbytes(3 * 1024 * 1024)
    out, _ = normalize(make_tar([Item("big", data=big)]))
    assert read(out, "big") == big
