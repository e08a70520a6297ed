"""Ids that tools would draw at random (volume serials, GPT GUIDs, disk signatures),
derived instead from the image name and a purpose, so a rebuild gives the same bytes."""

from __future__ import annotations

import hashlib
import uuid


def stable_uuid(*parts: str) -> uuid.UUID:
    """A UUID that depends only on ``parts`` (so rebuilds reproduce it)."""
    digest = hashlib.sha256("\x00".join(("pkgtool", *parts)).encode()).digest()
    return uuid.UUID(bytes=digest[:16], version=4)


def stable_u32(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(("pkgtool", *parts)).encode()).digest()[:4], "big")

