"""in-toto for the build step: the link as an attestation, root layouts, and verification.

The build step's link says what went in and what came out:

* ``materials``: every package input file, by its path relative to the repository root,
  with its sha256 (what the content hash covers);
* ``products``: the pushed image, ``oci/index`` for the index and ``oci/<os>/<arch>`` for
  each per-arch manifest, whose "sha256" is the manifest digest's hex.

It is attached as an in-toto **Statement** with the attestation framework's link predicate
(:data:`LINK_PREDICATE_TYPE`): the products are the Statement's subjects and the predicate
carries the step name, command, materials (as resource descriptors), byproducts and
environment.  Tools that read ``.att`` layers and bundles as Statements (cosign, policy
engines) can read it like every other attestation.  The DSSE signature carries the
securesystemslib key id of the signing key, which is how a root layout names its
functionaries.

Verification does what ``in_toto_verify`` does for a one-step layout, with in-toto's own
functions for each part: the layout's signatures and expiry, the link's signature by a key
the layout authorises for the step (checked with that key from the layout), and the step's
artifact rules over the link's materials and products (the Statement converted to an
in-toto link by the predicate's conversion rules).  ``in_toto_verify`` itself only reads
links from files, as old-style links; classic links that earlier pkgtool versions attached
(``_type: link``) are still accepted by the same checks.  Layouts with ``inspect`` steps are
refused: inspections run commands, and verifying an image must never execute what a layout
file says.

The ``in_toto`` package has no type information; this module is the only one that touches
it, and only through the few calls below.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pkgtool.errors import PkgtoolError
from pkgtool.jsonio import load_object, object_or_none
from pkgtool.sign import SignatureError
from pkgtool.sign.dsse import Envelope, pae, verify_bytes
from pkgtool.sign.keys import PrivateKey, PublicKey, load_public_key
from pkgtool.sign.payloads import INTOTO_PAYLOAD_TYPE, Subject, intoto_statement

BUILD_STEP = "build"
# The in-toto attestation framework's link predicate; earlier pkgtool versions attached the
# classic link itself under the older name, which verification still reads.
LINK_PREDICATE_TYPE = "https://in-toto.io/attestation/link/v0.3"
LEGACY_LINK_PREDICATE_TYPE = "https://in-toto.io/Link/v1"
INDEX_PRODUCT = "oci/index"
ECDSA_SCHEME = "ecdsa-sha2-nistp256"
# Default artifact rules of a pkgtool root layout: inputs come from the package trees,
# outputs are the image manifests, nothing else may appear.
DEFAULT_MATERIAL_RULES: tuple[tuple[str, ...], ...] = (
    ("ALLOW", "pkg/*"), ("ALLOW", "kernel/*"), ("DISALLOW", "*"),
)
DEFAULT_PRODUCT_RULES: tuple[tuple[str, ...], ...] = (("ALLOW", "oci/*"), ("DISALLOW", "*"))


def platform_product(platform: str) -> str:
    """The product name of a per-arch manifest, e.g. ``oci/linux/arm64``."""
    return f"oci/{platform}"


def _quiet_in_toto() -> None:
    # in-toto logs every verification step at INFO and command mismatches at WARNING;
    # pkgtool reports outcomes itself.
    logging.getLogger("in_toto").setLevel(logging.ERROR)


# --------------------------------------------------------------------------- keys


def securesystemslib_key(public_key: PublicKey) -> dict[str, Any]:
    """The securesystemslib key dict (with ``keyid``) in-toto layouts list."""
    from securesystemslib.signer import SSlibKey  # type: ignore[attr-defined]

    key = SSlibKey.from_crypto(public_key, scheme=ECDSA_SCHEME)
    document: dict[str, Any] = key.to_dict()
    document["keyid"] = key.keyid
    return document


def _layout_public_key(entry: Any) -> PublicKey | None:
    """The ECDSA key a layout lists (securesystemslib's dict form); None for other kinds,
    which pkgtool never signs with."""
    keyval = entry.get("keyval") if isinstance(entry, dict) else None
    pem = keyval.get("public") if isinstance(keyval, dict) else None
    if not isinstance(pem, str) or entry.get("keytype") != "ecdsa":
        return None
    try:
        return load_public_key(pem.encode(), source="in-toto layout key")
    except PkgtoolError:
        return None


def securesystemslib_keyid(public_key: PublicKey) -> str:
    keyid = securesystemslib_key(public_key)["keyid"]
    assert isinstance(keyid, str)
    return keyid


# --------------------------------------------------------------------------- links


def make_link(
    *, materials: Mapping[str, str], products: Mapping[str, str], name: str = BUILD_STEP,
    command: Sequence[str] = (),
) -> bytes:
    """The build step's link as an in-toto Statement (sha256 hex values, paths as given)."""
    if not products:
        raise ValueError("a link needs at least one product")
    return intoto_statement(
        subjects=[Subject(path, "sha256:" + _hex(value, path)) for path, value in sorted(products.items())],
        predicate_type=LINK_PREDICATE_TYPE,
        predicate={
            "name": name,
            "command": list(command),
            "materials": [{"name": path, "digest": {"sha256": _hex(value, path)}}
                          for path, value in sorted(materials.items())],
            "byproducts": {},
            "environment": {},
        },
    )


@dataclass(frozen=True)
class LinkInfo:
    name: str
    materials: dict[str, str]
    products: dict[str, str]
    command: tuple[str, ...] = ()


def is_link_payload(payload: bytes) -> bool:
    """Whether a DSSE payload is a build-step link (a link Statement, or a classic link)."""
    document = object_or_none(payload)
    if document is None:
        return False
    return document.get("_type") == "link" or document.get("predicateType") in (
        LINK_PREDICATE_TYPE, LEGACY_LINK_PREDICATE_TYPE)


def parse_link(payload: bytes) -> LinkInfo:
    """The fields pkgtool checks of a link payload (after its signature was verified): a link
    Statement, converted as the predicate's specification says, or a classic link."""
    document = load_object(payload, what="in-toto link payload", error=SignatureError)
    if document.get("_type") == "link":
        return LinkInfo(str(document.get("name", "")), _artifact_map(document.get("materials"), "materials"),
                        _artifact_map(document.get("products"), "products"), _command(document.get("command")))
    if document.get("predicateType") != LINK_PREDICATE_TYPE:
        raise SignatureError("in-toto link payload is neither a link Statement nor a classic link")
    predicate = document.get("predicate")
    if not isinstance(predicate, dict):
        raise SignatureError("in-toto link Statement has no predicate")
    return LinkInfo(
        str(predicate.get("name", "")),
        _descriptor_map(predicate.get("materials", []), "materials"),
        _descriptor_map(document.get("subject"), "subject"),
        _command(predicate.get("command")),
    )


def _artifact_map(raw: Any, field: str) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise SignatureError(f"in-toto link lacks {field}")
    out = {}
    for path, hashes in raw.items():
        sha = hashes.get("sha256") if isinstance(hashes, dict) else None
        if isinstance(sha, str):
            out[str(path)] = sha
    return out


def _descriptor_map(raw: Any, field: str) -> dict[str, str]:
    """``[{name, digest: {sha256}}]`` as ``{name: sha256}``; names must be unique."""
    if not isinstance(raw, list):
        raise SignatureError(f"in-toto link Statement: {field} is not a list")
    out: dict[str, str] = {}
    for entry in raw:
        name = entry.get("name") if isinstance(entry, dict) else None
        digest = entry.get("digest") if isinstance(entry, dict) else None
        sha = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(name, str) or not isinstance(sha, str):
            raise SignatureError(f"in-toto link Statement: a {field} entry lacks a name or a sha256 digest")
        if name in out:
            raise SignatureError(f"in-toto link Statement: {field} name {name!r} appears twice")
        out[name] = sha
    return out


def _command(raw: Any) -> tuple[str, ...]:
    return tuple(str(part) for part in raw) if isinstance(raw, list) else ()


# --------------------------------------------------------------------------- layouts


def make_layout(
    *,
    layout_key: PrivateKey,
    functionaries: Sequence[PublicKey],
    expires: datetime.datetime,
    readme: str = "",
    material_rules: Sequence[Sequence[str]] = DEFAULT_MATERIAL_RULES,
    product_rules: Sequence[Sequence[str]] = DEFAULT_PRODUCT_RULES,
) -> bytes:
    """A root layout with one ``build`` step, signed by ``layout_key`` (DSSE JSON).

    Any one of ``functionaries`` may sign the step's link (threshold 1).
    """
    _quiet_in_toto()
    from in_toto.models.layout import Layout, Step  # type: ignore[import-untyped]
    from in_toto.models.metadata import Envelope as InTotoEnvelope  # type: ignore[import-untyped]

    # securesystemslib re-exports these without __all__, which strict mypy cannot see.
    from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]

    if not functionaries:
        raise ValueError("a layout needs at least one functionary key")
    keys = {k["keyid"]: k for k in (securesystemslib_key(f) for f in functionaries)}
    step = Step(
        name=BUILD_STEP, pubkeys=sorted(keys), threshold=1,
        expected_materials=[list(rule) for rule in material_rules],
        expected_products=[list(rule) for rule in product_rules],
    )
    when = expires.astimezone(datetime.UTC).replace(microsecond=0)
    layout = Layout(
        steps=[step], inspect=[], keys=keys, readme=readme,
        expires=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    )
    envelope = InTotoEnvelope.from_signable(layout)
    public = SSlibKey.from_crypto(layout_key.public_key(), scheme=ECDSA_SCHEME)
    envelope.create_signature(CryptoSigner(layout_key, public))
    return json.dumps(envelope.to_dict(), sort_keys=True, indent=1).encode() + b"\n"


@dataclass(frozen=True)
class LayoutCheck:
    """What ``in_toto_verify`` accepted."""

    layout_expires: str
    functionary_keyid: str
    link: LinkInfo


def verify_link(
    layout: bytes,
    layout_keys: Sequence[PublicKey],
    link: Envelope,
    *,
    index_digest: str,
    source: str = "in-toto layout",
) -> LayoutCheck:
    """Check ``link`` against the root ``layout`` as ``in_toto_verify`` would.

    Raises :class:`SignatureError` naming the failed check: the layout's signature, its
    expiry, the link's signature by an authorised functionary, an artifact rule, or
    (afterwards) that the link's ``oci/index`` product is not ``index_digest``, so a valid
    link of another image cannot be replayed.
    """
    _quiet_in_toto()
    from in_toto import exceptions as intoto_errors  # type: ignore[import-untyped]
    from in_toto.models.link import Link  # type: ignore[import-untyped]
    from in_toto.models.metadata import Metadata
    from in_toto.verifylib import (  # type: ignore[import-untyped]
        verify_all_item_rules,
        verify_layout_expiration,
        verify_metadata_signatures,
    )
    from securesystemslib import exceptions as sslib_errors

    if not layout_keys:
        raise SignatureError(f"{source}: no layout key to verify it with")
    try:
        metadata = Metadata.from_dict(json.loads(layout))
        payload = metadata.get_payload()
    except (ValueError, KeyError, TypeError, intoto_errors.Error, sslib_errors.Error) as exc:
        raise SignatureError(f"{source}: not a valid in-toto layout ({type(exc).__name__})") from exc
    if getattr(payload, "type_", None) != "layout":
        raise SignatureError(f"{source}: the metadata is a {getattr(payload, 'type_', '?')}, not a layout")
    if payload.inspect:
        raise SignatureError(f"{source}: layout has inspections; pkgtool never runs layout commands")
    steps = [step for step in payload.steps if step.name == BUILD_STEP]
    if len(payload.steps) != 1 or not steps:
        raise SignatureError(f"{source}: pkgtool verifies layouts with exactly one step, '{BUILD_STEP}'")
    step = steps[0]
    key_dict = {k["keyid"]: k for k in (securesystemslib_key(key) for key in layout_keys)}
    try:
        verify_metadata_signatures(metadata, key_dict)
    except (intoto_errors.SignatureVerificationError, sslib_errors.Error) as exc:
        raise SignatureError(f"{source}: layout signature does not verify with the layout key(s)") from exc
    try:
        verify_layout_expiration(payload)
    except intoto_errors.LayoutExpiredError as exc:
        raise SignatureError(f"{source}: layout expired on {payload.expires}") from exc
    keyid = _functionary(link, step, payload.keys, source=source)
    if step.threshold > 1:
        raise SignatureError(f"{source}: step '{BUILD_STEP}' needs {step.threshold} functionaries; "
                             "pkgtool attaches one build link per image")
    info = parse_link(link.payload)
    if info.name != BUILD_STEP:
        raise SignatureError(f"in-toto link is for step {info.name!r}, not '{BUILD_STEP}'")
    in_toto_link = Link(
        name=info.name, command=list(info.command), byproducts={}, environment={},
        materials={path: {"sha256": sha} for path, sha in info.materials.items()},
        products={path: {"sha256": sha} for path, sha in info.products.items()},
    )
    try:
        verify_all_item_rules(payload.steps, {BUILD_STEP: in_toto_link})
    except intoto_errors.RuleVerificationError as exc:
        raise SignatureError(f"{source}: artifact rule failed: {_first_line(exc)}") from exc
    except (intoto_errors.Error, sslib_errors.Error) as exc:
        raise SignatureError(f"{source}: in-toto verification failed: {_first_line(exc)}") from exc
    product = info.products.get(INDEX_PRODUCT)
    if product != index_digest.removeprefix("sha256:"):
        raise SignatureError(
            f"in-toto link: product {INDEX_PRODUCT} is sha256:{product or '(missing)'}, not {index_digest}"
        )
    return LayoutCheck(str(payload.expires), keyid, info)


def _functionary(link: Envelope, step: Any, layout_keys: Mapping[str, Any], *, source: str) -> str:
    """The key id of a functionary the layout authorises for ``step`` whose key (as the
    layout gives it) verifies the link's DSSE signature; raise if there is none."""
    if link.payload_type != INTOTO_PAYLOAD_TYPE or not link.signatures:
        raise SignatureError("in-toto link envelope has the wrong payload type or no signature")
    authorised = [s for s in link.signatures if s.keyid in step.pubkeys and s.keyid in layout_keys]
    if not authorised:
        named = ", ".join(s.keyid[:16] or "(none)" for s in link.signatures)
        raise SignatureError(f"{source}: the link is signed by key id {named}, which the layout does not "
                             f"authorise for step '{BUILD_STEP}'")
    for signature in authorised:
        key = _layout_public_key(layout_keys[signature.keyid])
        if key is not None and verify_bytes(key, pae(link.payload_type, link.payload), signature.sig):
            return signature.keyid
    raise SignatureError(f"{source}: no '{BUILD_STEP}' link signed by an authorised functionary (the signature "
                         f"naming key id {authorised[0].keyid[:16]} does not verify with that key)")


def _hex(value: str, path: str) -> str:
    text = value.removeprefix("sha256:")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError(f"in-toto artifact {path!r}: {value!r} is not a sha256 digest")
    return text


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] or type(exc).__name__
