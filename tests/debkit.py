"""Synthetic Debian packages for the kernel tests: an ar archive of xz tars, built in memory."""

from __future__ import annotations

import io
import lzma
import tarfile

from pkgtool.kernel import arfile

Entry = tarfile.TarInfo | tuple[str, bytes]


def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    """An ar archive (the .deb container) holding ``members`` in order."""
    out = bytearray(arfile.MAGIC)
    for name, data in members:
        header = f"{name:<16}{0:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}".encode() + b"`\n"
        out += header + data + (b"\n" if len(data) % 2 else b"")
    return bytes(out)


def tar_bytes(entries: list[Entry], *, xz: bool = True) -> bytes:
    """A tar of ``entries`` (TarInfo as given, or (name, content) regular files, mode 0644)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tf.addfile(entry)
            else:
                info = tarfile.TarInfo(entry[0])
                info.size = len(entry[1])
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(entry[1]))
    return lzma.compress(buf.getvalue(), format=lzma.FORMAT_XZ) if xz else buf.getvalue()


def deb_bytes(data: list[Entry]) -> bytes:
    """A .deb whose data.tar.xz holds ``data`` (the control part is a placeholder)."""
    return ar_archive([("debian-binary", b"2.0\n"), ("control.tar.xz", b"x"), ("data.tar.xz", tar_bytes(data))])
