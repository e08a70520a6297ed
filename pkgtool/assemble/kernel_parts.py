"""What an OS image takes from its kernel image: the kernel binary, the microcode archive,
``/config`` (which decides the initrd's compression) and ``kernel.tar`` (the modules).

The first three are kept in the cache as a ``kernel-files`` artifact keyed by the kernel
image's manifest digest and the file names, so a warm build never reads the kernel image's
layers; ``kernel.tar`` is unpacked only when the modules' initrd segment must be built (or a
format needs the whole tree).  The kernel image is flattened at most once per build.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pkgtool.assemble.artifacts import ArtifactCache, StoredFile, cache_key
from pkgtool.assemble.images import PulledImage
from pkgtool.assemble.units import Progress, flatten
from pkgtool.errors import UsageError
from pkgtool.oci.filetree import Inode, Kind, SpillStore, Tree
from pkgtool.oci.layer import decompressed_chunks, read_entries
from pkgtool.spec.image import KernelConfig
from pkgtool.streams import chunk_file

FORMAT = 1  # of the kernel-files artifact
_MEDIA = "application/octet-stream"
_MAX_CONFIG = 16 * 1024 * 1024


@dataclass(frozen=True)
class KernelParts:
    binary: Path
    binary_mode: int
    ucode: Path | None
    config: bytes | None  # the kernel image's /config, when it has one


class KernelFiles:
    """The kernel image of one build, read lazily and through the cache."""

    def __init__(self, kernel: KernelConfig, image: PulledImage, *, artifacts: ArtifactCache | None,
                 work: Path, store: SpillStore, progress: Progress) -> None:
        self.kernel, self.image, self.artifacts = kernel, image, artifacts
        self.work, self.store, self.progress = work, store, progress
        self.where = f"{kernel.origin or 'kernel'}: {kernel.image}"
        self._flat: Tree | None = None

    def close(self) -> None:
        if self._flat is not None:
            self._flat.close()

    def _flattened(self) -> Tree:
        if self._flat is None:
            self.progress(f"kernel {self.kernel.image}")
            self._flat = flatten(self.image, self.store)
        return self._flat

    def _member(self, name: str, what: str) -> Inode:
        inode = self._flattened().get(name)
        if inode is None or inode.kind is not Kind.FILE:
            raise UsageError(f"{self.where}: no {what} {name!r} in the kernel image")
        return inode

    def parts(self) -> KernelParts:
        key = cache_key("kernel-files", FORMAT, self.image.manifest_digest, self.kernel.binary_name,
                        self.kernel.ucode or "")
        cached = self.artifacts.get("kernel-files", key) if self.artifacts is not None else None
        if cached is not None and self.artifacts is not None:
            binary, ucode = self.work / "kernel", self.work / "ucode.cpio"
            complete = self.artifacts.link_or_copy(cached["kernel"], binary)
            if complete and "ucode" in cached:
                complete = self.artifacts.link_or_copy(cached["ucode"], ucode)
            if complete:
                mode = int((cached["kernel"].annotations or {}).get("pkgtool.mode", "420"))
                config = self.artifacts.read(cached["config"], max_size=_MAX_CONFIG) if "config" in cached else None
                return KernelParts(binary, mode, ucode if "ucode" in cached else None, config)
            self.artifacts.drop("kernel-files", key)
        return self._extract(key)

    def _extract(self, key: str) -> KernelParts:
        binary = self._member(self.kernel.binary_name, "kernel binary")
        ucode = self._member(self.kernel.ucode, "microcode archive") if self.kernel.ucode else None
        flat = self._flattened()
        config_inode = flat.get("config")
        config = flat.read("config") if config_inode is not None and config_inode.kind is Kind.FILE else None
        binary_path = _write(binary, self.work / "kernel")
        ucode_path = _write(ucode, self.work / "ucode.cpio") if ucode is not None else None
        if self.artifacts is not None:
            files = [StoredFile("kernel", _MEDIA, binary_path, annotations={"pkgtool.mode": str(binary.mode)})]
            if ucode_path is not None:
                files.append(StoredFile("ucode", _MEDIA, ucode_path))
            if config is not None:
                files.append(StoredFile("config", _MEDIA, config))
            self.artifacts.put("kernel-files", key, files, annotations={"pkgtool.unit": f"kernel {self.kernel.image}"})
        return KernelParts(binary_path, binary.mode, ucode_path, config)

    def modules(self, store: SpillStore) -> Tree:
        """``kernel.tar`` unpacked into a tree (the kernel-modules unit)."""
        assert self.kernel.tar_name is not None
        inode = self._member(self.kernel.tar_name, "kernel tarball")
        what = f"{self.kernel.image}: {self.kernel.tar_name}"
        tree = Tree(store=store)
        stream = chunk_file(iter(inode.content.chunks() if inode.content else ()))
        tree.apply_entries(read_entries(chunk_file(decompressed_chunks(stream, what=what)), what=what), number=1)
        return tree


def _write(inode: Inode, dest: Path) -> Path:
    with dest.open("wb") as out:
        for chunk in inode.content.chunks() if inode.content else ():
            out.write(chunk)
    return dest
