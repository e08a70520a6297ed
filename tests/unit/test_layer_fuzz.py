"""Generated hostile layers against the layer reader and the file tree: whatever the tar
headers, PAX records, link targets and whiteouts say, the outcome is the tree or a
PkgtoolError naming the layer, never another exception (a traceback for the user)."""

from __future__ import annotations

import contextlib
import gzip
import io
import tarfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ocikit import make_layer

from pkgtool.errors import PkgtoolError
from pkgtool.oci.filetree import Tree

_COMPONENT = st.sampled_from(["a", "b", "etc", "..", ".", "", ".wh.a", ".wh..wh..opq", ".wh.", "x" * 300, "é", "\udcff"])
NAMES = st.lists(_COMPONENT, min_size=1, max_size=6).map("/".join) | st.sampled_from(["/abs", "./", "/", "a//b"])
TYPES = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
                         tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, b"Z", b"x"])
PAX_VALUES = st.sampled_from(["nan", "inf", "-inf", "1e300", "-5", "1.5", "", "abc", "9" * 40, "0"])
PAX = st.dictionaries(
    st.sampled_from(["mtime", "atime", "uid", "gid", "uname", "SCHILY.xattr.user.x", "LIBARCHIVE.xattr.user.y",
                     "comment", "linkpath", "path"]),
    PAX_VALUES | NAMES, max_size=3)


@st.composite
def members(draw: st.DrawFn) -> tuple[str, bytes, str, dict[str, str], bytes, int]:
    return (draw(NAMES), draw(TYPES), draw(NAMES), draw(PAX), draw(st.binary(max_size=64)),
            draw(st.integers(min_value=-1, max_value=2**33)))


def _tar(entries: list[tuple[str, bytes, str, dict[str, str], bytes, int]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tf:
        for name, kind, target, pax, data, mtime in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            info.mtime = max(0, mtime)
            info.pax_headers = dict(pax)
            try:
                if kind in (tarfile.REGTYPE, tarfile.CONTTYPE):
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
                else:
                    tf.addfile(info)
            except (ValueError, tarfile.TarError, UnicodeError):
                continue  # not even tarfile can write it; nothing to feed the reader
    return buf.getvalue()


def _apply(*layers: bytes) -> None:
    with Tree() as tree:
        for number, data in enumerate(layers, start=1):
            tree.apply_layer(make_layer(data, what=f"fuzz: layer {number}"), number=number)
        for _path, inode, _nlink in tree.walk():
            if inode.content is not None and inode.kind.value == "file":
                for _chunk in inode.content.chunks():
                    pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(members(), max_size=8), min_size=1, max_size=3))
def test_generated_layers_give_a_tree_or_a_clean_error(layers: list[list[tuple[str, bytes, str, dict[str, str], bytes, int]]]) -> None:
    with contextlib.suppress(PkgtoolError):
        _apply(*[_tar(entries) for entries in layers])


@settings(max_examples=300, deadline=None)
@given(st.lists(members(), min_size=1, max_size=6), st.data())
def test_damaged_bytes_give_a_tree_or_a_clean_error(entries: list[tuple[str, bytes, str, dict[str, str], bytes, int]],
                                                   data: st.DataObject) -> None:
    raw = bytearray(_tar(entries))
    for _ in range(data.draw(st.integers(min_value=1, max_value=8))):
        raw[data.draw(st.integers(min_value=0, max_value=len(raw) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(min_value=0, max_value=len(raw)))
    damaged = bytes(raw[:cut])
    for blob in (damaged, gzip.compress(damaged, mtime=0)):
        with contextlib.suppress(PkgtoolError):
            _apply(blob)
