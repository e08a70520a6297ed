"""What every output format writer gets and returns (:class:`FormatInput`, :data:`Writer`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pkgtool.errors import PkgtoolError
from pkgtool.oci.filetree import Tree

# FAT and some boot tools cannot store times before 1980-01-01; those clamp to this.
FAT_EPOCH = 315532800


@dataclass
class FormatInput:
    """The assembled image as the writers see it."""

    name: str
    arch: str
    mtime: int
    kernel: Path  # the kernel binary, staged on disk
    cmdline: str
    work: Path  # scratch space that is removed after the build
    ucode: Path | None = None
    compression: str = "gzip"
    make_initrd: Callable[[], Path] | None = field(default=None, repr=False)
    make_tree: Callable[[], Tree] | None = field(default=None, repr=False)

    @functools.cached_property
    def initrd(self) -> Path:
        """The compressed initramfs, built once however many formats need it."""
        if self.make_initrd is None:
            raise PkgtoolError("internal: no initrd builder")
        return self.make_initrd()

    @functools.cached_property
    def tree(self) -> Tree:
        """The whole root file system, built only for the formats that need it (tar,
        squashfs): the others take the kernel and the initrd, made from cached segments."""
        if self.make_tree is None:
            raise PkgtoolError("internal: no tree builder")
        return self.make_tree()


Writer = Callable[[FormatInput, Path], list[Path]]
