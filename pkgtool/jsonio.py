"""JSON in and out, one function per purpose.

Reading: every JSON document pkgtool parses (manifests, configs, envelopes, bundles, token
answers, docker configs) must be an object, and a document that is not gets one error line
naming what it was, in the caller's error class.

Writing: the bytes matter where a digest is taken over them, so each purpose has exactly one
serialisation, named for it:

* :func:`hashed_json`: compact, keys sorted, UTF-8 as is.  OCI manifests, indexes and image
  configs, and SBOM documents: the same content always gives the same digest.
* :func:`bundle_json`: indented, keys sorted.  ``config.json`` and ``runtime.json`` of the
  runtime bundles inside an OS image, which people read when debugging a boot; still
  deterministic, since the image's digest covers them.
"""

from __future__ import annotations

import json
from typing import Any

from pkgtool.errors import PkgtoolError


def load_object(
    data: bytes | str,
    *,
    what: str,
    error: type[PkgtoolError] = PkgtoolError,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    """``data`` parsed as a JSON object; anything else raises ``error`` naming ``what``."""
    if max_bytes is not None and len(data) > max_bytes:
        raise error(f"{what} is larger than {max_bytes} bytes")
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise error(f"{what} is not valid JSON") from None
    if not isinstance(document, dict):
        raise error(f"{what} is not a JSON object")
    return document


def object_or_none(data: bytes | str) -> dict[str, Any] | None:
    """``data`` as a JSON object, or None: for input that is only ever peeked at."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return document if isinstance(document, dict) else None


def hashed_json(obj: Any) -> bytes:
    """The bytes of a JSON document that a digest is taken over (see the module docstring)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def bundle_json(obj: Any) -> bytes:
    """The bytes of a runtime bundle's ``config.json`` or ``runtime.json``."""
    return json.dumps(obj, sort_keys=True, indent=4, ensure_ascii=False, separators=(",", ": ")).encode()
