"""Signed payloads: cosign's simple-signing payload and in-toto Statement v1.

Both are JSON, and for the simple-signing payload the exact bytes matter: cosign signs the
bytes Go's ``encoding/json`` writes for sigstore's ``SimpleContainerImage`` struct, so we
write the same bytes (struct field order, compact, Go's HTML-safe escaping, sorted map keys
in ``optional``).  Readers never re-serialise: they verify the signature over the bytes
they were given, then parse them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pkgtool.jsonio import load_object
from pkgtool.oci.descriptor import check_digest
from pkgtool.sign import SignatureError

SIMPLE_SIGNING_TYPE = "cosign container image signature"
SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
# cosign < 2.? wrote v0.1 statements; they read the same for our purposes.
_STATEMENT_TYPES = frozenset({STATEMENT_V1, "https://in-toto.io/Statement/v0.1"})

# A payload is a few hundred bytes; an SBOM predicate can be megabytes, but not gigabytes.
MAX_PAYLOAD_BYTES = 64 * 1024 * 1024

_REFERENCE_RE = re.compile(r"^[a-z0-9][a-z0-9._:/-]*$")


def go_json(value: Any) -> bytes:
    """Compact JSON as Go's ``json.Marshal`` writes it (for strings, lists and objects).

    Go escapes ``<``, ``>`` and ``&`` (HTML safety) and U+2028/U+2029, and leaves other
    non-ASCII characters as UTF-8.  Those characters can only occur inside strings, so a
    textual replacement after encoding is exact.  Object keys keep the caller's order.
    """
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for raw, escaped in (
        ("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
        ("\u2028", "\\u2028"), ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text.encode()


# --------------------------------------------------------------------------- simple signing


@dataclass(frozen=True)
class SimpleSigning:
    docker_reference: str
    manifest_digest: str
    optional: dict[str, Any] | None


def simple_signing_payload(
    *, docker_reference: str, manifest_digest: str, optional: Mapping[str, str] | None = None
) -> bytes:
    """The bytes cosign signs for an image: identity (repository) plus manifest digest.

    ``docker_reference`` is the repository without tag or digest, e.g.
    ``127.0.0.1:5000/org/pkg`` (what go-containerregistry's ``Repository.Name()`` gives).
    ``optional`` holds cosign's ``-a key=value`` annotations; Go writes map keys sorted.
    """
    _check_reference(docker_reference)
    check_digest(manifest_digest)
    document = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": manifest_digest},
            "type": SIMPLE_SIGNING_TYPE,
        },
        "optional": None if optional is None else {k: str(optional[k]) for k in sorted(optional)},
    }
    return go_json(document)


def parse_simple_signing_payload(data: bytes) -> SimpleSigning:
    """Parse (never re-serialise) a simple-signing payload; the signature covers ``data``."""
    document = _load_json(data, what="simple-signing payload")
    try:
        critical = document["critical"]
        kind = critical["type"]
        reference = critical["identity"]["docker-reference"]
        digest = critical["image"]["docker-manifest-digest"]
    except (KeyError, TypeError) as exc:
        raise SignatureError(f"simple-signing payload lacks field {exc}") from exc
    if kind != SIMPLE_SIGNING_TYPE:
        raise SignatureError(f"simple-signing payload has unknown type {kind!r}")
    if not isinstance(reference, str) or not isinstance(digest, str):
        raise SignatureError("simple-signing payload identity and digest must be strings")
    optional = document.get("optional")
    if optional is not None and not isinstance(optional, dict):
        raise SignatureError("simple-signing payload 'optional' must be an object or null")
    return SimpleSigning(reference, digest, optional)


# --------------------------------------------------------------------------- in-toto


@dataclass(frozen=True)
class Subject:
    """An in-toto subject: a name (usually the repository) and its sha256 digest."""

    name: str
    digest: str  # sha256:<hex>

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "digest": {"sha256": check_digest(self.digest)[7:]}}


@dataclass(frozen=True)
class Statement:
    predicate_type: str
    subjects: tuple[Subject, ...]
    predicate: dict[str, Any]
    statement_type: str = STATEMENT_V1

    def subject_digests(self) -> frozenset[str]:
        return frozenset(s.digest for s in self.subjects)


def intoto_statement(
    *, subjects: Sequence[Subject], predicate_type: str, predicate: Mapping[str, Any]
) -> bytes:
    """An in-toto Statement v1, compact JSON with a deterministic key order.

    The top-level order is the in-toto spec's (``_type``, ``subject``, ``predicateType``,
    ``predicate``); predicate keys are sorted so that equal predicates give equal bytes.
    """
    if not subjects:
        raise ValueError("an in-toto statement needs at least one subject")
    if not predicate_type:
        raise ValueError("an in-toto statement needs a predicateType")
    predicate_json = json.loads(json.dumps(predicate, sort_keys=True, allow_nan=False))
    document = {
        "_type": STATEMENT_V1,
        "subject": [s.to_json() for s in subjects],
        "predicateType": predicate_type,
        "predicate": predicate_json,
    }
    return go_json(document)


def parse_statement(data: bytes) -> Statement:
    """Parse an in-toto statement; subjects without a sha256 digest are rejected."""
    document = _load_json(data, what="in-toto statement")
    statement_type = document.get("_type")
    if statement_type not in _STATEMENT_TYPES:
        raise SignatureError(f"in-toto statement has unknown _type {statement_type!r}")
    predicate_type = document.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise SignatureError("in-toto statement lacks predicateType")
    raw_subjects = document.get("subject")
    if not isinstance(raw_subjects, list) or not raw_subjects:
        raise SignatureError("in-toto statement has no subject")
    subjects = []
    for entry in raw_subjects:
        digest = entry.get("digest") if isinstance(entry, dict) else None
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(sha, str) or not re.fullmatch(r"[a-f0-9]{64}", sha):
            raise SignatureError("in-toto statement subject lacks a sha256 digest")
        subjects.append(Subject(str(entry.get("name", "")), "sha256:" + sha))
    predicate = document.get("predicate", {})
    if not isinstance(predicate, dict):
        raise SignatureError("in-toto statement predicate must be an object")
    return Statement(predicate_type, tuple(subjects), predicate, statement_type)


def check_statement_subject(statement: Statement, digest: str) -> None:
    """Raise unless ``digest`` is one of the statement's subjects."""
    if digest not in statement.subject_digests():
        named = ", ".join(sorted(statement.subject_digests()))
        raise SignatureError(
            f"attestation ({statement.predicate_type}) is about {named}, not about {digest}"
        )


# --------------------------------------------------------------------------- helpers


def _check_reference(reference: str) -> None:
    if not _REFERENCE_RE.match(reference) or "@" in reference or reference.endswith("/"):
        raise ValueError(f"invalid docker reference {reference!r}: expected host[:port]/repository")
    last = reference.rsplit("/", 1)[-1]
    if ":" in last:
        raise ValueError(f"docker reference {reference!r} must not carry a tag")


def _load_json(data: bytes, *, what: str) -> dict[str, Any]:
    return load_object(data, what=what, error=SignatureError, max_bytes=MAX_PAYLOAD_BYTES)
