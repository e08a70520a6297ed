"""Sign, attest and verify real multi-arch images in the stack's registry (Distribution 2.8).

Every test pushes its own image to a fresh repository and makes its own keys, layout and
policy in a tmp dir; none uses the project's signing/ keys.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import signkit

from pkgtool.oci import mediatypes
from pkgtool.oci.reference import Reference
from pkgtool.oci.referrers import fallback_tag
from pkgtool.oci.registry import RegistryClient
from pkgtool.sign import keys
from pkgtool.sign.attach import (
    attestation_tag,
    read_attestation_layers,
    signature_tag,
)
from pkgtool.sign.bundle import BUNDLE_MEDIA_TYPE
from pkgtool.sign.policy import Policy, load_policy
from pkgtool.sign.provenance import SLSA_PROVENANCE_V1, BuildInfo
from pkgtool.sign.publish import sign_package, sign_reference
from pkgtool.sign.sbom import SPDX_PREDICATE_TYPE
from pkgtool.sign.verify import verify_reference

pytestmark = pytest.mark.integration

PASSWORD = signkit.PASSWORD
Trust = signkit.Trust
make_trust = signkit.make_trust


@pytest.fixture
def client(registry: str) -> Iterator[RegistryClient]:
    with RegistryClient(registry) as c:
        yield c


@pytest.fixture
def trust(tmp_path: Path, registry: str) -> Trust:
    return make_trust(tmp_path / "trust", registry)


def _build(registry: str, **overrides: Any) -> BuildInfo:
    info = signkit.build_info(registry=registry, **overrides)
    assert isinstance(info, BuildInfo)
    return info


def _cli(*args: str, password: str | None = PASSWORD, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("PKGTOOL_PASSWORD", "COSIGN_PASSWORD")}
    if password is not None:
        environment["PKGTOOL_PASSWORD"] = password
    environment.update(env)
    return subprocess.run(["pkgtool", *args], capture_output=True, text=True, env=environment,
                          timeout=300, check=False, stdin=subprocess.DEVNULL)


def _registry_state(client: RegistryClient, repository: str, digests: list[str]) -> dict[str, str | None]:
    state: dict[str, str | None] = {}
    for digest in digests:
        for tag in (signature_tag(digest), attestation_tag(digest), fallback_tag(digest)):
            found = client.head_manifest(repository, tag)
            state[tag] = found.digest if found else None
    return state


def test_sign_package_attaches_everything_once(client: RegistryClient, registry: str, unique_repo: str,
                                               trust: Trust) -> None:
    image = signkit.push_image(client, unique_repo)
    digests = [image.index.digest, *[d.digest for d in image.manifests.values()]]
    report = sign_package(client, repository=unique_repo, index=image.index, manifests=image.manifests,
                          build=_build(registry), signer=trust.signer)
    assert report.signer == f"key {keys.public_key_hint(trust.key)}"
    assert report.manifests == {"linux/amd64": image.manifests["amd64"].digest,
                                "linux/arm64": image.manifests["arm64"].digest}
    kinds = sorted((a.digest == image.index.digest, a.kind, a.shape) for a in report.attached)
    # index: signature, signature bundle, provenance x2 shapes, link x2; each arch: + SBOM x2.
    assert kinds.count((True, "in-toto-link", "referrer")) == 1
    assert kinds.count((False, "sbom", "cosign-att")) == 2
    assert all(a.added for a in report.attached)

    # Distribution 2.8: referrers through the fallback index, one entry per referrer.
    index = client.get_manifest(unique_repo, fallback_tag(image.index.digest))
    assert all(m.artifact_type == BUNDLE_MEDIA_TYPE for m in index.manifests)
    assert len(index.manifests) == 3  # signature, provenance, link
    arm = image.manifests["arm64"].digest
    assert len(client.get_manifest(unique_repo, fallback_tag(arm)).manifests) == 3  # signature, provenance, SBOM
    att = {layer.predicate_type for layer in read_attestation_layers(client, Reference(client.registry, unique_repo), digest=arm)}
    assert att == {SLSA_PROVENANCE_V1, SPDX_PREDICATE_TYPE}
    assert len(client.get_manifest(unique_repo, signature_tag(arm)).layers) == 1

    before = _registry_state(client, unique_repo, digests)
    again = sign_package(client, repository=unique_repo, index=image.index, manifests=image.manifests,
                         build=_build(registry), signer=trust.signer)
    assert again.added == 0 and len(again.attached) == len(report.attached)
    assert _registry_state(client, unique_repo, digests) == before


def test_signed_package_verifies_against_policy_and_layout(client: RegistryClient, registry: str,
                                                          unique_repo: str, trust: Trust) -> None:
    image = signkit.push_image(client, unique_repo)
    sign_package(client, repository=unique_repo, index=image.index, manifests=image.manifests,
                 build=_build(registry), signer=trust.signer)
    report = verify_reference(client, f"{registry}/{image.reference}", verifier=trust.verifier,
                              policy=load_policy(trust.policy_path))
    checks = {(c.digest, c.check) for c in report.checks}
    for digest in (image.index.digest, *[d.digest for d in image.manifests.values()]):
        assert (digest, "signature (Sigstore bundle)") in checks
        assert (digest, "signature (cosign .sig)") in checks
        assert (digest, "provenance (SLSA v1)") in checks
    for descriptor in image.manifests.values():
        assert (descriptor.digest, "SBOM (SPDX 2.3)") in checks
    assert (image.index.digest, "in-toto layout") in checks
    assert report.ignored == []
    text = report.human()
    assert f"Verified {registry}/{unique_repo}@{image.index.digest}" in text
    assert f"trusted signer: key {keys.public_key_hint(trust.key)}" in text


def test_cli_sign_and_verify(registry: str, unique_repo: str, trust: Trust, client: RegistryClient,
                             tmp_path: Path) -> None:
    image = signkit.push_image(client, unique_repo)
    ref = f"{registry}/{image.reference}"
    signed = _cli("--cache-dir", str(tmp_path / "cache"), "sign", ref, "--key", str(trust.key_path))
    assert signed.returncode == 0, signed.stderr
    assert f"Signed {registry}/{unique_repo}@{image.index.digest} with key {keys.public_key_hint(trust.key)}" in signed.stdout
    assert "not attached: provenance: no build information" in signed.stdout
    again = _cli("sign", ref, "--key", str(trust.key_path), "--output", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["attached"] and not any(a["added"] for a in json.loads(again.stdout)["attached"])

    # Without a policy: both signature shapes and an SBOM per arch are required.
    verified = _cli("verify", ref, "--key", str(trust.pub_path), password=None)
    assert verified.returncode == 0, verified.stderr
    assert "ok  SBOM (SPDX 2.3): 3 package(s)" in verified.stdout
    as_json = _cli("verify", ref, "--key", str(trust.pub_path), "--output", "json", password=None)
    document = json.loads(as_json.stdout)
    assert document["verified"] is True and document["root"] == image.index.digest
    assert set(document["manifests"]) == {"linux/amd64", "linux/arm64"}

    # The policy wants provenance, which `pkgtool sign` cannot know: denied, precisely.
    denied = _cli("verify", ref, "--policy", str(trust.policy_path), "--output", "json", password=None)
    assert denied.returncode == 1
    assert f"pkgtool: error: {image.index.digest}: provenance check failed: no valid provenance attestation (none attached)" in denied.stderr
    assert json.loads(denied.stdout)["verified"] is False


def test_sign_reference_by_digest_and_a_lone_manifest(client: RegistryClient, registry: str, unique_repo: str,
                                                      trust: Trust) -> None:
    image = signkit.push_image(client, unique_repo, arches=("s390x",))
    lone = image.manifests["s390x"]
    report = sign_reference(client, f"{registry}/{unique_repo}@{lone.digest}", signer=trust.signer)
    assert report.index == lone.digest and report.manifests == {}
    assert {a.kind for a in report.attached} == {"signature", "signature-bundle", "sbom"}
    verified = verify_reference(client, f"{registry}/{unique_repo}@{lone.digest}", verifier=trust.verifier,
                                policy=Policy(source="test"))
    assert {c.check for c in verified.checks} == {"signature (Sigstore bundle)", "signature (cosign .sig)",
                                                  "SBOM (SPDX 2.3)"}


def test_skopeo_reads_the_attached_shapes(client: RegistryClient, registry: str, unique_repo: str,
                                          trust: Trust) -> None:
    image = signkit.push_image(client, unique_repo, arches=("amd64",))
    sign_package(client, repository=unique_repo, index=image.index, manifests=image.manifests,
                 build=_build(registry), signer=trust.signer)
    digest = image.manifests["amd64"].digest

    def raw(tag: str) -> dict[str, Any]:
        out = subprocess.run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                              f"docker://{registry}/{unique_repo}:{tag}"], capture_output=True, check=True, timeout=60)
        document: dict[str, Any] = json.loads(out.stdout)
        return document

    referrers = raw(fallback_tag(digest))
    assert referrers["mediaType"] == mediatypes.OCI_INDEX
    assert {m["annotations"]["dev.sigstore.bundle.predicateType"] for m in referrers["manifests"]} == {
        "https://sigstore.dev/cosign/sign/v1", SLSA_PROVENANCE_V1, SPDX_PREDICATE_TYPE}
    att = raw(attestation_tag(digest))
    assert {layer["annotations"]["predicateType"] for layer in att["layers"]} == {SLSA_PROVENANCE_V1, SPDX_PREDICATE_TYPE}
    assert all(layer["mediaType"] == "application/vnd.dsse.envelope.v1+json" for layer in att["layers"])


def _image_yaml(path: Path, refs: list[str]) -> Path:
    lines = ["onboot:"]
    for i, ref in enumerate(refs):
        lines += [f"  - name: step{i}", f"    image: {ref}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_image_verify_and_build_refuse_unsigned_inputs(client: RegistryClient, registry: str, unique_repo: str,
                                                      trust: Trust, tmp_path: Path) -> None:
    signed = signkit.push_image(client, unique_repo, tag="signed", arches=("amd64",))
    sign_reference(client, f"{registry}/{signed.reference}", signer=trust.signer)
    unsigned = signkit.push_image(client, unique_repo, tag="unsigned", arches=("amd64",),
                                  created="2024-05-05T00:00:00Z")
    good_ref = f"{registry}/{unique_repo}@{signed.index.digest}"
    bad_ref = f"{registry}/{unique_repo}@{unsigned.index.digest}"
    cache = str(tmp_path / "cache")

    ok = _cli("image", "verify", str(_image_yaml(tmp_path / "ok.yml", [good_ref])), "--key", str(trust.pub_path),
              password=None)
    assert ok.returncode == 0, ok.stderr
    assert "All 1 image(s) verified." in ok.stdout

    bad_yaml = _image_yaml(tmp_path / "bad.yml", [good_ref, bad_ref])
    bad = _cli("image", "verify", str(bad_yaml), "--key", str(trust.pub_path), password=None)
    assert bad.returncode == 1
    assert f"{unsigned.index.digest}: signature check failed" in bad.stderr and "(image is unsigned)" in bad.stderr

    out = tmp_path / "out"
    refused = _cli("--cache-dir", cache, "image", "build", str(bad_yaml), "--format", "tar", "--dir", str(out),
                   "--verify", "--key", str(trust.pub_path), password=None)
    assert refused.returncode == 1 and "image is unsigned" in refused.stderr
    assert not out.exists() or not any(out.iterdir())

    built = _cli("--cache-dir", cache, "image", "build", str(tmp_path / "ok.yml"), "--format", "tar",
                 "--dir", str(out), "--verify", "--key", str(trust.pub_path), password=None)
    assert built.returncode == 0, built.stderr
    assert (out / "ok.tar").exists()

    tag_only = _cli("image", "verify", str(_image_yaml(tmp_path / "tag.yml", [f"{registry}/{signed.reference}"])),
                    "--key", str(trust.pub_path), password=None)
    assert tag_only.returncode == 1 and "not pinned by digest" in tag_only.stderr


def test_cli_sign_without_key_or_identity_token(registry: str, unique_repo: str, client: RegistryClient) -> None:
    image = signkit.push_image(client, unique_repo, arches=("amd64",))
    ambient = ("GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
               "GITLAB_CI", "BUILDKITE", "CIRCLECI")
    env = {k: v for k, v in os.environ.items() if k not in ambient}
    result = subprocess.run(["pkgtool", "sign", f"{registry}/{image.reference}"], capture_output=True, text=True,
                            env=env, timeout=120, check=False, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert result.stderr == (
        "pkgtool: error: no signing key given (--key K) and no ambient OIDC identity token for keyless "
        "signing (in GitHub Actions, grant `permissions: id-token: write`)\n"
    )
    assert client.head_manifest(unique_repo, signature_tag(image.index.digest)) is None


def test_sbom_layers_are_digest_checked_from_the_registry(client: RegistryClient, registry: str, unique_repo: str,
                                                          trust: Trust, registry_storage: Path) -> None:
    """A layer whose stored bytes no longer match its digest fails the SBOM; nothing from it is used."""
    import gzip
    import hashlib

    from imagekit import layer_tar

    from pkgtool.errors import DigestMismatchError

    marker = unique_repo.rsplit("/", 1)[-1]  # a layer no other test shares
    first = layer_tar([("var/lib/dpkg/status.d/x", "file", signkit.status(f"x{marker}", "1", "amd64"), 0o644)])
    image = signkit.push_image(client, unique_repo, arches=("amd64",), layers={"amd64": [first]})
    digest = "sha256:" + hashlib.sha256(first).hexdigest()
    stored = registry_storage / "blobs" / "sha256" / digest[7:9] / digest[7:] / "data"
    forged = layer_tar([("var/lib/dpkg/status.d/x", "file", signkit.status(f"y{marker}", "1", "amd64"), 0o644)])
    assert len(gzip.decompress(forged)) == len(gzip.decompress(first))
    original = stored.read_bytes()
    stored.write_bytes(forged)
    try:
        with pytest.raises(DigestMismatchError, match=f"blob {digest} from {registry}/{unique_repo}: "):
            sign_reference(client, f"{registry}/{image.reference}", signer=trust.signer)
    finally:
        stored.write_bytes(original)
    arch = image.manifests["amd64"].digest
    assert client.head_manifest(unique_repo, attestation_tag(arch)) is None  # no SBOM was attached
