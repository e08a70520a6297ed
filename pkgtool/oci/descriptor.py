"""Descriptors, digests and platforms as plain frozen values.

Manifests and indexes themselves stay as parsed JSON dictionaries (plus their exact bytes,
because the digest is over the bytes): the registry and the layout cache only move bytes,
and the few fields we need are read through the helpers here.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from pkgtool.errors import PkgtoolError

_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is a well-formed sha256 digest, else raise."""
    if not _DIGEST_RE.match(digest):
        raise PkgtoolError(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    return digest


def is_digest(value: str) -> bool:
    """Whether ``value`` is a well-formed sha256 digest (for fields a server may leave out)."""
    return _DIGEST_RE.match(value) is not None


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``linux/arm64``, ``linux/arm/v7`` or a bare ``arm64`` (Linux implied)."""
        parts = text.strip().split("/")
        if len(parts) == 1 and parts[0]:
            return cls("linux", parts[0])
        if len(parts) in (2, 3) and all(parts):
            return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")
        raise PkgtoolError(f"invalid platform {text!r}: expected os/arch[/variant]")

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base

    def to_json(self) -> dict[str, str]:
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Platform:
        return cls(str(data.get("os", "")), str(data.get("architecture", "")), str(data.get("variant", "") or ""))


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] | None = field(default=None, compare=False, hash=False)
    platform: Platform | None = None
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(sorted(self.annotations.items()))
        return out

    @classmethod
    def from_json(cls, data: Any) -> Descriptor:
        if not isinstance(data, dict):
            raise PkgtoolError("malformed descriptor: expected a JSON object")
        try:
            media_type = str(data["mediaType"])
            digest = check_digest(str(data["digest"]))
            size = int(data["size"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PkgtoolError(f"malformed descriptor: {exc}") from None
        if size < 0:
            raise PkgtoolError(f"malformed descriptor {digest}: negative size")
        platform = data.get("platform")
        annotations = data.get("annotations")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            annotations=dict(annotations) if isinstance(annotations, dict) else None,
            platform=Platform.from_json(platform) if isinstance(platform, dict) else None,
            artifact_type=data.get("artifactType"),
        )

    @classmethod
    def for_bytes(cls, media_type: str, data: bytes, **kwargs: Any) -> Descriptor:
        return cls(media_type=media_type, digest=sha256_digest(data), size=len(data), **kwargs)

