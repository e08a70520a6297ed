"""The form a kernel file is shipped in: as Debian builds it, or compressed (kernel.yml's
per-arch ``compress:``).

Why compress: Debian's arm64 kernel is a plain 33 MB ``Image``, the largest file of a small
image.  Gzip-compressed (``Image.gz``, as LinuxKit ships its arm64 kernels) it is 11 MB, and
every way pkgtool boots arm64 accepts that form: QEMU's ``-M virt -kernel`` unpacks a gzip'd
Image itself, and GRUB's ``linux`` command reads the file through its gzio filter (the
ISO and disk formats embed gzio) before handing it to the kernel's EFI stub.  An xz Image
would be smaller still, but QEMU's ``-kernel`` takes gzip only.

The bytes are reproducible: level 9, no file name, mtime 0 in the header.
"""

from __future__ import annotations

import gzip
import io

from pkgtool.errors import PkgtoolError

GZIP_MAGIC = b"\x1f\x8b"


def compressed(kernel: bytes, form: str) -> bytes:
    """``kernel`` in ``form``: ``""`` (unchanged) or ``"gzip"``."""
    if form == "":
        return kernel
    if form == "gzip":
        return gzip.compress(kernel, compresslevel=9, mtime=0)
    raise PkgtoolError(f"unknown kernel compression {form!r}")


def uncompressed(kernel: bytes, *, limit: int = 512 * 1024 * 1024) -> bytes:
    """The kernel image inside a gzip'd kernel file (anything else is returned as it is)."""
    if not kernel.startswith(GZIP_MAGIC):
        return kernel
    with gzip.GzipFile(fileobj=io.BytesIO(kernel)) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise PkgtoolError(f"gzip'd kernel unpacks to more than {limit} bytes")
    return data
