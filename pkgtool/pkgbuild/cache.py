"""``--cache-from`` / ``--cache-to``: BuildKit's build cache, shared through a registry.

A cache location is a repository prefix, ``HOST[:PORT]/PATH`` (or buildx's spelling
``type=registry,ref=HOST/PATH[,mode=max|min]``).  Each package and arch has its own cache
image under it, ``HOST/PATH/<org>/<image>:cache-<arch>``, so shards that build different
arches of one package at once never write the same tag, and a package's cache survives
changes to its content hash (the point of a cache: the next version reuses what did not
change).

What each kind of builder can do with it:

* a standalone buildkitd exports ``type=registry`` itself, ``mode=max`` by default (every
  step of every stage, so a change late in a Dockerfile still reuses the early steps);
* dockerd 20.10's BuildKit (v0.8) has no ``registry`` cache exporter, only ``inline``: the
  cache records go into the config of the image it exports, ``mode=min`` only (the steps
  that lead to the final image).  pkgtool pushes that image, config untouched, as the cache
  image (:mod:`~pkgtool.pkgbuild.inline_cache`).  Its ``registry`` cache importer reads both
  kinds.

A cache image is never a package image: package images are re-packed reproducibly from
whatever BuildKit returns, so a warm cache and a cold one give the same digests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pkgtool.errors import PkgtoolError, UsageError

if TYPE_CHECKING:
    from pkgtool.buildkit import CacheEntry
    from pkgtool.oci.registry import RegistryClient

CACHE_MODES = ("max", "min")
CACHE_TAG_PREFIX = "cache-"


@dataclass(frozen=True)
class CacheLocation:
    """A registry repository prefix holding build caches, and the export mode."""

    registry: str
    prefix: str
    mode: str = "max"

    def repository(self, package_name: str) -> str:
        """Where ``package_name``'s (``org/image``) caches live."""
        return f"{self.prefix}/{package_name}"

    @staticmethod
    def tag(arch: str) -> str:
        return f"{CACHE_TAG_PREFIX}{arch}"

    def ref(self, package_name: str, arch: str) -> str:
        return f"{self.registry}/{self.repository(package_name)}:{self.tag(arch)}"

    def __str__(self) -> str:
        return f"{self.registry}/{self.prefix}"


def parse_cache_location(value: str, *, flag: str, default_registry: str) -> CacheLocation:
    """``HOST/PATH`` or ``type=registry,ref=HOST/PATH[,mode=max|min]``."""
    from pkgtool.oci.reference import parse_reference

    text = value.strip()
    mode = "max"
    if "=" in text:
        attrs: dict[str, str] = {}
        for item in text.split(","):
            key, sep, attr = item.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"{flag}: {item!r} is not KEY=VALUE (e.g. type=registry,ref=HOST/PATH,mode=max)")
            attrs[key.strip()] = attr.strip()
        unknown = sorted(set(attrs) - {"type", "ref", "mode"})
        if unknown:
            raise UsageError(f"{flag}: unknown attribute {unknown[0]!r} (pkgtool knows type, ref and mode)")
        if attrs.get("type", "registry") != "registry":
            raise UsageError(f"{flag}: only type=registry is supported (got type={attrs['type']})")
        if "ref" not in attrs:
            raise UsageError(f"{flag}: type=registry needs ref=HOST/PATH")
        text = attrs["ref"]
        mode = attrs.get("mode", "max")
        if mode not in CACHE_MODES:
            raise UsageError(f"{flag}: mode must be max or min (got {mode!r})")
    try:
        ref = parse_reference(text, default_registry=default_registry)
    except PkgtoolError as exc:
        raise UsageError(f"{flag}: {exc}") from None
    if ref.tag is not None or ref.digest is not None:
        raise UsageError(f"{flag}: {text!r}: give a repository prefix without tag or digest "
                         f"(pkgtool adds /<org>/<image>:{CACHE_TAG_PREFIX}<arch>)")
    return CacheLocation(ref.registry, ref.repository, mode)


def export_entries(location: CacheLocation, *, builder_kind: str, package_name: str, arch: str) -> list[CacheEntry]:
    """What to ask BuildKit to export: ``registry`` for buildkitd, ``inline`` for dockerd."""
    from pkgtool.buildkit import CacheEntry

    if builder_kind == "dockerd":
        return [CacheEntry("inline")]
    return [CacheEntry("registry", {"ref": location.ref(package_name, arch), "mode": location.mode})]


def import_entries(locations: tuple[CacheLocation, ...], client: RegistryClient, *, package_name: str,
                   arch: str) -> tuple[list[CacheEntry], list[str]]:
    """Registry imports for the cache images that exist, and the refs that do not (yet).

    Asking BuildKit to import a missing ref is harmless but shows as a failed step; one
    HEAD per location says it plainly instead.
    """
    from pkgtool.buildkit import CacheEntry

    entries: list[CacheEntry] = []
    missing: list[str] = []
    for location in locations:
        ref = location.ref(package_name, arch)
        found = client.for_registry(location.registry).head_manifest(location.repository(package_name),
                                                                      location.tag(arch))
        if found is None:
            missing.append(ref)
        else:
            entries.append(CacheEntry("registry", {"ref": ref}))
    return entries, missing
