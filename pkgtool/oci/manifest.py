"""Manifests and indexes: validating untrusted bytes, building our own, choosing platforms.

A :class:`Manifest` keeps the exact bytes next to the parsed document, because its digest
is over the bytes: re-serialising would change it.  Parsing is strict about what can hurt
(size, media type, descriptor shape, an index naming itself) and lenient about what does
not (unknown extra fields, which the specs allow).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pkgtool.errors import PkgtoolError
from pkgtool.jsonio import hashed_json, load_object
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, Platform, sha256_digest

# Docker's schema 1 is signed JSON nobody should produce any more; name it in the error.
_SCHEMA1_TYPES = frozenset({
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
})


class ManifestError(PkgtoolError):
    """Bytes that claim to be a manifest or index but are not a valid one."""


@dataclass(frozen=True)
class Manifest:
    """An image manifest or an index, with the bytes it was parsed from."""

    media_type: str
    data: bytes
    document: dict[str, Any]
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None
    artifact_type: str | None

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor(self.media_type, self.digest, len(self.data),
                          artifact_type=self.artifact_type)

    @property
    def is_index(self) -> bool:
        return self.media_type in mediatypes.INDEX_TYPES

    @property
    def annotations(self) -> dict[str, str]:
        raw = self.document.get("annotations")
        return {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}

    def children(self) -> list[Descriptor]:
        """What this document points at (config and layers, or the index's manifests).
        ``subject`` is not a child: a signature does not own the image it signs."""
        if self.is_index:
            return list(self.manifests)
        return ([self.config] if self.config else []) + list(self.layers)


def parse_manifest(
    data: bytes,
    *,
    content_type: str | None = None,
    digest: str | None = None,
    source: str = "manifest",
) -> Manifest:
    """Validate ``data`` as a manifest or index and parse it.

    ``content_type`` is the HTTP Content-Type (used when the document has no
    ``mediaType``); ``digest`` is the digest the document is known by, so an index that
    lists itself is caught; ``source`` names it in errors (``127.0.0.1:5000/a/b:tag``).
    The caller checks ``data`` against ``digest``; this function does not hash for that.
    """
    if len(data) > mediatypes.MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"{source}: manifest is {len(data)} bytes, over the {mediatypes.MAX_MANIFEST_BYTES}-byte limit"
        )
    ctype = (content_type or "").split(";", 1)[0].strip().lower()
    if ctype == "text/html" or looks_like_html(data):
        raise ManifestError(f"{source}: got an HTML page, not a manifest (is this really a registry?)")
    doc = load_object(data, what=f"{source}: manifest", error=ManifestError)

    declared = doc.get("mediaType")
    if declared is not None and not isinstance(declared, str):
        raise ManifestError(f"{source}: mediaType is not a string")
    media_type = declared or _infer_media_type(doc, ctype)
    if media_type in _SCHEMA1_TYPES or doc.get("schemaVersion") == 1:
        raise ManifestError(f"{source}: Docker schema 1 manifests are not supported")
    if media_type not in mediatypes.ALL_MANIFEST_TYPES:
        raise ManifestError(f"{source}: unsupported manifest media type {media_type!r}")
    if doc.get("schemaVersion") != 2:
        raise ManifestError(f"{source}: schemaVersion is {doc.get('schemaVersion')!r}, expected 2")

    artifact_type = doc.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestError(f"{source}: artifactType is not a string")
    subject = _descriptor(doc["subject"], source, "subject") if "subject" in doc else None

    if media_type in mediatypes.INDEX_TYPES:
        if "config" in doc or "layers" in doc:
            raise ManifestError(f"{source}: an index must not have config or layers")
        manifests = tuple(_descriptors(doc.get("manifests"), source, "manifests"))
        if digest is not None and any(d.digest == digest for d in manifests):
            raise ManifestError(f"{source}: index {digest} lists itself")
        return Manifest(media_type, data, doc, None, (), manifests, subject, artifact_type)

    if "manifests" in doc:
        raise ManifestError(f"{source}: an image manifest must not have 'manifests'")
    if "config" not in doc:
        raise ManifestError(f"{source}: image manifest has no config")
    config = _descriptor(doc["config"], source, "config")
    layers = tuple(_descriptors(doc.get("layers"), source, "layers"))
    if digest is not None and any(d.digest == digest for d in (config, *layers)):
        raise ManifestError(f"{source}: manifest {digest} lists itself")
    # Artifacts without artifactType carry it in the config's media type (OCI 1.1).
    if artifact_type is None and config.media_type not in (mediatypes.OCI_CONFIG, mediatypes.DOCKER_CONFIG, mediatypes.OCI_EMPTY):
        artifact_type = config.media_type
    return Manifest(media_type, data, doc, config, layers, (), subject, artifact_type)


def looks_like_html(data: bytes) -> bool:
    head = data[:256].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def _infer_media_type(doc: dict[str, Any], ctype: str) -> str:
    # mediaType is optional in OCI documents: the Content-Type says it, else the shape.
    if ctype in mediatypes.ALL_MANIFEST_TYPES or ctype in _SCHEMA1_TYPES:
        return ctype
    if "manifests" in doc:
        return mediatypes.OCI_INDEX
    if "config" in doc:
        return mediatypes.OCI_MANIFEST
    return ctype or "(none)"


def _descriptor(raw: Any, source: str, where: str) -> Descriptor:
    try:
        return Descriptor.from_json(raw)
    except PkgtoolError as exc:
        raise ManifestError(f"{source}: {where}: {exc}") from None


def _descriptors(raw: Any, source: str, where: str) -> list[Descriptor]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ManifestError(f"{source}: {where} is not a list")
    return [_descriptor(item, source, f"{where}[{i}]") for i, item in enumerate(raw)]


# --------------------------------------------------------------------------- building


def build_manifest(
    config: Descriptor,
    layers: Sequence[Descriptor],
    *,
    media_type: str = mediatypes.OCI_MANIFEST,
    annotations: dict[str, str] | None = None,
    subject: Descriptor | None = None,
    artifact_type: str | None = None,
) -> bytes:
    """Canonical bytes of an image manifest (same inputs, same digest)."""
    if media_type not in mediatypes.MANIFEST_TYPES:
        raise PkgtoolError(f"not an image manifest media type: {media_type}")
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
    }
    if artifact_type:
        doc["artifactType"] = artifact_type
    if subject is not None:
        doc["subject"] = Descriptor(subject.media_type, subject.digest, subject.size).to_json()
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    return hashed_json(doc)


def build_index(
    manifests: Iterable[Descriptor],
    *,
    media_type: str = mediatypes.OCI_INDEX,
    annotations: dict[str, str] | None = None,
) -> bytes:
    """Canonical bytes of an index listing ``manifests`` in the given order."""
    if media_type not in mediatypes.INDEX_TYPES:
        raise PkgtoolError(f"not an index media type: {media_type}")
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": [m.to_json() for m in manifests],
    }
    if annotations:
        doc["annotations"] = dict(sorted(annotations.items()))
    return hashed_json(doc)


# --------------------------------------------------------------------------- platforms


def platform_matches(have: Platform, want: Platform) -> bool:
    """Does an index entry for ``have`` serve a request for ``want``?

    An empty wanted variant accepts any variant (``linux/arm`` takes ``v7``); arm64's
    only variant ``v8`` is the same as none.
    """
    if have.os != want.os or have.architecture != want.architecture:
        return False
    if not want.variant:
        return True
    if have.architecture == "arm64" and {have.variant, want.variant} <= {"", "v8"}:
        return True
    return have.variant == want.variant


def select_platform(index: Manifest, want: Platform, *, source: str = "index") -> Descriptor:
    """The entry of ``index`` for ``want``; an error lists the platforms on offer.

    When several match (``linux/arm`` with v6 and v7 entries), an exact variant match wins,
    then the first listed, which is the publisher's preference order.
    """
    if not index.is_index:
        raise PkgtoolError(f"{source}: not an index, cannot choose a platform")
    candidates = [m for m in index.manifests if m.platform is not None]
    matches = [m for m in candidates if m.platform is not None and platform_matches(m.platform, want)]
    if not matches:
        offered = ", ".join(sorted({str(m.platform) for m in candidates})) or "none"
        raise PkgtoolError(f"{source}: no image for {want} (available: {offered})")
    exact = [m for m in matches if m.platform == want]
    return (exact or matches)[0]
