"""cosign-compatible key files: format, round trips, and every way a key file can be bad."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path

import nacl.secret
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.sign import KeyFileError, keys

PASSWORD = b"correct horse"


@pytest.fixture(scope="module")
def key() -> keys.PrivateKey:
    return keys.generate_keypair()


@pytest.fixture(scope="module")
def sealed(key: keys.PrivateKey) -> bytes:
    return keys.encrypt_private_key(key, PASSWORD)


def _pem_json(pem: bytes) -> tuple[str, bytes]:
    lines = pem.decode().strip().splitlines()
    assert lines[0].startswith("-----BEGIN ") and lines[-1].startswith("-----END ")
    assert all(len(line) <= 64 for line in lines[1:-1])
    return lines[0][11:-5], base64.b64decode("".join(lines[1:-1]))


def test_generated_key_is_p256(key: keys.PrivateKey) -> None:
    assert isinstance(key.curve, ec.SECP256R1)


def test_encrypted_key_has_cosigns_exact_json_structure(
    key: keys.PrivateKey, sealed: bytes
) -> None:
    label, body = _pem_json(sealed)
    assert label == "ENCRYPTED SIGSTORE PRIVATE KEY"
    # Compact JSON in Go's struct order, exactly as cosign writes it.
    assert body.startswith(b'{"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"')
    doc = json.loads(body)
    assert list(doc) == ["kdf", "cipher", "ciphertext"]
    assert list(doc["kdf"]) == ["name", "params", "salt"]
    assert list(doc["kdf"]["params"]) == ["N", "r", "p"]
    assert list(doc["cipher"]) == ["name", "nonce"]
    assert doc["cipher"]["name"] == "nacl/secretbox"
    salt = base64.b64decode(doc["kdf"]["salt"])
    nonce = base64.b64decode(doc["cipher"]["nonce"])
    assert (len(salt), len(nonce)) == (32, 24)
    assert json.dumps(doc, separators=(",", ":")).encode() == body
    # Open the box independently: it holds the PKCS#8 DER of the key.
    box_key = hashlib.scrypt(PASSWORD, salt=salt, n=65536, r=8, p=1, dklen=32, maxmem=2**28)
    der = nacl.secret.SecretBox(box_key).decrypt(base64.b64decode(doc["ciphertext"]), nonce)
    assert der == key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_round_trip(key: keys.PrivateKey, sealed: bytes) -> None:
    loaded = keys.load_private_key(sealed, PASSWORD)
    assert loaded.private_numbers() == key.private_numbers()


def test_each_encryption_is_fresh(key: keys.PrivateKey, sealed: bytes) -> None:
    again = keys.encrypt_private_key(key, PASSWORD)
    assert again != sealed  # new salt and nonce every time


def test_older_cosign_label_and_independently_built_key_load() -> None:
    # Built here from the documented format only (scrypt + secretbox over PKCS#8), with
    # go-securesystemslib's "legacy" N: this is how older cosign versions wrote keys.
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt, nonce = os.urandom(32), os.urandom(24)
    box_key = hashlib.scrypt(b"hello", salt=salt, n=32768, r=8, p=1, dklen=32, maxmem=2**28)
    ciphertext = nacl.secret.SecretBox(box_key).encrypt(der, nonce).ciphertext
    body = json.dumps({
        "kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1},
                "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }).encode()
    encoded = base64.encodebytes(body).decode()  # 76-column lines: any PEM wrapping must do
    pem = f"-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n{encoded}-----END ENCRYPTED COSIGN PRIVATE KEY-----\n"
    loaded = keys.load_private_key(pem.encode(), b"hello")
    assert loaded.private_numbers() == private.private_numbers()


def test_wrong_password_is_rejected_without_echoing_it(sealed: bytes) -> None:
    with pytest.raises(KeyFileError) as exc:
        keys.load_private_key(sealed, b"s3cret-guess", source="cosign.key")
    message = str(exc.value)
    assert message == "cosign.key: wrong password or corrupted key"
    assert "s3cret" not in message


def test_encrypted_key_without_password(sealed: bytes) -> None:
    with pytest.raises(KeyFileError, match="encrypted and no password"):
        keys.load_private_key(sealed, None, source="k")


@pytest.mark.parametrize("cut", [10, 100, -60, -5])
def test_truncated_key_is_rejected(sealed: bytes, cut: int) -> None:
    with pytest.raises(KeyFileError, match=r"^k\.key: (truncated|corrupted|not a PEM)"):
        keys.load_private_key(sealed[:cut], PASSWORD, source="k.key")


def test_flipped_ciphertext_bit_is_rejected(sealed: bytes) -> None:
    label, body = _pem_json(sealed)
    doc = json.loads(body)
    raw = bytearray(base64.b64decode(doc["ciphertext"]))
    raw[-1] ^= 1
    doc["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    tampered = keys.pem_encode(label, json.dumps(doc).encode())
    with pytest.raises(KeyFileError, match="wrong password or corrupted key"):
        keys.load_private_key(tampered, PASSWORD, source="k")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d["kdf"].update(name="pbkdf2"), "unsupported key derivation"),
        (lambda d: d["cipher"].update(name="aes-gcm"), "unsupported cipher"),
        (lambda d: d["kdf"]["params"].update(N=2**40), "unsupported scrypt parameters"),
        (lambda d: d["kdf"]["params"].update(N="65536"), "unsupported scrypt parameters"),
        (lambda d: d["cipher"].update(nonce="AAAA"), "bad nonce or salt length"),
        (lambda d: d.pop("ciphertext"), "missing or malformed field"),
        (lambda d: d["kdf"].update(salt="!!"), "missing or malformed field"),
    ],
)
def test_garbled_json_fields_are_rejected(sealed: bytes, mutate: object, reason: str) -> None:
    label, body = _pem_json(sealed)
    doc = json.loads(body)
    mutate(doc)  # type: ignore[operator]
    with pytest.raises(KeyFileError, match=reason):
        keys.load_private_key(keys.pem_encode(label, json.dumps(doc).encode()), PASSWORD, source="k")


def test_non_json_body_and_garbage() -> None:
    with pytest.raises(KeyFileError, match="body is not valid JSON"):
        keys.load_private_key(keys.pem_encode(keys.SIGSTORE_PRIVATE_LABEL, b"\x00junk"), b"", source="k")
    with pytest.raises(KeyFileError, match="not a PEM key file"):
        keys.load_private_key(os.urandom(100), b"", source="k")
    with pytest.raises(KeyFileError, match="invalid base64"):
        keys.load_private_key(
            b"-----BEGIN PRIVATE KEY-----\nnot*base64\n-----END PRIVATE KEY-----\n", None, source="k"
        )


def test_plain_pkcs8_and_sec1_pem_are_accepted(key: keys.PrivateKey) -> None:
    for fmt in (serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL):
        pem = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
        assert pem.startswith(b"-----BEGIN PRIVATE KEY" if fmt is serialization.PrivateFormat.PKCS8
                              else b"-----BEGIN EC PRIVATE KEY")
        assert keys.load_private_key(pem, None).private_numbers() == key.private_numbers()


def test_standard_encrypted_pkcs8_is_accepted(key: keys.PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    assert keys.load_private_key(pem, b"pw").private_numbers() == key.private_numbers()
    with pytest.raises(KeyFileError, match="wrong password or corrupted key"):
        keys.load_private_key(pem, b"nope")


def test_other_key_types_are_refused_with_a_reason() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFileError, match="ECDSA secp384r1"):
        keys.load_private_key(p384, None)
    ed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyFileError, match="unsupported key type"):
        keys.load_private_key(ed, None)


def test_public_key_pem_and_hint(key: keys.PrivateKey) -> None:
    pem = keys.public_key_pem(key)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    public = keys.load_public_key(pem)
    assert public.public_numbers() == key.public_key().public_numbers()
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert keys.public_key_hint(key) == base64.b64encode(hashlib.sha256(der).digest()).decode()
    assert keys.public_key_hint(public) == keys.public_key_hint(key)


def test_private_key_is_not_a_public_key(sealed: bytes) -> None:
    with pytest.raises(KeyFileError, match="is not a public key"):
        keys.load_public_key(sealed, source="cosign.key")
    with pytest.raises(KeyFileError, match="is not a private key"):
        keys.load_private_key(keys.public_key_pem(keys.generate_keypair()), None, source="c.pub")


def test_password_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PKGTOOL_PASSWORD", "one")
    monkeypatch.setenv("COSIGN_PASSWORD", "two")
    assert keys.read_password() == b"one"
    monkeypatch.delenv("PKGTOOL_PASSWORD")
    assert keys.read_password() == b"two"
    monkeypatch.setenv("COSIGN_PASSWORD", "")  # set but empty: the empty password
    assert keys.read_password() == b""
    monkeypatch.delenv("COSIGN_PASSWORD")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    with pytest.raises(UsageError, match="PKGTOOL_PASSWORD"):
        keys.read_password()


def test_prompt_asks_twice_for_new_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in keys.PASSWORD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    answers = iter(["a", "b"])
    monkeypatch.setattr("getpass.getpass", lambda _prompt: next(answers))
    with pytest.raises(UsageError, match="do not match"):
        keys.read_password(confirm=True)
    answers = iter(["same", "same"])
    assert keys.read_password(confirm=True) == b"same"


def test_write_keypair_files(tmp_path: Path, key: keys.PrivateKey) -> None:
    key_path, pub_path = keys.write_keypair(tmp_path / "signer", key, PASSWORD)
    assert (key_path.name, pub_path.name) == ("signer.key", "signer.pub")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert keys.load_private_key_file(key_path, password=lambda: PASSWORD).private_numbers() == (
        key.private_numbers()
    )
    assert keys.load_public_key_file(pub_path).public_numbers() == key.public_key().public_numbers()
    before = key_path.read_bytes()
    with pytest.raises(PkgtoolError, match="already exists; use --force"):
        keys.write_keypair(tmp_path / "signer", keys.generate_keypair(), PASSWORD)
    assert key_path.read_bytes() == before
    keys.write_keypair(tmp_path / "signer", keys.generate_keypair(), PASSWORD, force=True)
    assert key_path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signer.key", "signer.pub"]


def test_plain_key_file_never_asks_for_a_password(tmp_path: Path, key: keys.PrivateKey) -> None:
    path = tmp_path / "plain.key"
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))

    def no_password() -> bytes:
        raise AssertionError("asked for a password")

    assert keys.load_private_key_file(path, password=no_password).private_numbers() == (
        key.private_numbers()
    )


def test_key_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match=r"missing\.key: cannot read key file"):
        keys.load_private_key_file(tmp_path / "missing.key")
    big = tmp_path / "big.key"
    big.write_bytes(b"A" * (keys.MAX_KEY_FILE_BYTES + 1))
    with pytest.raises(KeyFileError, match=r"big\.key: not a key file"):
        keys.load_private_key_file(big)
