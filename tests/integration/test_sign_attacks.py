"""Bad input and attacks against signed images in the real registry: each is rejected, and
the message names the failed check (and the digest).

The attacker here can write to the registry (push tags, blobs and manifests) but has no
trusted key: that is the threat signatures exist for.
"""

from __future__ import annotations

import base64
import datetime
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import signkit
from test_sign_publish import PASSWORD, Trust, _build, _cli, make_trust

from pkgtool.oci import mediatypes
from pkgtool.oci.descriptor import Descriptor
from pkgtool.oci.reference import Reference
from pkgtool.oci.referrers import fallback_tag
from pkgtool.oci.registry import RegistryClient
from pkgtool.sign import SignatureError, keys
from pkgtool.sign.attach import (
    attach_attestation,
    attach_bundle,
    attestation_tag,
    read_attestation_layers,
    read_bundles,
    signature_tag,
)
from pkgtool.sign.dsse import Envelope
from pkgtool.sign.policy import Policy, load_policy
from pkgtool.sign.provenance import SLSA_PROVENANCE_V1
from pkgtool.sign.publish import sign_package, sign_reference
from pkgtool.sign.signer import KeySigner, bundle_payload
from pkgtool.sign.verify import verify_reference

pytestmark = pytest.mark.integration


@pytest.fixture
def client(registry: str) -> Iterator[RegistryClient]:
    with RegistryClient(registry) as c:
        yield c


@pytest.fixture
def trust(tmp_path: Path, registry: str) -> Trust:
    return make_trust(tmp_path / "trust", registry)


def _signed(client: RegistryClient, registry: str, repository: str, trust: Trust, *, tag: str = "v1",
            arches: tuple[str, ...] = ("amd64",), **build: object) -> signkit.PushedImage:
    image = signkit.push_image(client, repository, tag=tag, arches=arches,
                               created=f"2024-01-01T00:00:{sum(tag.encode()) % 60:02d}Z")
    sign_package(client, repository=repository, index=image.index, manifests=image.manifests,
                 build=_build(registry, **build), signer=trust.signer)
    return image


def _verify(client: RegistryClient, registry: str, image: signkit.PushedImage, trust: Trust,
            policy: Policy | None = None) -> None:
    verify_reference(client, f"{registry}/{image.repository}@{image.index.digest}",
                     verifier=trust.verifier, policy=policy or load_policy(trust.policy_path))


def test_unsigned_image_is_denied(client: RegistryClient, registry: str, unique_repo: str, trust: Trust) -> None:
    image = signkit.push_image(client, unique_repo)
    with pytest.raises(SignatureError, match=re.escape(
            f"{image.index.digest}: signature check failed: no Sigstore signature bundle by key "
            f"{keys.public_key_hint(trust.key)} (image is unsigned)")):
        _verify(client, registry, image, trust)
    only_cosign = Policy(source="test", signatures=("cosign",), attestations=())
    with pytest.raises(SignatureError, match=r"no cosign signature at the \.sig tag"):
        _verify(client, registry, image, trust, only_cosign)


def test_signature_by_another_key(client: RegistryClient, registry: str, unique_repo: str, trust: Trust,
                                  tmp_path: Path) -> None:
    image = _signed(client, registry, unique_repo, trust)
    other = make_trust(tmp_path / "other", registry)
    with pytest.raises(SignatureError, match=re.escape(
            f"{image.index.digest}: signature check failed: no Sigstore signature bundle by key "
            f"{keys.public_key_hint(other.key)} (bundle: bundle was signed by key {keys.public_key_hint(trust.key)}, "
            f"not by the given key {keys.public_key_hint(other.key)}")):
        _verify(client, registry, image, other)
    only_cosign = Policy(source="test", signatures=("cosign",), attestations=())
    with pytest.raises(SignatureError, match=r"none of 1 cosign signature\(s\) verifies with key"):
        _verify(client, registry, image, other, only_cosign)
    # The CLI says the same on one line and exits 1.
    result = _cli("verify", f"{registry}/{image.reference}", "--key", str(other.pub_path), password=None)
    assert result.returncode == 1
    assert result.stderr.startswith(f"pkgtool: error: {image.index.digest}: signature check failed")
    assert result.stderr.count("\n") == 1


def test_signature_over_a_different_digest(client: RegistryClient, registry: str, unique_repo: str,
                                           trust: Trust) -> None:
    good = _signed(client, registry, unique_repo, trust, tag="good")
    evil = signkit.push_image(client, unique_repo, tag="evil", created="2024-06-06T00:00:00Z")
    # Replay the good image's cosign signature manifest under the evil image's .sig tag ...
    sig = client.get_manifest(unique_repo, signature_tag(good.index.digest))
    client.put_manifest(unique_repo, signature_tag(evil.index.digest), sig.data, sig.media_type)
    only_cosign = Policy(source="test", signatures=("cosign",), attestations=())
    with pytest.raises(SignatureError, match=re.escape(
            f"{evil.index.digest}: signature check failed: the cosign signature by key "
            f"{keys.public_key_hint(trust.key)} is over another digest ({good.index.digest})")):
        _verify(client, registry, evil, trust, only_cosign)
    # ... and its signature bundle as a referrer of the evil image.
    (bundle,) = [b for b in read_bundles(client, Reference(client.registry, unique_repo), digest=good.index.digest)
                 if b"cosign/sign/v1" in (bundle_payload(b) or b"")]
    attach_bundle(client, repository=unique_repo, subject=evil.index, bundle=bundle,
                  predicate_type="https://sigstore.dev/cosign/sign/v1")
    with pytest.raises(SignatureError, match=re.escape(
            f"{evil.index.digest}: signature check failed: no Sigstore signature bundle by key "
            f"{keys.public_key_hint(trust.key)} (bundle: attestation (https://sigstore.dev/cosign/sign/v1) "
            f"is about {good.index.digest}, not about {evil.index.digest})")):
        _verify(client, registry, evil, trust)


def _tamper(envelope: Envelope) -> Envelope:
    statement = json.loads(envelope.payload)
    statement["predicate"]["runDetails"]["builder"]["id"] = "https://pkgtool.dev/builders/test"
    statement["predicate"]["buildDefinition"]["externalParameters"]["source"]["repository"] = "https://github.com/pkgtool/pkgtool"
    statement["predicate"]["buildDefinition"]["resolvedDependencies"][1]["digest"]["sha256"] = "66" * 32
    return Envelope(envelope.payload_type, json.dumps(statement).encode(), envelope.signatures)


def test_tampered_attestation_payload(client: RegistryClient, registry: str, unique_repo: str,
                                      trust: Trust) -> None:
    image = _signed(client, registry, unique_repo, trust)
    digest = image.index.digest
    (provenance,) = [layer for layer in read_attestation_layers(client, Reference(client.registry, unique_repo), digest=digest)
                     if layer.predicate_type == SLSA_PROVENANCE_V1]
    tampered = _tamper(provenance.envelope)

    # A .att layer whose payload was changed after signing does not count ...
    client.put_manifest(unique_repo, attestation_tag(digest), *_att_manifest(client, unique_repo, tampered))
    _drop_referrers(client, unique_repo, digest, keep="cosign/sign/v1")
    with pytest.raises(SignatureError, match=re.escape(
            f"{digest}: provenance check failed: no valid provenance attestation (1 rejected: .att: no DSSE "
            f"signature verifies with key {keys.public_key_hint(trust.key)}")):
        _verify(client, registry, image, trust)

    # ... and a bundle that names the trusted key but fails is an alteration, never "someone else's".
    document = json.loads(_signed_bundle_for(trust, provenance.envelope))
    document["dsseEnvelope"]["payload"] = base64.b64encode(tampered.payload).decode()
    attach_bundle(client, repository=unique_repo, subject=image.index, bundle=json.dumps(document).encode(),
                  predicate_type=SLSA_PROVENANCE_V1)
    with pytest.raises(SignatureError, match=re.escape(
            f"{digest}: attestation check failed: a bundle ({SLSA_PROVENANCE_V1}) names key "
            f"{keys.public_key_hint(trust.key)} but its signature does not verify: the payload was altered")):
        _verify(client, registry, image, trust)


def _signed_bundle_for(trust: Trust, envelope: Envelope) -> bytes:
    return trust.signer.sign_statement(envelope.payload).bundle


def _att_manifest(client: RegistryClient, repository: str, envelope: Envelope) -> tuple[bytes, str]:
    from pkgtool.sign.attach import attestation_layer, cosign_layers_manifest

    blob = envelope.to_json()
    client.push_blob_bytes(repository, blob)
    manifest, config = cosign_layers_manifest([attestation_layer(blob, predicate_type=SLSA_PROVENANCE_V1)])
    client.push_blob_bytes(repository, config)
    return manifest, mediatypes.OCI_MANIFEST


def _drop_referrers(client: RegistryClient, repository: str, digest: str, *, keep: str) -> None:
    """Rewrite the fallback referrers index keeping only bundles whose statement mentions ``keep``."""
    from pkgtool.oci.manifest import build_index

    index = client.get_manifest(repository, fallback_tag(digest))
    kept = [m for m in index.manifests if keep in (m.annotations or {}).get("dev.sigstore.bundle.predicateType", "")]
    client.put_manifest(repository, fallback_tag(digest), build_index(kept), mediatypes.OCI_INDEX)


def test_provenance_whose_subject_is_another_image(client: RegistryClient, registry: str, unique_repo: str,
                                                   trust: Trust) -> None:
    good = _signed(client, registry, unique_repo, trust, tag="good")
    evil = signkit.push_image(client, unique_repo, tag="evil", arches=("amd64",), created="2024-07-07T00:00:00Z")
    sign_reference(client, f"{registry}/{evil.reference}", signer=trust.signer)  # signed, but no provenance
    (provenance,) = [layer for layer in read_attestation_layers(client, Reference(client.registry, unique_repo), digest=good.index.digest)
                     if layer.predicate_type == SLSA_PROVENANCE_V1]
    attach_attestation(client, repository=unique_repo, digest=evil.index.digest, envelope=provenance.envelope,
                       predicate_type=SLSA_PROVENANCE_V1)
    policy = Policy(source="test", attestations=("slsa-provenance",))
    with pytest.raises(SignatureError, match=re.escape(
            f"{evil.index.digest}: provenance check failed: no valid provenance attestation (1 rejected: .att: "
            f"attestation ({SLSA_PROVENANCE_V1}) is about ")) as caught:
        _verify(client, registry, evil, trust, policy)
    assert f"not about {evil.index.digest}" in str(caught.value)


def test_expired_in_toto_layout(client: RegistryClient, registry: str, unique_repo: str, tmp_path: Path) -> None:
    expired = make_trust(tmp_path / "expired", registry,
                         layout_expires=datetime.datetime(2021, 6, 1, tzinfo=datetime.UTC))
    image = _signed(client, registry, unique_repo, expired)
    with pytest.raises(SignatureError, match=re.escape(
            f"{image.index.digest}: in-toto check failed: {expired.directory}/root.layout: layout expired on 2021-06-01")):
        _verify(client, registry, image, expired)


def test_mismatched_in_toto_layout(client: RegistryClient, registry: str, unique_repo: str, tmp_path: Path) -> None:
    # The layout authorises some other functionary, not the key that signed the link.
    mismatched = make_trust(tmp_path / "mismatched", registry, functionary=keys.generate_keypair())
    image = _signed(client, registry, unique_repo, mismatched)
    with pytest.raises(SignatureError, match=re.escape(f"{image.index.digest}: in-toto check failed: ")
                       + ".*which the layout does not authorise for step 'build'"):
        _verify(client, registry, image, mismatched)
    # A layout signed by another owner than the policy's layout key.
    trust = make_trust(tmp_path / "t", registry)
    (trust.directory / "layout.pub").write_bytes(keys.public_key_pem(keys.generate_keypair()))
    image = _signed(client, registry, unique_repo, trust, tag="v2")
    with pytest.raises(SignatureError, match=r"in-toto check failed: .*layout signature does not verify"):
        _verify(client, registry, image, trust)


@pytest.mark.parametrize(("build", "message"), [
    ({"builder": "https://evil.example/ci"}, "builder.id 'https://evil.example/ci' is not allowed by"),
    ({"source": "https://github.com/evil/pkgtool"}, "source repository 'https://github.com/evil/pkgtool' is not allowed"),
    ({"source": None}, "no source repository recorded"),
    ({"base": "docker.io/library/alpine:3"}, "base image docker.io/library/alpine is not allowed by"),
])
def test_provenance_that_breaks_the_policy(client: RegistryClient, registry: str, unique_repo: str, trust: Trust,
                                           build: dict[str, object], message: str) -> None:
    image = _signed(client, registry, unique_repo, trust, **build)
    with pytest.raises(SignatureError, match=re.escape(f"{image.index.digest}: provenance check failed: {message}")):
        _verify(client, registry, image, trust)


def test_wrong_password_and_truncated_key(registry: str, unique_repo: str, trust: Trust, client: RegistryClient,
                                          tmp_path: Path) -> None:
    image = signkit.push_image(client, unique_repo, arches=("amd64",))
    ref = f"{registry}/{image.reference}"
    wrong = _cli("sign", ref, "--key", str(trust.key_path), password="not the password")
    assert wrong.returncode == 1
    assert wrong.stderr == f"pkgtool: error: {trust.key_path}: wrong password or corrupted key\n"
    truncated = tmp_path / "truncated.key"
    truncated.write_bytes(trust.key_path.read_bytes()[:200])
    cut = _cli("sign", ref, "--key", str(truncated))
    assert cut.returncode == 1
    assert cut.stderr == f"pkgtool: error: {truncated}: truncated or corrupted key file (no PEM END line)\n"
    assert client.head_manifest(unique_repo, signature_tag(image.index.digest)) is None  # nothing was attached


def test_nothing_secret_is_printed_or_attached(registry: str, unique_repo: str, trust: Trust,
                                               client: RegistryClient) -> None:
    image = signkit.push_image(client, unique_repo, arches=("amd64",))
    key = trust.key
    token = "ghp_0123456789SECRETSECRET"
    sign_package(client, repository=unique_repo, index=image.index, manifests=image.manifests,
                 build=_build(registry, build_args={"GITHUB_TOKEN": token, "VERSION": "1"},
                              source_repository=f"https://x-access-token:{token}@github.com/pkgtool/pkgtool"),
                 signer=KeySigner(key))
    cli = _cli("sign", f"{registry}/{image.reference}", "--key", str(trust.key_path))
    assert cli.returncode == 0, cli.stderr
    secrets = [PASSWORD.encode(), token.encode(), trust.key_path.read_bytes(),
               key.private_bytes(*_pkcs8()), _pem_body(key)]
    for stream in (cli.stdout, cli.stderr):
        assert all(secret.decode(errors="ignore") not in stream for secret in secrets)
    for blob in _everything_attached(client, unique_repo, [image.index.digest, image.manifests["amd64"].digest]):
        for secret in secrets:
            assert secret not in blob
            assert base64.b64encode(secret) not in blob


def _pkcs8() -> tuple[object, object, object]:
    from cryptography.hazmat.primitives import serialization

    return serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()


def _pem_body(key: keys.PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return b"".join(pem.splitlines()[1:-1])


def _everything_attached(client: RegistryClient, repository: str, digests: list[str]) -> Iterator[bytes]:
    """Every manifest and blob reachable from the signature, attestation and referrer tags."""
    for digest in digests:
        for tag in (signature_tag(digest), attestation_tag(digest), fallback_tag(digest)):
            manifest = client.get_manifest_or_none(repository, tag)
            if manifest is None:
                continue
            yield manifest.data
            children: list[Descriptor] = list(manifest.manifests) or manifest.children()
            for child in children:
                if child.media_type in mediatypes.ALL_MANIFEST_TYPES:
                    referrer = client.get_manifest(repository, child.digest)
                    yield referrer.data
                    for blob in referrer.children():
                        yield client.get_blob_bytes(repository, blob.digest, max_size=64 << 20)
                else:
                    yield client.get_blob_bytes(repository, child.digest, max_size=64 << 20)
