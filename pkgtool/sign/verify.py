"""Verify an image in a registry against a policy: what ``pkgtool verify`` checks.

For the root (index or lone manifest) and every per-arch image manifest it lists:

1. **Signatures.** Each signature shape the policy requires (``bundle``: a referrer whose
   statement has predicate ``cosign/sign/v1``; ``cosign``: a ``sha256-<hex>.sig`` layer)
   must verify with a trusted signer *and* name this digest.  No signature at all is a
   failure: deny by default.
2. **Attestations.** Every referrer bundle and ``.att`` layer is verified; those that do
   not verify, or that are about another digest, are ignored (they may be someone else's)
   and listed in the report.  What remains must include what the policy requires: SLSA
   provenance on every digest, an SPDX SBOM on every per-arch manifest.
3. **Provenance policy.** Every trusted provenance must name an allowed builder, an
   allowed source repository (and revision, if required), and only allowed base images,
   each pinned by digest.
4. **in-toto.** When the policy asks, the root's build-step link must pass
   ``in_toto_verify`` against the policy's root layout (:mod:`pkgtool.sign.intoto`).

The first failed check raises :class:`SignatureError` naming the check and the digest;
when a required item is missing, the message also says why each candidate was rejected.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pkgtool.errors import PkgtoolError
from pkgtool.jsonio import object_or_none
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.reference import Reference
from pkgtool.sign import SignatureError
from pkgtool.sign.attach import (
    COSIGN_SIGN_PREDICATE_TYPE,
    read_attestation_layers,
    read_bundles,
    read_classic_signatures,
)
from pkgtool.sign.dsse import Envelope
from pkgtool.sign.intoto import LEGACY_LINK_PREDICATE_TYPE, LINK_PREDICATE_TYPE, is_link_payload
from pkgtool.sign.payloads import (
    INTOTO_PAYLOAD_TYPE,
    Statement,
    check_statement_subject,
    parse_simple_signing_payload,
    parse_statement,
)
from pkgtool.sign.policy import Policy
from pkgtool.sign.provenance import SLSA_PROVENANCE_V1, read_provenance
from pkgtool.sign.sbom import SPDX_PREDICATE_TYPE, check_sbom
from pkgtool.sign.verifiers import Verifier, is_key_based, trusted_key_hints

if TYPE_CHECKING:
    from pkgtool.oci.source import ImageSource

KIND_PREDICATES = {"slsa-provenance": SLSA_PROVENANCE_V1, "spdx": SPDX_PREDICATE_TYPE}


@dataclass(frozen=True)
class Check:
    digest: str
    check: str
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"digest": self.digest, "check": self.check, "detail": self.detail}


@dataclass
class VerifyReport:
    reference: str
    root: str
    signer: str
    policy: str
    manifests: dict[str, str] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    ignored: list[Check] = field(default_factory=list)
    # The verified SLSA predicate about the root digest, for `verify --rebuild`.
    provenance: dict[str, Any] | None = None

    def passed(self, digest: str, check: str, detail: str) -> None:
        self.checks.append(Check(digest, check, detail))

    def to_json(self) -> dict[str, Any]:
        return {
            "verified": True, "reference": self.reference, "root": self.root, "signer": self.signer,
            "policy": self.policy, "manifests": self.manifests,
            "checks": [c.to_json() for c in self.checks], "ignored": [c.to_json() for c in self.ignored],
        }

    def human(self) -> str:
        lines = [f"Verified {self.reference}@{self.root}", f"  trusted signer: {self.signer}",
                 f"  policy: {self.policy}"]
        for digest in dict.fromkeys(c.digest for c in self.checks):
            platform = next((p for p, d in self.manifests.items() if d == digest), "index" if digest == self.root else "")
            lines.append(f"  {digest} ({platform})" if platform else f"  {digest}")
            lines.extend(f"    ok  {c.check}: {c.detail}" for c in self.checks if c.digest == digest)
        if self.ignored:
            lines.append(f"  ignored {len(self.ignored)} attached item(s) that did not verify:")
            lines.extend(f"    --  {c.digest[:19]}… {c.check}: {c.detail}" for c in self.ignored)
        return "\n".join(lines)


@dataclass
class _Found:
    """Verified statements and rejected candidates attached to one digest."""

    statements: list[tuple[str, Statement]] = field(default_factory=list)  # (shape, statement)
    links: list[Envelope] = field(default_factory=list)
    rejected: dict[str, list[str]] = field(default_factory=dict)  # predicate type -> reasons

    def reject(self, predicate_type: str, reason: str) -> None:
        self.rejected.setdefault(predicate_type, []).append(reason)


def verify_reference(
    source: ImageSource,
    reference: str,
    *,
    verifier: Verifier,
    policy: Policy,
    default_registry: str | None = None,
) -> VerifyReport:
    """Verify ``reference`` (tag or digest) and return what was checked; raise on failure.

    Everything is read through ``source``: the registry, or a cache that holds the image
    with its signatures.  A reference without a registry uses ``default_registry``.
    """
    from pkgtool import settings
    from pkgtool.oci.reference import parse_reference

    ref = parse_reference(reference, default_registry=default_registry or settings.registry())
    image = Reference(ref.registry, ref.repository)
    root = source.manifest(ref)
    if ref.digest and root.digest != ref.digest:
        raise SignatureError(f"{ref}: the source returned {root.digest}")
    report = VerifyReport(reference=ref.name, root=root.digest, signer=verifier.description, policy=policy.source)
    manifests: list[tuple[str, Descriptor]] = []
    if root.is_index:
        for entry in root.manifests:
            platform = entry.platform
            if entry.media_type not in mediatypes.MANIFEST_TYPES or platform is None or "unknown" in (
                platform.os, platform.architecture
            ):
                continue
            manifests.append((str(platform), entry))
        if not manifests:
            raise SignatureError(f"{ref.name}@{root.digest}: index lists no image manifests")
    else:
        manifests.append(("image", root.descriptor))
    report.manifests = {p: d.digest for p, d in manifests}
    per_arch = {d.digest for _p, d in manifests}
    targets = [root.descriptor, *[d for _p, d in manifests if d.digest != root.digest]]
    key_based = is_key_based(verifier)
    for target in targets:
        found = _verify_digest(source, image, target.digest, verifier=verifier, policy=policy, report=report)
        # Provenance that is there is always held to the policy, required or not.
        if "slsa-provenance" in policy.attestations or _has(found, SLSA_PROVENANCE_V1):
            _check_provenance(target.digest, found, policy=policy, report=report)
        if target.digest in per_arch and "spdx" in policy.attestations:
            _check_sbom(target.digest, found, report=report)
        if target.digest == root.digest and policy.in_toto_required(key_based=key_based):
            _check_in_toto(root.digest, found, policy=policy, report=report)
    return report


def _has(found: _Found, predicate_type: str) -> bool:
    return any(s.predicate_type == predicate_type for _shape, s in found.statements)


# --------------------------------------------------------------------------- per digest


def _verify_digest(
    source: ImageSource, image: Reference, digest: str, *, verifier: Verifier, policy: Policy,
    report: VerifyReport,
) -> _Found:
    found = _Found()
    for data in read_bundles(source, image, digest=digest):
        claimed = _peek_predicate(data)
        try:
            envelope = verifier.verify_bundle(data)
        except SignatureError as exc:
            if _claims_trusted_key(data, verifier):
                # Names our key yet fails: altered after signing, not someone else's.
                raise SignatureError(
                    f"{digest}: attestation check failed: a bundle ({claimed or 'unknown predicate'}) "
                    f"names {verifier.description} but its signature does not verify: the payload was altered"
                ) from None
            found.reject(claimed, f"bundle: {exc}")
            report.ignored.append(Check(digest, f"bundle ({claimed or 'unknown predicate'})", str(exc)))
            continue
        _accept(found, "bundle", envelope, digest, report)
    for layer in read_attestation_layers(source, image, digest=digest):
        claimed = layer.predicate_type or _peek_type(layer.envelope.payload)
        try:
            envelope = verifier.verify_attestation_layer(layer.envelope, layer.annotations)
        except SignatureError as exc:
            found.reject(claimed, f".att: {exc}")
            report.ignored.append(Check(digest, f".att ({claimed or 'unknown predicate'})", str(exc)))
            continue
        _accept(found, ".att", envelope, digest, report)

    if "bundle" in policy.signatures:
        signed = [s for shape, s in found.statements if shape == "bundle" and s.predicate_type == COSIGN_SIGN_PREDICATE_TYPE]
        if not signed:
            reasons = found.rejected.get(COSIGN_SIGN_PREDICATE_TYPE, [])
            raise SignatureError(
                f"{digest}: signature check failed: no Sigstore signature bundle by {verifier.description}"
                + (f" ({'; '.join(reasons)})" if reasons else " (image is unsigned)")
            )
        report.passed(digest, "signature (Sigstore bundle)", f"verified with {verifier.description}")
    if "cosign" in policy.signatures:
        detail = _verify_classic(source, image, digest, verifier=verifier)
        report.passed(digest, "signature (cosign .sig)", detail)
    return found


def _accept(found: _Found, shape: str, envelope: Envelope, digest: str, report: VerifyReport) -> None:
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE:
        report.ignored.append(Check(digest, shape, f"payload type {envelope.payload_type!r} is not in-toto"))
        return
    if is_link_payload(envelope.payload):
        found.links.append(envelope)
        return
    try:
        statement = parse_statement(envelope.payload)
        check_statement_subject(statement, digest)
    except SignatureError as exc:
        found.reject(_peek_type(envelope.payload), f"{shape}: {exc}")
        report.ignored.append(Check(digest, shape, str(exc)))
        return
    found.statements.append((shape, statement))


def _verify_classic(source: ImageSource, image: Reference, digest: str, *, verifier: Verifier) -> str:
    signatures = read_classic_signatures(source, image, digest=digest)
    if not signatures:
        raise SignatureError(f"{digest}: signature check failed: no cosign signature at the .sig tag (image is unsigned)")
    other: str | None = None
    errors: list[str] = []
    for candidate in signatures:
        try:
            verifier.verify_signature_layer(candidate.payload, candidate.signature, candidate.annotations or {})
        except SignatureError as exc:
            errors.append(str(exc))
            continue
        try:
            parsed = parse_simple_signing_payload(candidate.payload)
        except SignatureError as exc:
            errors.append(str(exc))
            continue
        if parsed.manifest_digest == digest:
            return f"verified with {verifier.description} (identity {parsed.docker_reference})"
        other = parsed.manifest_digest
    if other is not None:
        raise SignatureError(
            f"{digest}: signature check failed: the cosign signature by {verifier.description} is over "
            f"another digest ({other})"
        )
    raise SignatureError(
        f"{digest}: signature check failed: none of {len(signatures)} cosign signature(s) verifies "
        f"with {verifier.description} ({errors[0]})"
    )


# --------------------------------------------------------------------------- attestations


def _require(digest: str, found: _Found, predicate_type: str, what: str) -> list[Statement]:
    statements = [s for _shape, s in found.statements if s.predicate_type == predicate_type]
    if statements:
        return statements
    reasons = found.rejected.get(predicate_type, [])
    detail = f"{len(reasons)} rejected: {'; '.join(reasons)}" if reasons else "none attached"
    raise SignatureError(f"{digest}: {what} check failed: no valid {what} attestation ({detail})")


def _check_provenance(digest: str, found: _Found, *, policy: Policy, report: VerifyReport) -> None:
    statements = _require(digest, found, SLSA_PROVENANCE_V1, "provenance")
    seen: set[bytes] = set()
    for statement in statements:
        key = json.dumps(statement.predicate, sort_keys=True).encode()
        if key in seen:
            continue  # the same statement from the referrer and from .att
        seen.add(key)
        facts = read_provenance(statement.predicate)
        where = f"{digest}: provenance check failed"
        if not policy.builder_allowed(facts.builder_id):
            raise SignatureError(f"{where}: builder.id {facts.builder_id!r} is not allowed by {policy.source}")
        if policy.restricts_sources:
            if not facts.source_repository:
                raise SignatureError(f"{where}: no source repository recorded, {policy.source} requires one")
            if not policy.source_allowed(facts.source_repository):
                raise SignatureError(
                    f"{where}: source repository {facts.source_repository!r} is not allowed by {policy.source}"
                )
        if policy.require_revision and not facts.source_revision:
            raise SignatureError(f"{where}: no source revision recorded, {policy.source} requires one")
        for uri, base_digest in facts.base_images:
            name = _base_repository(uri)
            if not base_digest.startswith("sha256:") or len(base_digest) != 71:
                raise SignatureError(f"{where}: base image {uri} is not pinned by digest")
            if not policy.base_image_allowed(name):
                raise SignatureError(f"{where}: base image {name} is not allowed by {policy.source}")
        if digest == report.root and report.provenance is None:
            report.provenance = dict(statement.predicate)
        bases = ", ".join(f"{_base_repository(u)}@{d[:19]}…" for u, d in facts.base_images) or "none"
        report.passed(digest, "provenance (SLSA v1)",
                      f"builder {facts.builder_id}; source {facts.source_repository or '-'}"
                      f"@{facts.source_revision or '-'}; bases {bases}")


def _check_sbom(digest: str, found: _Found, *, report: VerifyReport) -> None:
    statements = _require(digest, found, SPDX_PREDICATE_TYPE, "SBOM")
    count = check_sbom(statements[0].predicate, digest=digest)
    report.passed(digest, "SBOM (SPDX 2.3)", f"{count} package(s)")


def _check_in_toto(digest: str, found: _Found, *, policy: Policy, report: VerifyReport) -> None:
    from pkgtool.sign.intoto import verify_link
    from pkgtool.sign.keys import load_public_key_file

    assert policy.in_toto is not None
    if not found.links:
        reasons = [r for kind in ("link", LINK_PREDICATE_TYPE, LEGACY_LINK_PREDICATE_TYPE)
                   for r in found.rejected.get(kind, [])]
        raise SignatureError(
            f"{digest}: in-toto check failed: no build-step link signed by the trusted signer"
            + (f" ({'; '.join(reasons)})" if reasons else "")
        )
    try:
        layout = policy.in_toto.layout.read_bytes()
    except OSError as exc:
        raise PkgtoolError(f"{policy.in_toto.layout}: cannot read the in-toto layout: {exc.strerror or exc}") from None
    keys = [load_public_key_file(path) for path in policy.in_toto.keys]
    errors = []
    for link in found.links:
        try:
            result = verify_link(layout, keys, link, index_digest=digest, source=str(policy.in_toto.layout))
        except SignatureError as exc:
            errors.append(str(exc))
            continue
        report.passed(digest, "in-toto layout",
                      f"{policy.in_toto.layout} (expires {result.layout_expires}), link by {result.functionary_keyid[:16]}")
        return
    raise SignatureError(f"{digest}: in-toto check failed: {errors[0]}")


# --------------------------------------------------------------------------- helpers


def _claims_trusted_key(bundle: bytes, verifier: Verifier) -> bool:
    from pkgtool.sign.bundle import parse_bundle

    hints = trusted_key_hints(verifier)
    if not hints:
        return False
    try:
        return parse_bundle(bundle).key_hint in hints
    except SignatureError:
        return False


def _base_repository(uri: str) -> str:
    name = uri.removeprefix("oci://").removeprefix("docker://").split("@", 1)[0]
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > last_slash else name


def _peek_predicate(bundle: bytes) -> str:
    """The predicate type an unverified bundle claims (only to attribute rejections)."""
    from pkgtool.sign.signer import bundle_payload

    payload = bundle_payload(bundle)
    return _peek_type(payload) if payload is not None else ""


def _peek_type(payload: bytes) -> str:
    document = object_or_none(payload)
    if document is None:
        return ""
    if document.get("_type") == "link":
        return "link"
    value = document.get("predicateType")
    return value if isinstance(value, str) else ""



def verify_pinned_images(
    source: ImageSource, references: Sequence[str], *, verifier: Verifier, policy: Policy,
    progress: Callable[[str], None] | None = None,
) -> list[VerifyReport]:
    """Verify every (unique) image an OS image YAML pins, before anything is assembled.

    Only digest-pinned references are accepted: verifying a tag would say nothing about
    what a later pull of that tag returns.
    """
    unique = list(dict.fromkeys(references))
    loose = [ref for ref in unique if "@sha256:" not in ref]
    if loose:
        raise SignatureError(
            f"{loose[0]}: not pinned by digest, so it cannot be verified (run `pkgtool image lock` first)"
        )
    reports = []
    for ref in unique:
        if progress:
            progress(f"verifying {ref}")
        reports.append(verify_reference(source, ref, verifier=verifier, policy=policy))
    return reports
