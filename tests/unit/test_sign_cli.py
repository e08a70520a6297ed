"""Who `pkgtool verify` trusts, from its flags and the policy; the commands' help."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from pkgtool.cli import build_parser, main
from pkgtool.commands.verify import trust_from_args
from pkgtool.errors import UsageError
from pkgtool.sign import keys
from pkgtool.sign.keyless import KeylessVerifier
from pkgtool.sign.verifiers import AnyVerifier, KeyVerifier, is_key_based, trusted_key_hints

REPO = Path(__file__).resolve().parents[2]


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["verify", "127.0.0.1:5000/x:y", *argv])


def _pub(tmp_path: Path, name: str = "k") -> tuple[Path, keys.PrivateKey]:
    key = keys.generate_keypair()
    path = tmp_path / f"{name}.pub"
    path.write_bytes(keys.public_key_pem(key))
    return path, key


def test_flags_choose_the_trusted_signer(tmp_path: Path) -> None:
    path, key = _pub(tmp_path)
    verifier, policy = trust_from_args(_args("--key", str(path)))
    assert isinstance(verifier, KeyVerifier) and is_key_based(verifier)
    assert trusted_key_hints(verifier) == {keys.public_key_hint(key)}
    assert policy.source == "(default policy)"
    keyless, _ = trust_from_args(_args("--identity", "https://x", "--issuer", "https://y"))
    assert isinstance(keyless, KeylessVerifier) and not is_key_based(keyless)
    assert keyless.description == "keyless https://x (https://y)"


@pytest.mark.parametrize(("argv", "message"), [
    ((), "no trusted signer"),
    (("--identity", "https://x"), "--identity and --issuer go together"),
    (("--issuer", "https://y"), "--identity and --issuer go together"),
])
def test_bad_trust_flags(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        trust_from_args(_args(*argv))


def test_key_and_identity_together_are_refused(tmp_path: Path) -> None:
    path, _key = _pub(tmp_path)
    with pytest.raises(UsageError, match="either --key or --identity"):
        trust_from_args(_args("--key", str(path), "--identity", "https://x", "--issuer", "https://y"))


def test_the_projects_policy_trusts_its_key_and_the_publish_workflow() -> None:
    verifier, policy = trust_from_args(_args("--policy", str(REPO / "signing" / "policy.yml")))
    assert isinstance(verifier, AnyVerifier)
    kinds = [type(v) for v in verifier.verifiers]
    assert kinds == [KeyVerifier, KeylessVerifier]
    release = keys.load_public_key_file(REPO / "signing" / "keys" / "release.pub")
    assert trusted_key_hints(verifier) == {keys.public_key_hint(release)}
    assert not is_key_based(verifier)  # so the keyless CI images need no in-toto link
    assert policy.attestations == ("slsa-provenance", "spdx")


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["verify", "127.0.0.1:5000/x:y"]) == 2
    assert capsys.readouterr().err == (
        "pkgtool: error: no trusted signer: pass --key K.pub or --identity I --issuer U "
        "(or a policy that lists keys)\n"
    )
    assert main(["intoto"]) == 2
    assert "missing subcommand (layout)" in capsys.readouterr().err


def test_help_names_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("sign", "verify", "intoto", "key", "image"):
        assert f"    {command} " in out
