"""pkgtool's Sigstore bundles verify with an independent implementation: sigstore-js.

The Node packages are pinned in tests/interop/package-lock.json and installed with
`npm ci` into a temporary directory (the npm registry must be reachable).  The verifier is
given only the public key (thresholds 0: no Rekor, CT log or timestamp authority offline).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pkgtool.sign import dsse, keys
from pkgtool.sign.bundle import make_bundle
from pkgtool.sign.payloads import INTOTO_PAYLOAD_TYPE, Subject, intoto_statement

pytestmark = pytest.mark.integration

INTEROP = Path(__file__).resolve().parent.parent / "interop"
DIGEST = "sha256:" + "5e" * 32


@pytest.fixture(scope="module")
def verifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding verify_bundle.mjs with its pinned node_modules."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed; the sigstore-js interop test needs Node >= 20.17")
    work = tmp_path_factory.mktemp("interop")
    for name in ("package.json", "package-lock.json", "verify_bundle.mjs"):
        shutil.copy2(INTEROP / name, work / name)
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=work, capture_output=True, text=True, timeout=300, check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci failed (is the npm registry reachable?):\n{result.stderr[-2000:]}")
    return work


def _verify(verifier: Path, bundle: bytes, public_pem: bytes, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "bundle.json").write_bytes(bundle)
    (tmp_path / "key.pub").write_bytes(public_pem)
    return subprocess.run(
        ["node", str(verifier / "verify_bundle.mjs"), str(tmp_path / "bundle.json"), str(tmp_path / "key.pub")],
        cwd=verifier, capture_output=True, text=True, timeout=60, check=False,
    )


def _signed_bundle(key: keys.PrivateKey, digest: str = DIGEST) -> tuple[bytes, bytes]:
    statement = intoto_statement(
        subjects=[Subject("127.0.0.1:5000/pkgtool/interop", digest)],
        predicate_type="https://slsa.dev/provenance/v1",
        predicate={"buildDefinition": {"buildType": "https://example.invalid/pkgtool"}},
    )
    envelope = dsse.sign(statement, payload_type=INTOTO_PAYLOAD_TYPE, key=key)
    return make_bundle(envelope, key.public_key()), statement


def test_key_from_cli_signs_a_bundle_sigstore_js_accepts(verifier: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PKGTOOL_PASSWORD": "interop"}
    subprocess.run(["pkgtool", "key", "generate", "--output-prefix", str(tmp_path / "ci")],
                   env=env, check=True, capture_output=True)
    key = keys.load_private_key_file(tmp_path / "ci.key", password=lambda: b"interop")
    bundle, _ = _signed_bundle(key)
    result = _verify(verifier, bundle, (tmp_path / "ci.pub").read_bytes(), tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["payloadType"] == "application/vnd.in-toto+json"
    assert report["subjects"] == [
        {"name": "127.0.0.1:5000/pkgtool/interop", "digest": {"sha256": DIGEST[7:]}}
    ]
    assert report["hint"] == keys.public_key_hint(key)


def test_tampered_bundle_fails_in_sigstore_js(verifier: Path, tmp_path: Path) -> None:
    key = keys.generate_keypair()
    bundle, statement = _signed_bundle(key)
    doc = json.loads(bundle)
    forged = statement.replace(DIGEST[7:].encode(), b"66" * 32)
    doc["dsseEnvelope"]["payload"] = base64.b64encode(forged).decode()
    result = _verify(verifier, json.dumps(doc).encode(), keys.public_key_pem(key), tmp_path)
    assert result.returncode == 1
    assert "SIGNATURE_ERROR" in result.stderr


def test_bundle_by_another_key_fails_in_sigstore_js(verifier: Path, tmp_path: Path) -> None:
    bundle, _ = _signed_bundle(keys.generate_keypair())
    result = _verify(verifier, bundle, keys.public_key_pem(keys.generate_keypair()), tmp_path)
    assert result.returncode == 1
    assert "SIGNATURE_ERROR" in result.stderr


def test_truncated_bundle_is_refused_by_sigstore_js(verifier: Path, tmp_path: Path) -> None:
    key = keys.generate_keypair()
    doc = json.loads(_signed_bundle(key)[0])
    doc["dsseEnvelope"]["signatures"] = []
    result = _verify(verifier, json.dumps(doc).encode(), keys.public_key_pem(key), tmp_path)
    assert result.returncode == 1
    assert "signatures" in result.stderr


def test_bundles_from_pkgtool_sign_on_a_pushed_image_verify_in_sigstore_js(
    verifier: Path, tmp_path: Path, registry: str, unique_repo: str
) -> None:
    """`pkgtool sign` on a real multi-arch image: every bundle it attached (signature and SBOM
    statements, on the index and each manifest) verifies in sigstore-js with the public key,
    and names the digest it is attached to."""
    import signkit

    from pkgtool.oci.reference import Reference
    from pkgtool.oci.registry import RegistryClient
    from pkgtool.sign.attach import read_bundles

    env = {**os.environ, "PKGTOOL_PASSWORD": "interop"}
    subprocess.run(["pkgtool", "key", "generate", "--output-prefix", str(tmp_path / "release")],
                   env=env, check=True, capture_output=True)
    with RegistryClient(registry) as client:
        image = signkit.push_image(client, unique_repo)
        signed = subprocess.run(
            ["pkgtool", "sign", f"{registry}/{image.reference}", "--key", str(tmp_path / "release.key")],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )
        assert signed.returncode == 0, signed.stderr
        checked = 0
        for digest in (image.index.digest, *[d.digest for d in image.manifests.values()]):
            bundles = read_bundles(client, Reference(client.registry, unique_repo), digest=digest)
            assert bundles, digest
            for bundle in bundles:
                result = _verify(verifier, bundle, (tmp_path / "release.pub").read_bytes(), tmp_path)
                assert result.returncode == 0, result.stderr
                report = json.loads(result.stdout)
                assert report["payloadType"] == "application/vnd.in-toto+json"
                assert {"name": f"{registry}/{unique_repo}", "digest": {"sha256": digest[7:]}} in report["subjects"]
                checked += 1
    assert checked == 1 + 2 * 2  # a signature bundle on each digest, an SBOM on each arch


def test_provenance_and_link_bundles_from_a_package_signing_verify_in_sigstore_js(
    verifier: Path, tmp_path: Path, registry: str, unique_repo: str
) -> None:
    import signkit

    from pkgtool.oci.reference import Reference
    from pkgtool.oci.registry import RegistryClient
    from pkgtool.sign.attach import read_bundles
    from pkgtool.sign.publish import sign_package
    from pkgtool.sign.signer import KeySigner

    key = keys.generate_keypair()
    with RegistryClient(registry) as client:
        image = signkit.push_image(client, unique_repo, arches=("arm64",))
        sign_package(client, repository=unique_repo, index=image.index, manifests=image.manifests,
                     build=signkit.build_info(registry=registry), signer=KeySigner(key))  # type: ignore[arg-type]
        bundles = read_bundles(client, Reference(client.registry, unique_repo), digest=image.index.digest)
    assert len(bundles) == 3  # signature, provenance, in-toto link
    kinds = set()
    for bundle in bundles:
        result = _verify(verifier, bundle, keys.public_key_pem(key), tmp_path)
        assert result.returncode == 0, result.stderr
        payload = json.loads(base64.b64decode(json.loads(bundle)["dsseEnvelope"]["payload"]))
        assert payload["_type"] == "https://in-toto.io/Statement/v1"  # every one a Statement, the link too
        kinds.add(payload["predicateType"])
    assert kinds == {"https://sigstore.dev/cosign/sign/v1", "https://slsa.dev/provenance/v1",
                     "https://in-toto.io/attestation/link/v0.3"}
