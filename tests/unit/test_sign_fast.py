"""Signing, attesting and verifying over a fake registry: the same code paths the integration
tests drive against Distribution 2.8, in a second, so every change to sign/ gets quick
coverage.  (tests/integration/test_sign_*.py remain the proof against the real registry.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import fakeregistry
import pytest
import signkit

from pkgtool.errors import PkgtoolError
from pkgtool.oci.layout import Layout
from pkgtool.oci.reference import Reference
from pkgtool.oci.registry import RegistryClient
from pkgtool.oci.source import CachedSource
from pkgtool.oci.transfer import pull
from pkgtool.sign import SignatureError
from pkgtool.sign.attach import read_classic_signatures, signature_tag
from pkgtool.sign.policy import load_policy
from pkgtool.sign.provenance import BuildInfo
from pkgtool.sign.publish import sign_package
from pkgtool.sign.verify import verify_reference


@pytest.fixture
def fake() -> Iterator[tuple[RegistryClient, fakeregistry.Store]]:
    with fakeregistry.running() as (address, store), RegistryClient(address, retries=1, backoff=0.01) as client:
        yield client, store


def _signed(client: RegistryClient, trust: signkit.Trust) -> signkit.PushedImage:
    image = signkit.push_image(client, "org/app")
    build = signkit.build_info(registry=client.registry)
    assert isinstance(build, BuildInfo)
    sign_package(client, repository="org/app", index=image.index, manifests=image.manifests,
                 build=build, signer=trust.signer)
    return image


def test_signed_image_verifies_and_signing_again_adds_nothing(
    fake: tuple[RegistryClient, fakeregistry.Store], tmp_path: Path
) -> None:
    client, store = fake
    trust = signkit.make_trust(tmp_path / "trust", client.registry)
    image = _signed(client, trust)
    policy = load_policy(trust.policy_path)
    report = verify_reference(client, f"{client.registry}/{image.reference}", verifier=trust.verifier, policy=policy)
    checks = {(c.digest, c.check) for c in report.checks}
    assert (image.index.digest, "in-toto layout") in checks
    assert all((d.digest, "SBOM (SPDX 2.3)") in checks for d in image.manifests.values())

    manifests_before = dict(store.manifests)
    build = signkit.build_info(registry=client.registry)
    assert isinstance(build, BuildInfo)
    again = sign_package(client, repository="org/app", index=image.index, manifests=image.manifests,
                         build=build, signer=trust.signer)
    assert again.added == 0 and store.manifests == manifests_before


def test_a_cached_copy_verifies_without_the_registry(
    fake: tuple[RegistryClient, fakeregistry.Store], tmp_path: Path
) -> None:
    """Verification reads through an ImageSource: once the image and its signature artifacts
    are in the cache, the cache alone verifies them."""
    client, _store = fake
    trust = signkit.make_trust(tmp_path / "trust", client.registry)
    image = _signed(client, trust)
    cache = Layout(tmp_path / "cache")
    reference = f"{client.registry}/{image.reference}"
    pinned = f"{client.registry}/org/app@{image.index.digest}"
    source = CachedSource(cache, lambda: client)
    online = verify_reference(source, pinned, verifier=trust.verifier, policy=load_policy(trust.policy_path))
    assert online.root == image.index.digest
    pull(client, reference, cache)
    for digest in (image.index.digest, *[d.digest for d in image.manifests.values()]):
        for tag in (signature_tag(digest), f"sha256-{digest[7:]}", f"sha256-{digest[7:]}.att"):
            pull(client, f"{client.registry}/org/app:{tag}", cache)
    offline = CachedSource(cache, None)
    with pytest.raises(PkgtoolError, match="no registry"):
        # Referrers are always asked of the registry: a cache cannot know of later ones.
        verify_reference(offline, pinned, verifier=trust.verifier, policy=load_policy(trust.policy_path))
    report = verify_reference(cache, pinned, verifier=trust.verifier, policy=load_policy(trust.policy_path))
    assert {c.check for c in report.checks} == {c.check for c in online.checks}


def test_a_forged_signature_is_refused(fake: tuple[RegistryClient, fakeregistry.Store], tmp_path: Path) -> None:
    client, _store = fake
    trust = signkit.make_trust(tmp_path / "trust", client.registry)
    image = _signed(client, trust)
    (signature,) = read_classic_signatures(client, Reference(client.registry, "org/app"), digest=image.index.digest)
    other = signkit.make_trust(tmp_path / "other", client.registry)
    with pytest.raises(SignatureError, match="signature check failed"):
        verify_reference(client, f"{client.registry}/{image.reference}", verifier=other.verifier,
                         policy=load_policy(other.policy_path))
    assert signature.payload  # the image was signed, by someone else's key
