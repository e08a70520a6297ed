"""Publishing dockerd's inline build cache as a registry cache image.

dockerd 20.10's BuildKit has one cache exporter, ``inline``: it writes the cache records
(``moby.buildkit.cache.v0``) into the config of the image it exports to dockerd's store,
and cannot push anything itself.  Its ``registry`` cache *importer* reads such an image
back from a registry.  So for ``--cache-to`` on dockerd, pkgtool pushes the image exactly as
dockerd made it, config bytes untouched, to the cache ref: that image is the cache.

The published package image is made separately by the reproducible re-pack, which drops
the cache records with every other build-host field, so caching never changes a digest.

The layers are gzipped here (BuildKit v0.8's importer expects compressed layers of a
registry manifest); their bytes need not be reproducible: the config's ``diff_ids`` name
the uncompressed content, which is what BuildKit checks when it unpacks them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import posixpath
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pkgtool.errors import PkgtoolError
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.manifest import build_manifest

if TYPE_CHECKING:
    from pkgtool.oci.registry import RegistryClient

INLINE_CACHE_KEY = "moby.buildkit.cache.v0"
_CHUNK = 1 << 20
_MAX_JSON = 16 * 1024 * 1024
_MAX_LINK_HOPS = 8
# Speed over size: a cache image is rewritten on every build that exports it.
_GZIP_LEVEL = 1


@dataclass(frozen=True)
class CacheImage:
    """What was pushed: the cache image's manifest, and how many cache records it holds."""

    ref: str
    manifest: Descriptor
    layers: int


class _DockerArchive:
    """The members of a ``docker save`` tar we need: manifest.json, the config, layer tars."""

    def __init__(self, path: Path) -> None:
        try:
            self._tar = tarfile.open(path, mode="r:")  # noqa: SIM115 - closed in close()
        except (OSError, tarfile.TarError) as exc:
            raise PkgtoolError(f"cannot read dockerd's image archive {path}: {exc}") from None
        self._members = {posixpath.normpath(m.name): m for m in self._tar.getmembers()}

    def close(self) -> None:
        self._tar.close()

    def open(self, name: str) -> IO[bytes]:
        path = posixpath.normpath(name)
        for _ in range(_MAX_LINK_HOPS):
            member = self._members.get(path)
            if member is None:
                raise PkgtoolError(f"dockerd's image archive lacks {name!r}")
            if member.isreg():
                reader = self._tar.extractfile(member)
                assert reader is not None
                return reader
            if not (member.issym() or member.islnk()):
                raise PkgtoolError(f"dockerd's image archive: {name!r} is not a file")
            # docker save symlinks a repeated layer relative to its own directory.
            base = posixpath.dirname(path) if member.issym() else ""
            path = posixpath.normpath(posixpath.join(base, member.linkname))
        raise PkgtoolError(f"dockerd's image archive: too many links at {name!r}")

    def read_json(self, name: str) -> tuple[bytes, Any]:
        with self.open(name) as reader:
            data = reader.read(_MAX_JSON + 1)
        if len(data) > _MAX_JSON:
            raise PkgtoolError(f"dockerd's image archive: {name!r} is too large")
        try:
            return data, json.loads(data)
        except ValueError:
            raise PkgtoolError(f"dockerd's image archive: {name!r} is not JSON") from None


def has_inline_cache(config: Any) -> bool:
    return isinstance(config, dict) and bool(config.get(INLINE_CACHE_KEY))


def _gzip_layer(reader: IO[bytes], spool: IO[bytes]) -> tuple[str, int]:
    """Gzip ``reader`` into ``spool``; returns (sha256 digest, size) of the compressed bytes."""
    with gzip.GzipFile(fileobj=spool, mode="wb", compresslevel=_GZIP_LEVEL, mtime=0) as gz:
        while chunk := reader.read(_CHUNK):
            gz.write(chunk)
    size = spool.tell()
    spool.seek(0)
    sha = hashlib.sha256()
    while chunk := spool.read(_CHUNK):
        sha.update(chunk)
    spool.seek(0)
    return "sha256:" + sha.hexdigest(), size


def push_inline_cache(archive: Path, client: RegistryClient, *, repository: str, tag: str) -> CacheImage:
    """Push the image in ``archive`` (a one-image ``docker save`` tar) to
    ``repository:tag`` with its config bytes unchanged.  Refuses an image without inline
    cache records: pushing it would only hide that the export did not happen."""
    reader = _DockerArchive(archive)
    try:
        _raw, manifest = reader.read_json("manifest.json")
        if not (isinstance(manifest, list) and len(manifest) == 1 and isinstance(manifest[0], dict)):
            raise PkgtoolError("dockerd's image archive does not hold exactly one image")
        entry = manifest[0]
        config_bytes, config = reader.read_json(str(entry.get("Config", "")))
        if not has_inline_cache(config):
            raise PkgtoolError("dockerd exported no inline build cache with the image (its config lacks "
                               f"{INLINE_CACHE_KEY})")
        layers: list[Descriptor] = []
        for name in entry.get("Layers") or []:
            with tempfile.TemporaryFile(prefix="pkgtool-cache-layer-") as spool, reader.open(str(name)) as layer:
                digest, size = _gzip_layer(layer, spool)
                client.push_blob(repository, spool, digest=digest, size=size)
            layers.append(Descriptor(mediatypes.DOCKER_LAYER_GZIP, digest, size))
    finally:
        reader.close()
    config_digest = client.push_blob_bytes(repository, config_bytes)
    data = build_manifest(Descriptor(mediatypes.DOCKER_CONFIG, config_digest, len(config_bytes)), layers,
                          media_type=mediatypes.DOCKER_MANIFEST)
    pushed = client.put_manifest(repository, tag, data, mediatypes.DOCKER_MANIFEST)
    return CacheImage(ref=f"{client.registry}/{repository}:{tag}", manifest=pushed, layers=len(layers))
