"""A root file system tar per arch → a reproducible OCI image and a multi-arch index.

Used by the Debian base (``pkgtool base build``: an mmdebstrap tar per arch) and by the
kernels (``pkgtool kernel build``: the kernel layout files).  Each arch becomes:

* one layer: the input tar re-written entry by entry in its own order (mmdebstrap and
  our kernel writer already sort), with mtimes clamped to the recipe's epoch, owner
  names dropped (numeric ids only), ``./`` prefixes removed and optional entries dropped
  (``/dev`` nodes: the runtime provides ``/dev``; device nodes in a layer break rootless
  unpacking), then compressed like every layer pkgtool writes
  (:class:`pkgtool.oci.compress.DeterministicCompressor`: gzip in parallel blocks with fixed
  parameters), so the same input always gives the same layer digest;
* a config with ``created`` set to the epoch (never the wall clock), Env, Cmd, labels and
  ``rootfs.diff_ids``;
* an OCI manifest, pushed by digest and tagged ``<tag>-<arch>`` so single arches can be
  inspected on their own.

The index (sorted amd64, arm64, s390x) is pushed last under ``<tag>``: a reader that sees
the tag sees every arch.  :func:`index_complete` is the cheap "already built?" probe: one
manifest GET.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pkgtool.arches import arch_rank
from pkgtool.errors import PkgtoolError
from pkgtool.jsonio import hashed_json
from pkgtool.oci import mediatypes
from pkgtool.oci.compress import DeterministicCompressor, HashingWriter
from pkgtool.oci.descriptor import Descriptor, Platform
from pkgtool.oci.manifest import build_index as oci_build_index
from pkgtool.oci.repack import rfc3339

if TYPE_CHECKING:
    from pkgtool.oci.registry import RegistryClient

EntryFilter = Callable[[str, tarfile.TarInfo], bool]  # True: drop the entry


@dataclass(frozen=True)
class ImageConfig:
    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    epoch: int = 0
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ArchImage:
    arch: str
    layer_path: Path
    layer: Descriptor
    config: bytes
    manifest: bytes

    @property
    def manifest_descriptor(self) -> Descriptor:
        return Descriptor.for_bytes(mediatypes.OCI_MANIFEST, self.manifest,
                                    platform=Platform("linux", self.arch))


def drop_device_nodes(name: str, info: tarfile.TarInfo) -> bool:
    """Drop everything below ``dev/`` but the directory itself."""
    return name.startswith("dev/") and name != "dev/"


def _entry_name(info: tarfile.TarInfo) -> str:
    name = info.name
    while name.startswith("./"):
        name = name[2:]
    if name == ".":
        return ""  # the root itself: layers do not carry it
    if info.isdir() and name and not name.endswith("/"):
        name += "/"
    return name


def repack_layer(source: Path, out: Path, *, epoch: int, drop: EntryFilter | None = None) -> tuple[Descriptor, str]:
    """Write ``source`` (a tar) as a deterministic gzip layer; return (descriptor, diff_id)."""
    with open(out, "wb") as raw:
        compressed = HashingWriter(raw)
        gz = DeterministicCompressor(compressed, compression="gzip")
        try:
            plain = HashingWriter(gz)
            with tarfile.open(source, "r:") as src, \
                    tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT) as dst:  # type: ignore[call-overload]
                for info in src:
                    name = _entry_name(info)
                    if not name or name == "/" or (drop is not None and drop(name, info)):
                        continue
                    if name.startswith("/") or ".." in name.split("/"):
                        raise PkgtoolError(f"{source.name}: refusing entry with unsafe name {info.name!r}")
                    info.name = name
                    if info.islnk():
                        info.linkname = _entry_name(tarfile.TarInfo(info.linkname))
                    info.mtime = min(int(info.mtime), epoch)
                    info.uname = info.gname = ""
                    # Python would copy atime/ctime pax records through: they break reproducibility.
                    info.pax_headers = {k: v for k, v in info.pax_headers.items()
                                        if k not in ("atime", "ctime", "mtime")}
                    dst.addfile(info, src.extractfile(info) if info.isreg() else None)
        except BaseException:
            gz.abort()
            raise
        gz.close()
    descriptor = Descriptor(mediatypes.OCI_LAYER_GZIP, compressed.digest, compressed.size)
    return descriptor, plain.digest


def image_from_rootfs_tar(tar: Path, *, arch: str, config: ImageConfig, workdir: Path,
                          drop: EntryFilter | None = None) -> ArchImage:
    """The reproducible OCI image of one arch from its root file system tar."""
    workdir.mkdir(parents=True, exist_ok=True)
    layer_path = workdir / "layer.tar.gz"
    layer, diff_id = repack_layer(tar, layer_path, epoch=config.epoch, drop=drop)
    created = rfc3339(config.epoch)
    image_config: dict[str, Any] = {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {"Env": list(config.env), "Labels": dict(sorted(config.labels.items()))},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "pkgtool rootfs import"}],
    }
    if config.cmd:
        image_config["config"]["Cmd"] = list(config.cmd)
    config_bytes = hashed_json(image_config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": Descriptor.for_bytes(mediatypes.OCI_CONFIG, config_bytes).to_json(),
        "layers": [layer.to_json()],
    }
    return ArchImage(arch=arch, layer_path=layer_path, layer=layer, config=config_bytes,
                     manifest=hashed_json(manifest))


def directory_tar(root: Path, out: Path, *, epoch: int) -> None:
    """A tar of the regular files directly in ``root`` (the kernel layout), sorted, 0:0, fixed mtime."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tf:
        for path in sorted(root.iterdir(), key=lambda p: p.name):
            if not path.is_file() or path.is_symlink():
                raise PkgtoolError(f"{path}: only regular files belong at the root of this image")
            info = tarfile.TarInfo(path.name)
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = epoch
            info.uname = info.gname = ""
            with open(path, "rb") as f:
                tf.addfile(info, f)


def build_index(images: Iterable[ArchImage], *, annotations: dict[str, str] | None = None) -> bytes:
    ordered = sorted(images, key=lambda i: arch_rank(i.arch))
    return oci_build_index([i.manifest_descriptor for i in ordered], annotations=annotations)


# ---------------------------------------------------------------- registry


def _client(registry: str) -> RegistryClient:
    from pkgtool.oci.registry import RegistryClient

    return RegistryClient(registry)


def index_complete(*, registry: str, repository: str, tag: str, arches: Iterable[str]) -> bool:
    """True if ``repository:tag`` is an index listing every one of ``arches``."""
    client = _client(registry)
    found = client.get_manifest_or_none(repository, tag)
    if found is None or not found.is_index:
        return False
    have = {m.platform.architecture for m in found.manifests if m.platform is not None and m.platform.os == "linux"}
    return set(arches) <= have


def push_arch_images(client: RegistryClient, images: list[ArchImage], *, repository: str, tag: str) -> None:
    """Push every arch's blobs and manifest, each manifest tagged ``<tag>-<arch>``."""
    for image in images:
        with open(image.layer_path, "rb") as f:
            client.push_blob(repository, f, digest=image.layer.digest, size=image.layer.size)
        client.push_blob_bytes(repository, image.config)
        client.put_manifest(repository, f"{tag}-{image.arch}", image.manifest, mediatypes.OCI_MANIFEST)


def push_images(images: list[ArchImage], *, registry: str, repository: str, tag: str) -> Descriptor:
    """Push every arch (:func:`push_arch_images`), then the index ``<tag>``."""
    client = _client(registry)
    push_arch_images(client, images, repository=repository, tag=tag)
    index = build_index(images)
    client.put_manifest(repository, tag, index, mediatypes.OCI_INDEX)
    return Descriptor.for_bytes(mediatypes.OCI_INDEX, index)


def file_size(path: Path) -> int:
    return os.stat(path).st_size
