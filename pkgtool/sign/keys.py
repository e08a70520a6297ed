"""cosign-compatible key files.

A cosign private key file is PEM with the label ``ENCRYPTED SIGSTORE PRIVATE KEY`` (older
cosign wrote ``ENCRYPTED COSIGN PRIVATE KEY``).  Its body is compact JSON, in exactly this
field order (the order Go's encoder writes the go-securesystemslib ``encrypted`` structs)::

    {"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"<b64, 32 bytes>"},
     "cipher":{"name":"nacl/secretbox","nonce":"<b64, 24 bytes>"},
     "ciphertext":"<b64 secretbox(PKCS#8 DER)>"}

The secretbox key is ``scrypt(password, salt, N, r, p, 32)``; the ciphertext is NaCl's
combined form (16-byte Poly1305 tag, then the XSalsa20 stream).  Public keys are PEM
``PUBLIC KEY`` (SubjectPublicKeyInfo).

pkgtool signs with ECDSA P-256 and SHA-256, cosign's default key type.  Reading also accepts
plain PEM private keys (``PRIVATE KEY``, ``EC PRIVATE KEY``, ``ENCRYPTED PRIVATE KEY``).
Passwords never appear in messages or logs.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.secret
import nacl.utils
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.jsonio import load_object
from pkgtool.sign import KeyFileError

PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey

SIGSTORE_PRIVATE_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_PRIVATE_LABEL = "ENCRYPTED COSIGN PRIVATE KEY"
PUBLIC_LABEL = "PUBLIC KEY"
_PLAIN_PRIVATE_LABELS = ("PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY")

KDF_NAME = "scrypt"
CIPHER_NAME = "nacl/secretbox"
# What cosign writes today (go-securesystemslib's "standard" strength).
SCRYPT_N, SCRYPT_R, SCRYPT_P = 65536, 8, 1
SALT_BYTES = 32
# go-securesystemslib's three named strengths (legacy, standard, OWASP).  Anything else is
# refused: a hostile key file must not make us run scrypt with N = 2**40.
_ACCEPTED_SCRYPT = frozenset({(32768, 8, 1), (65536, 8, 1), (131072, 8, 1)})
# scrypt needs 128 * r * N bytes; 256 MiB covers the largest accepted setting.
_SCRYPT_MAXMEM = 256 * 1024 * 1024

# Key files are a few hundred bytes; refuse to parse megabytes of junk.
MAX_KEY_FILE_BYTES = 64 * 1024

PASSWORD_ENV_VARS = ("PKGTOOL_PASSWORD", "COSIGN_PASSWORD")

_PEM_RE = re.compile(
    rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END ([A-Z0-9 ]+)-----", re.DOTALL
)


# --------------------------------------------------------------------------- generation


def generate_keypair() -> PrivateKey:
    """A fresh ECDSA P-256 private key (its public half is ``key.public_key()``)."""
    return ec.generate_private_key(ec.SECP256R1())


def encrypt_private_key(
    key: PrivateKey, password: bytes, *, label: str = SIGSTORE_PRIVATE_LABEL
) -> bytes:
    """PEM bytes of ``key`` sealed the way cosign seals it (see the module docstring)."""
    if label not in (SIGSTORE_PRIVATE_LABEL, COSIGN_PRIVATE_LABEL):
        raise ValueError(f"unsupported PEM label {label!r}")
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    salt = os.urandom(SALT_BYTES)
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_derive_key(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P))
    sealed = box.encrypt(der, nonce).ciphertext
    # Field order and names matter: cosign and other readers parse this JSON, and byte
    # equality with cosign's own output makes the format easy to audit.
    document = {
        "kdf": {
            "name": KDF_NAME,
            "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
            "salt": _b64(salt),
        },
        "cipher": {"name": CIPHER_NAME, "nonce": _b64(nonce)},
        "ciphertext": _b64(sealed),
    }
    body = json.dumps(document, separators=(",", ":")).encode()
    return pem_encode(label, body)


def public_key_pem(key: PrivateKey | PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_hint(key: PrivateKey | PublicKey) -> str:
    """base64(sha256(DER SubjectPublicKeyInfo)): the key hint cosign puts in bundles."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _b64(hashlib.sha256(der).digest())


# --------------------------------------------------------------------------- loading


def load_private_key(
    pem: bytes, password: bytes | None, *, source: str = "private key"
) -> PrivateKey:
    """Parse a cosign-encrypted or plain PEM private key.

    ``password`` is required for encrypted keys and ignored for plain ones.  ``source`` (a
    file name) prefixes every error message.
    """
    label, body = _pem_block(pem, source=source)
    if label in (SIGSTORE_PRIVATE_LABEL, COSIGN_PRIVATE_LABEL):
        if password is None:
            raise KeyFileError(f"{source}: the key is encrypted and no password was given")
        der = _decrypt(body, password, source=source)
        try:
            # PKCS#8 is what cosign seals; load_der_private_key also takes SEC1, which some
            # older tools sealed instead.
            key = serialization.load_der_private_key(der, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(f"{source}: decrypted key is not a valid private key") from exc
    elif label in _PLAIN_PRIVATE_LABELS:
        secret = password if label == "ENCRYPTED PRIVATE KEY" else None
        if label == "ENCRYPTED PRIVATE KEY" and not password:
            raise KeyFileError(f"{source}: the key is encrypted and no password was given")
        try:
            key = serialization.load_pem_private_key(pem_encode(label, body), password=secret)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            reason = "wrong password or corrupted key" if secret else "corrupted private key"
            raise KeyFileError(f"{source}: {reason}") from exc
    else:
        raise KeyFileError(f"{source}: PEM block {label!r} is not a private key")
    return _require_p256_private(key, source=source)


def load_public_key(pem: bytes, *, source: str = "public key") -> PublicKey:
    """Parse a PEM ``PUBLIC KEY`` (an ECDSA P-256 SubjectPublicKeyInfo)."""
    label, body = _pem_block(pem, source=source)
    if label != PUBLIC_LABEL:
        raise KeyFileError(f"{source}: PEM block {label!r} is not a public key")
    try:
        key = serialization.load_der_public_key(body)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(f"{source}: corrupted public key") from exc
    return _require_p256_public(key, source=source)


def load_private_key_file(
    path: Path, *, password: Callable[[], bytes] | None = None
) -> PrivateKey:
    """Load a private key file, asking ``password()`` only if the key is encrypted.

    The default password source is :func:`read_password` (environment, then a prompt).
    """
    data = read_key_file(path)
    source = str(path)
    label, _body = _pem_block(data, source=source)
    needs_password = label in (SIGSTORE_PRIVATE_LABEL, COSIGN_PRIVATE_LABEL, "ENCRYPTED PRIVATE KEY")
    secret = (password or read_password)() if needs_password else None
    return load_private_key(data, secret, source=source)


def load_public_key_file(path: Path) -> PublicKey:
    return load_public_key(read_key_file(path), source=str(path))


def read_key_file(path: Path) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key file: {exc.strerror or exc}") from exc
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{path}: not a key file (larger than {MAX_KEY_FILE_BYTES} bytes)")
    return data


# --------------------------------------------------------------------------- passwords


def read_password(*, confirm: bool = False, purpose: str = "private key") -> bytes:
    """The key password: ``$PKGTOOL_PASSWORD``, else ``$COSIGN_PASSWORD``, else a prompt.

    A variable that is set but empty means "empty password", as in cosign.  ``confirm``
    asks twice (for new keys).  Prompts go to the terminal, never to a log.
    """
    for name in PASSWORD_ENV_VARS:
        value = os.environ.get(name)
        if value is not None:
            return value.encode()
    if not sys.stdin.isatty():
        raise UsageError(
            f"a password is needed for the {purpose}: set PKGTOOL_PASSWORD (or "
            "COSIGN_PASSWORD), or run in a terminal"
        )
    first = getpass.getpass(f"Enter password for {purpose}: ")
    if confirm:
        second = getpass.getpass(f"Enter password for {purpose} again: ")
        if first != second:
            raise UsageError("passwords do not match")
    return first.encode()


# --------------------------------------------------------------------------- key pair files


def write_keypair(
    prefix: Path, key: PrivateKey, password: bytes, *, force: bool = False
) -> tuple[Path, Path]:
    """Write ``prefix.key`` (mode 0600) and ``prefix.pub`` atomically.

    Without ``force`` an existing file is never replaced, even if it appears between our
    check and our write (the final step is a hard link, which fails on an existing name).
    """
    key_path = prefix.with_name(prefix.name + ".key")
    pub_path = prefix.with_name(prefix.name + ".pub")
    if not force:
        for path in (key_path, pub_path):
            if os.path.lexists(path):
                raise PkgtoolError(f"{path} already exists; use --force to overwrite it")
    _atomic_write(key_path, encrypt_private_key(key, password), mode=0o600, force=force)
    _atomic_write(pub_path, public_key_pem(key), mode=0o644, force=force)
    return key_path, pub_path


def _atomic_write(path: Path, data: bytes, *, mode: int, force: bool) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    tmp = directory / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        # The mode is set at creation: the secret never sits in a world-readable file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # os.open's mode is filtered by the umask
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise PkgtoolError(f"{path} already exists; use --force to overwrite it") from exc
    except OSError as exc:
        raise PkgtoolError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()


# --------------------------------------------------------------------------- helpers


def pem_encode(label: str, body: bytes) -> bytes:
    """PEM with 64-character lines, as Go's encoding/pem writes it."""
    text = base64.b64encode(body).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return ("\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + "\n").encode()


def _pem_block(data: bytes, *, source: str) -> tuple[str, bytes]:
    """The first PEM block's label and decoded body."""
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"{source}: not a key file (larger than {MAX_KEY_FILE_BYTES} bytes)")
    match = _PEM_RE.search(data)
    if match is None:
        if b"-----BEGIN " in data:
            raise KeyFileError(f"{source}: truncated or corrupted key file (no PEM END line)")
        raise KeyFileError(f"{source}: not a PEM key file")
    begin, body, end = match.group(1).decode(), match.group(2), match.group(3).decode()
    if begin != end:
        raise KeyFileError(f"{source}: corrupted key file (PEM BEGIN {begin!r} vs END {end!r})")
    try:
        decoded = base64.b64decode(b"".join(body.split()), validate=True)
    except binascii.Error as exc:
        raise KeyFileError(f"{source}: corrupted key file (invalid base64)") from exc
    if not decoded:
        raise KeyFileError(f"{source}: corrupted key file (empty PEM block)")
    return begin, decoded


def _decrypt(body: bytes, password: bytes, *, source: str) -> bytes:
    corrupt = f"{source}: corrupted key file"
    document = load_object(body, what=f"{corrupt}: its body", error=KeyFileError)
    try:
        kdf = _mapping(document["kdf"])
        params = _mapping(kdf["params"])
        cipher = _mapping(document["cipher"])
        kdf_name, cipher_name = kdf["name"], cipher["name"]
        n, r, p = params["N"], params["r"], params["p"]
        salt = base64.b64decode(kdf["salt"], validate=True)
        nonce = base64.b64decode(cipher["nonce"], validate=True)
        sealed = base64.b64decode(document["ciphertext"], validate=True)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise KeyFileError(f"{corrupt} (missing or malformed field)") from exc
    if kdf_name != KDF_NAME:
        raise KeyFileError(f"{source}: unsupported key derivation {kdf_name!r}")
    if cipher_name != CIPHER_NAME:
        raise KeyFileError(f"{source}: unsupported cipher {cipher_name!r}")
    if any(type(v) is not int for v in (n, r, p)) or (n, r, p) not in _ACCEPTED_SCRYPT:
        raise KeyFileError(f"{source}: unsupported scrypt parameters N={n} r={r} p={p}")
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE or not 16 <= len(salt) <= 64:
        raise KeyFileError(f"{corrupt} (bad nonce or salt length)")
    box = nacl.secret.SecretBox(_derive_key(password, salt, n, r, p))
    try:
        return box.decrypt(sealed, nonce)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as exc:
        # secretbox cannot tell a wrong password from flipped bits: both fail the MAC.
        raise KeyFileError(f"{source}: wrong password or corrupted key") from exc


def _derive_key(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, dklen=nacl.secret.SecretBox.KEY_SIZE,
        maxmem=_SCRYPT_MAXMEM,
    )


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("expected a JSON object")
    return value


def _require_p256_private(key: object, *, source: str) -> PrivateKey:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        _check_curve(key.curve, source=source)
        return key
    raise _unsupported(key, source=source)


def _require_p256_public(key: object, *, source: str) -> PublicKey:
    if isinstance(key, ec.EllipticCurvePublicKey):
        _check_curve(key.curve, source=source)
        return key
    raise _unsupported(key, source=source)


def _check_curve(curve: ec.EllipticCurve, *, source: str) -> None:
    if not isinstance(curve, ec.SECP256R1):
        raise KeyFileError(
            f"{source}: unsupported key: ECDSA {curve.name}; pkgtool signs with ECDSA "
            "P-256 (cosign's default)"
        )


def _unsupported(key: object, *, source: str) -> KeyFileError:
    kind = type(key).__name__.lstrip("_")
    return KeyFileError(
        f"{source}: unsupported key type {kind}; pkgtool signs with ECDSA P-256 (cosign's default)"
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
