"""Read a few small files out of an image by streaming its layers (never extracting).

The SBOM needs the dpkg status files and copyright files of the image's *final* file
system, so the layers are applied in order exactly as for assembly: through
:class:`~pkgtool.oci.filetree.Tree`, which is where whiteout, opaque-directory and hard-link
rules live, with only the wanted files' bytes kept (the rest is metadata).  Each layer is a
:class:`~pkgtool.oci.layer.Layer`, so its bytes are checked against its digest and its
``diff_id`` before the tree is read: a layer that does not match raises instead of
contributing files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pkgtool.errors import PkgtoolError
from pkgtool.oci.filetree import Kind, SkippedContent, Tree
from pkgtool.oci.layer import Layer

# A dpkg status file of a big distribution is a few MiB; copyright files are small.
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_TOTAL_BYTES = 256 * 1024 * 1024


def read_files(layers: Sequence[Layer], *, wanted: Callable[[str], bool], image: str = "image") -> dict[str, bytes]:
    """The final contents of every regular file whose path (relative, no ``./``) is
    ``wanted``, after applying ``layers`` in order."""
    found: dict[str, bytes] = {}
    total = 0
    with Tree() as tree:
        for number, layer in enumerate(layers, start=1):
            tree.apply_layer(layer, number=number, keep_content=wanted)
        for path, inode, _nlink in tree.walk():
            if inode.kind is not Kind.FILE or not wanted(path) or isinstance(inode.content, SkippedContent):
                # A hard link to a file that was not wanted carries no bytes: nothing to read.
                continue
            if inode.size > MAX_FILE_BYTES:
                raise PkgtoolError(f"{image}: {path} is {inode.size} bytes, over {MAX_FILE_BYTES}")
            total += inode.size
            if total > MAX_TOTAL_BYTES:
                raise PkgtoolError(f"{image}: wanted files exceed {MAX_TOTAL_BYTES} bytes")
            found[path] = tree.read(path)
    return found
