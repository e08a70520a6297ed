"""The verification policy format, and the project's own signing/ directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from pkgtool.errors import UsageError
from pkgtool.sign import keys
from pkgtool.sign.intoto import BUILD_STEP, securesystemslib_keyid
from pkgtool.sign.policy import DEFAULT_POLICY, load_policy

REPO = Path(__file__).resolve().parents[2]
SIGNING = REPO / "signing"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(text)
    return path


def test_the_projects_policy_loads() -> None:
    policy = load_policy(SIGNING / "policy.yml")
    assert policy.keys == (SIGNING / "keys" / "release.pub",)
    assert policy.signatures == ("bundle", "cosign")
    assert policy.attestations == ("slsa-provenance", "spdx")
    assert policy.in_toto is not None and policy.in_toto.layout == SIGNING / "root.layout"
    assert policy.in_toto_required(key_based=True) and not policy.in_toto_required(key_based=False)
    assert policy.source_allowed("https://github.com/pkgtool/pkgtool.git")
    assert not policy.source_allowed("https://github.com/evil/pkgtool")
    assert policy.base_image_allowed("127.0.0.1:5000/pkgtool/base")
    assert not policy.base_image_allowed("docker.io/library/alpine")
    assert policy.builder_allowed("https://pkgtool.dev/builders/release")
    assert not policy.builder_allowed("https://pkgtool.dev/builders/local")


def test_signing_dir_holds_no_private_key() -> None:
    for path in SIGNING.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"PRIVATE KEY" not in data, path
            assert not path.name.endswith(".key"), path


def test_the_projects_layout_authorises_the_release_key() -> None:
    import json

    from in_toto.models.metadata import Metadata  # type: ignore[import-untyped]

    from pkgtool.sign.intoto import securesystemslib_key

    layout = Metadata.from_dict(json.loads((SIGNING / "root.layout").read_bytes()))
    layout_key = keys.load_public_key_file(SIGNING / "keys" / "layout.pub")
    key = securesystemslib_key(layout_key)
    layout.verify_signature(key)  # raises if root.layout was not signed by layout.pub
    payload = layout.get_payload()
    release = securesystemslib_keyid(keys.load_public_key_file(SIGNING / "keys" / "release.pub"))
    (step,) = payload.steps
    assert step.name == BUILD_STEP and step.pubkeys == [release] and payload.inspect == []


def test_defaults_deny_what_is_not_listed() -> None:
    assert DEFAULT_POLICY.signatures == ("bundle", "cosign")
    assert DEFAULT_POLICY.attestations == ("spdx",)
    assert DEFAULT_POLICY.in_toto is None
    assert DEFAULT_POLICY.builder_allowed("https://anything")  # no list: provenance optional


def test_an_empty_allow_list_allows_nothing(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path, "builders: []\nbase_images: []\nsource_repositories: []\n"))
    assert not policy.builder_allowed("https://anything")
    assert not policy.base_image_allowed("127.0.0.1:5000/pkgtool/base")
    assert not policy.source_allowed("https://github.com/pkgtool/pkgtool")


@pytest.mark.parametrize(("text", "message"), [
    ("colour: red\n", r"policy.yml:1: colour: unknown key"),
    ("version: 2\n", "only policy version 1"),
    ("require:\n  signatures: [gpg]\n", r"require.signatures\[0\]: unknown signature 'gpg'"),
    ("require:\n  signatures: []\n", "at least one signature shape"),
    ("require:\n  attestations: [vibes]\n", "unknown attestation 'vibes'"),
    ("identities:\n  - identity: x\n", r"identities\[0\]: expected \{identity"),
    ("in_toto:\n  layout: l\n", "layout's signing keys are required"),
    ("in_toto:\n  layout: l\n  keys: [k]\n  require: sometimes\n", "expected one of always"),
    ("builders: https://x\n", "builders: expected a list"),
    ("require_revision: maybe\n", "expected true or false"),
    ("- a\n", "a policy is a mapping"),
])
def test_bad_policies_name_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_policy(_write(tmp_path, text))
