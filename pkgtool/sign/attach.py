"""Store signatures next to an image in a registry, the ways cosign does.

Three shapes, all keyed by the signed manifest's digest ``sha256:<hex>``:

* **Classic signature** at tag ``sha256-<hex>.sig``: an OCI manifest with one layer per
  signature.  The layer blob is the simple-signing payload
  (``application/vnd.dev.cosign.simplesigning.v1+json``) and its annotation
  ``dev.cosignproject.cosign/signature`` holds base64(DER ECDSA signature over the blob).
* **Classic attestation** at tag ``sha256-<hex>.att``: the same, but each layer blob is a
  DSSE envelope (``application/vnd.dsse.envelope.v1+json``), annotated with its
  ``predicateType`` and an empty ``dev.cosignproject.cosign/signature``.
* **Sigstore bundle** as an OCI 1.1 referrer: a manifest whose ``artifactType`` is the
  bundle media type, with the empty config, the bundle as its one layer and ``subject``
  pointing at the image.  It is found through the referrers API or, on registries without
  one (Distribution 2.8), through the fallback index at tag ``sha256-<hex>``.

Adding a signature is a read-modify-write of the tag: existing layers are kept (other
signers' signatures survive), and adding the same signature twice is a no-op.  Like cosign,
two writers racing on one tag can lose an update; pkgtool signs each digest from one job.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pkgtool.errors import DigestMismatchError, PkgtoolError
from pkgtool.jsonio import hashed_json
from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor, check_digest, sha256_digest
from pkgtool.oci.reference import Reference
from pkgtool.oci.source import ImageSource, manifest_or_none, read_blob
from pkgtool.sign import SignatureError
from pkgtool.sign.bundle import BUNDLE_MEDIA_TYPE
from pkgtool.sign.dsse import ENVELOPE_MEDIA_TYPE, Envelope, verify_bytes
from pkgtool.sign.keys import PrivateKey, PublicKey, public_key_hint
from pkgtool.sign.payloads import (
    SIMPLE_SIGNING_MEDIA_TYPE,
    parse_simple_signing_payload,
    simple_signing_payload,
)

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PREDICATE_TYPE_ANNOTATION = "predicateType"
BUNDLE_CONTENT_ANNOTATION = "dev.sigstore.bundle.content"
BUNDLE_PREDICATE_TYPE_ANNOTATION = "dev.sigstore.bundle.predicateType"
# What cosign 3 records as the predicate of a plain "this image is signed" bundle.
COSIGN_SIGN_PREDICATE_TYPE = "https://sigstore.dev/cosign/sign/v1"

EMPTY_CONFIG = b"{}"
EMPTY_CONFIG_DESCRIPTOR = Descriptor.for_bytes(mediatypes.OCI_EMPTY, EMPTY_CONFIG)

# Signature and attestation layers are small; an SBOM attestation can be large.
MAX_SIGNATURE_LAYER_BYTES = 128 * 1024 * 1024


def signature_tag(digest: str) -> str:
    return _digest_tag(digest) + ".sig"


def attestation_tag(digest: str) -> str:
    return _digest_tag(digest) + ".att"



def _digest_tag(digest: str) -> str:
    return check_digest(digest).replace(":", "-", 1)


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class Artifact:
    """A manifest plus the blobs it needs, ready to push (blobs first)."""

    manifest: bytes
    blobs: tuple[bytes, ...]
    media_type: str = mediatypes.OCI_MANIFEST
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None

    @property
    def descriptor(self) -> Descriptor:
        return Descriptor.for_bytes(
            self.media_type, self.manifest,
            artifact_type=self.artifact_type, annotations=self.annotations,
        )


def cosign_layers_manifest(layers: Sequence[Descriptor]) -> tuple[bytes, bytes]:
    """(manifest, config) for a cosign ``.sig``/``.att`` image holding ``layers``.

    The config is the one go-containerregistry writes for an empty image with layers
    appended (zero timestamps, one history entry per layer): nothing in it varies, so the
    same signatures always give the same manifest digest.
    """
    config = hashed_json({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [layer.digest for layer in layers]},
    })
    manifest = hashed_json({
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "config": Descriptor.for_bytes(mediatypes.OCI_CONFIG, config).to_json(),
        "layers": [_layer_json(layer) for layer in layers],
    })
    return manifest, config


def _layer_json(layer: Descriptor) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}
    # Unlike Descriptor.to_json, keep annotations whose value is "" (cosign's .att layers).
    if layer.annotations is not None:
        out["annotations"] = dict(sorted(layer.annotations.items()))
    return out


def signature_layer(
    payload: bytes, signature: bytes, *, annotations: Mapping[str, str] | None = None
) -> Descriptor:
    """A ``.sig`` layer; ``annotations`` adds e.g. a keyless signer's certificate."""
    return Descriptor.for_bytes(
        SIMPLE_SIGNING_MEDIA_TYPE, payload,
        annotations={**(annotations or {}), SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()},
    )


def attestation_layer(
    envelope_json: bytes, *, predicate_type: str, annotations: Mapping[str, str] | None = None
) -> Descriptor:
    return Descriptor.for_bytes(
        ENVELOPE_MEDIA_TYPE, envelope_json,
        annotations={
            **(annotations or {}),
            PREDICATE_TYPE_ANNOTATION: predicate_type, SIGNATURE_ANNOTATION: "",
        },
    )


def bundle_referrer(
    bundle: bytes, *, subject: Descriptor, predicate_type: str, created: str | None = None
) -> Artifact:
    """The OCI 1.1 referrer manifest that carries a Sigstore bundle about ``subject``.

    ``created`` (RFC 3339) is recorded as ``org.opencontainers.image.created`` when given;
    it is left out by default so the manifest is a pure function of the bundle.
    """
    annotations = {
        BUNDLE_CONTENT_ANNOTATION: "dsse-envelope",
        BUNDLE_PREDICATE_TYPE_ANNOTATION: predicate_type,
    }
    if created:
        annotations["org.opencontainers.image.created"] = created
    layer = Descriptor.for_bytes(BUNDLE_MEDIA_TYPE, bundle)
    manifest = hashed_json({
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "artifactType": BUNDLE_MEDIA_TYPE,
        "config": EMPTY_CONFIG_DESCRIPTOR.to_json(),
        "layers": [layer.to_json()],
        "subject": Descriptor(subject.media_type, subject.digest, subject.size).to_json(),
        "annotations": annotations,
    })
    return Artifact(
        manifest, (EMPTY_CONFIG, bundle),
        artifact_type=BUNDLE_MEDIA_TYPE, annotations=annotations,
    )


# --------------------------------------------------------------------------- registry side


if TYPE_CHECKING:
    from pkgtool.oci.registry import RegistryClient
    from pkgtool.sign.signer import Signer


def sign_image(
    client: RegistryClient, *, repository: str, docker_reference: str, digest: str, key: PrivateKey
) -> Descriptor:
    """Sign ``digest`` the classic cosign way with ``key`` and attach it at ``sha256-<hex>.sig``."""
    from pkgtool.sign.signer import KeySigner

    descriptor, _added = attach_signature(
        client, repository=repository, docker_reference=docker_reference, digest=digest,
        signer=KeySigner(key),
    )
    return descriptor


def attach_signature(
    client: RegistryClient, *, repository: str, docker_reference: str, digest: str, signer: Signer
) -> tuple[Descriptor, bool]:
    """Sign ``digest`` the classic cosign way and attach it at ``sha256-<hex>.sig``.

    Returns the signature manifest's descriptor and whether a new layer was added (False
    when this signer had already signed these payload bytes).
    """
    payload = simple_signing_payload(docker_reference=docker_reference, manifest_digest=digest)

    # ECDSA signatures are randomised, so "already signed" means: a layer with these exact
    # payload bytes that this signer made (cosign's dupe detection).
    def already_signed(existing: Descriptor) -> bool:
        if existing.digest != sha256_digest(payload):
            return False
        annotations = existing.annotations or {}
        try:
            signature = base64.b64decode(annotations.get(SIGNATURE_ANNOTATION, ""), validate=True)
        except binascii.Error:
            return False
        return signer.owns_signature(payload, signature, annotations)

    tag = signature_tag(digest)
    if any(already_signed(layer) for layer in _existing_layers(client, Reference(client.registry, repository), tag)):
        return _current_descriptor(client, repository, tag), False
    signed = signer.sign_simple_signing(payload)
    layer = signature_layer(payload, signed.signature, annotations=signed.annotations)
    return _append_layer(client, repository, tag, layer, payload), True


def attach_attestation(
    client: RegistryClient,
    *,
    repository: str,
    digest: str,
    envelope: Envelope,
    predicate_type: str,
    annotations: Mapping[str, str] | None = None,
) -> Descriptor:
    """Attach a signed DSSE envelope the classic cosign way, at ``sha256-<hex>.att``."""
    check_digest(digest)
    blob = envelope.to_json()
    layer = attestation_layer(blob, predicate_type=predicate_type, annotations=annotations)
    return _append_layer(client, repository, attestation_tag(digest), layer, blob)


def attach_bundle(
    client: RegistryClient, *, repository: str, subject: Descriptor, bundle: bytes, predicate_type: str
) -> Descriptor:
    """Push a Sigstore bundle as an OCI 1.1 referrer of ``subject``; return its descriptor."""
    artifact = bundle_referrer(bundle, subject=subject, predicate_type=predicate_type)
    for blob in artifact.blobs:
        client.push_blob_bytes(repository, blob)
    descriptor = artifact.descriptor
    client.put_manifest(repository, descriptor.digest, artifact.manifest, artifact.media_type)
    # Registries with the referrers API index the subject themselves; the client keeps the
    # fallback tag up to date where they do not.
    client.add_referrer(repository, subject, descriptor)
    return descriptor


def _append_layer(
    client: RegistryClient, repository: str, tag: str, layer: Descriptor, blob: bytes
) -> Descriptor:
    layers = _existing_layers(client, Reference(client.registry, repository), tag)
    if not any(_same_layer(existing, layer) for existing in layers):
        client.push_blob_bytes(repository, blob)
        layers.append(layer)
    manifest, config = cosign_layers_manifest(layers)
    client.push_blob_bytes(repository, config)
    client.put_manifest(repository, tag, manifest, mediatypes.OCI_MANIFEST)
    return Descriptor.for_bytes(mediatypes.OCI_MANIFEST, manifest)


def _current_descriptor(client: RegistryClient, repository: str, tag: str) -> Descriptor:
    found = manifest_or_none(client, Reference(client.registry, repository, tag=tag))
    if found is None:
        raise PkgtoolError(f"{repository}:{tag} disappeared while signing")
    return Descriptor.for_bytes(mediatypes.OCI_MANIFEST, found.data)


def _existing_layers(source: ImageSource, image: Reference, tag: str) -> list[Descriptor]:
    """The layers of the cosign manifest at ``tag`` of ``image``'s repository ([] if none)."""
    try:
        found = manifest_or_none(source, image.with_tag(tag))
    except PkgtoolError as exc:
        raise PkgtoolError(f"{image.name}:{tag} exists but is not a cosign signature manifest ({exc}); "
                           "refusing to use or overwrite it") from None
    if found is None:
        return []
    if found.is_index:
        raise PkgtoolError(f"{image.name}:{tag} exists but is not a cosign signature manifest; "
                           "refusing to use or overwrite it")
    return list(found.layers)


def _same_layer(a: Descriptor, b: Descriptor) -> bool:
    return a.digest == b.digest and (a.annotations or {}).get(SIGNATURE_ANNOTATION) == (
        b.annotations or {}
    ).get(SIGNATURE_ANNOTATION)


# --------------------------------------------------------------------------- reading back


@dataclass(frozen=True)
class ClassicSignature:
    payload: bytes
    signature: bytes
    annotations: dict[str, str] | None = None


def read_classic_signatures(source: ImageSource, image: Reference, *, digest: str) -> list[ClassicSignature]:
    """Every simple-signing layer at ``sha256-<hex>.sig`` in ``image``'s repository, blobs
    digest-checked by the source."""
    result = []
    for layer in _existing_layers(source, image, signature_tag(digest)):
        if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE:
            continue
        encoded = (layer.annotations or {}).get(SIGNATURE_ANNOTATION, "")
        try:
            signature = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            continue  # a malformed layer proves nothing; deny-by-default happens below
        payload = _layer_bytes(source, image, layer, what="signature layer")
        result.append(ClassicSignature(payload, signature, dict(layer.annotations or {})))
    return result


def verify_classic_signature(
    signatures: Sequence[ClassicSignature], key: PublicKey, *, digest: str
) -> ClassicSignature:
    """The first signature by ``key`` whose payload names ``digest``; raise if there is none."""
    if not signatures:
        raise SignatureError(f"{digest}: no cosign signatures found (image is unsigned)")
    other_digest = False
    for candidate in signatures:
        if not verify_bytes(key, candidate.payload, candidate.signature):
            continue
        try:
            parsed = parse_simple_signing_payload(candidate.payload)
        except SignatureError:
            continue
        if parsed.manifest_digest == digest:
            return candidate
        other_digest = True
    if other_digest:
        raise SignatureError(
            f"{digest}: cosign signature by key {public_key_hint(key)} is for another digest"
        )
    raise SignatureError(
        f"{digest}: none of {len(signatures)} cosign signature(s) verifies with key "
        f"{public_key_hint(key)}"
    )


@dataclass(frozen=True)
class AttestationLayer:
    envelope: Envelope
    annotations: dict[str, str]

    @property
    def predicate_type(self) -> str:
        return self.annotations.get(PREDICATE_TYPE_ANNOTATION, "")


def read_attestation_layers(source: ImageSource, image: Reference, *, digest: str) -> list[AttestationLayer]:
    """Every DSSE envelope at ``sha256-<hex>.att`` with its layer annotations (unverified)."""
    found = []
    for layer in _existing_layers(source, image, attestation_tag(digest)):
        if layer.media_type != ENVELOPE_MEDIA_TYPE:
            continue
        blob = _layer_bytes(source, image, layer, what="attestation layer")
        found.append(AttestationLayer(Envelope.from_json(blob), dict(layer.annotations or {})))
    return found


def read_attestations(source: ImageSource, image: Reference, *, digest: str) -> list[Envelope]:
    """Every DSSE envelope at ``sha256-<hex>.att`` (unverified: pass them to dsse.verify)."""
    return [found.envelope for found in read_attestation_layers(source, image, digest=digest)]


def read_bundles(source: ImageSource, image: Reference, *, digest: str) -> list[bytes]:
    """The Sigstore bundles attached to ``digest`` as referrers (unverified bundle JSON)."""
    bundles = []
    for referrer in source.referrers(image.with_digest(digest), artifact_type=BUNDLE_MEDIA_TYPE):
        try:
            manifest = manifest_or_none(source, image.with_digest(referrer.digest))
        except PkgtoolError as exc:
            raise SignatureError(f"referrer manifest {referrer.digest} is malformed ({exc})") from None
        if manifest is None:
            continue  # listed but deleted since: nothing to verify
        if manifest.subject is None or manifest.is_index:
            raise SignatureError(f"referrer manifest {referrer.digest} is malformed (no subject)")
        if manifest.subject.digest != digest:
            # A referrers index may be stale or forged; the manifest's own subject decides.
            continue
        for layer in manifest.layers:
            if layer.media_type == BUNDLE_MEDIA_TYPE:
                bundles.append(_layer_bytes(source, image, layer, what="bundle blob"))
    return bundles


def _layer_bytes(source: ImageSource, image: Reference, layer: Descriptor, *, what: str) -> bytes:
    """A signature, attestation or bundle blob, size-bounded and checked against its digest."""
    try:
        return read_blob(source, image, layer, max_size=MAX_SIGNATURE_LAYER_BYTES)
    except DigestMismatchError:
        raise SignatureError(f"{what} {layer.digest} does not match its digest") from None
