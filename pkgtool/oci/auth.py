"""Registry authentication: challenges, credentials, and the token flow.

The flow (distribution "token authentication"): a request answered ``401`` carries a
``WWW-Authenticate`` challenge.  ``Basic`` means: send the user's credentials.  ``Bearer``
means: GET ``realm?service=…&scope=…`` (with the credentials, if any, as Basic auth) and
send the returned token.  :class:`Authenticator` runs that flow for one registry over the
client's :class:`~pkgtool.oci.http.Transport` and keeps the tokens per scope set; the
parsing and deciding below it are pure functions, testable without a network.

Credentials never appear in a repr, an error message or a log line.
"""

from __future__ import annotations

import base64
import binascii
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

from pkgtool.errors import PkgtoolError, RegistryError
from pkgtool.jsonio import load_object, object_or_none

if TYPE_CHECKING:
    from pkgtool.oci.http import Transport

# Docker's config keys Docker Hub credentials by its v1 index URL; the registry itself
# answers as any of these names.
_HUB_NAMES = ("docker.io", "index.docker.io", "registry-1.docker.io")
# Tokens must not be kept past their life; the spec's default lifetime is 60 s.
DEFAULT_TOKEN_SECONDS = 60
MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header; ``params`` keys are lowercase."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def is_bearer(self) -> bool:
        return self.scheme.lower() == "bearer"

    @property
    def is_basic(self) -> bool:
        return self.scheme.lower() == "basic"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into its challenges (RFC 7235 syntax).

    Handles several challenges in one header (``Basic realm="a", Bearer realm="b"``),
    quoted values containing commas, ``=`` and escaped quotes, and stray whitespace.
    Garbage yields what could be parsed; an empty list means no usable challenge.
    """
    challenges: list[Challenge] = []
    pos = 0
    length = len(header)
    current: Challenge | None = None

    def skip(chars: str) -> None:
        nonlocal pos
        while pos < length and header[pos] in chars:
            pos += 1

    def read_token() -> str:
        nonlocal pos
        start = pos
        while pos < length and header[pos] not in ' \t,="':
            pos += 1
        return header[start:pos]

    while pos < length:
        skip(" \t,")
        token = read_token()
        if not token:
            pos += 1  # a stray '=' or '"': skip it rather than loop forever
            continue
        skip(" \t")
        if pos < length and header[pos] == "=" and current is not None:
            pos += 1
            skip(" \t")
            value, pos = _value_at(header, pos)
            current.params[token.lower()] = value
        else:
            # A token not followed by '=' starts a new challenge (its scheme).  token68
            # forms (``Negotiate abc==``) have no params we could use; the scheme suffices.
            current = Challenge(scheme=token, params={})
            challenges.append(current)
    return challenges


def _value_at(header: str, pos: int) -> tuple[str, int]:
    """The parameter value starting at ``pos`` (quoted-string or token) and the end index."""
    length = len(header)
    if pos < length and header[pos] == '"':
        pos += 1
        out: list[str] = []
        while pos < length and header[pos] != '"':
            if header[pos] == "\\" and pos + 1 < length:
                pos += 1
            out.append(header[pos])
            pos += 1
        return "".join(out), pos + 1
    start = pos
    while pos < length and header[pos] not in " \t,":
        pos += 1
    return header[start:pos], pos


def pick_challenge(challenges: list[Challenge]) -> Challenge | None:
    """The challenge we can answer: Bearer preferred (it scopes access), then Basic."""
    for wanted in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme.lower() == wanted:
                return challenge
    return None


def repository_scope(repository: str, actions: str) -> str:
    """A token scope, e.g. ``repository:org/img:pull,push``."""
    return f"repository:{repository}:{actions}"


def token_params(challenge: Challenge, scopes: list[str]) -> tuple[str, list[tuple[str, str]]]:
    """The token endpoint URL and its query for a Bearer ``challenge``.

    The challenge's own ``scope`` (if the registry sent one) is requested along with ours:
    it names what the failed request needed.
    """
    realm = challenge.params.get("realm", "")
    if not realm.startswith(("https://", "http://")):
        raise PkgtoolError(f"registry sent a Bearer challenge without a usable realm ({realm!r})")
    query: list[tuple[str, str]] = []
    if service := challenge.params.get("service"):
        query.append(("service", service))
    wanted = list(scopes)
    for scope in challenge.params.get("scope", "").split(" "):
        if scope and scope not in wanted:
            wanted.append(scope)
    query.extend(("scope", scope) for scope in wanted)
    return realm, query


def parse_token_response(data: bytes) -> tuple[str, int]:
    """(token, lifetime seconds) from a token endpoint's JSON answer."""
    if len(data) > MAX_TOKEN_RESPONSE_BYTES:
        raise PkgtoolError("token endpoint answer is too large")
    doc = object_or_none(data)
    if doc is None:
        raise PkgtoolError("token endpoint did not answer with a JSON object")
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise PkgtoolError("token endpoint answer has no token")
    expires = doc.get("expires_in")
    lifetime = expires if isinstance(expires, int) and expires > 0 else DEFAULT_TOKEN_SECONDS
    return token, lifetime


# --------------------------------------------------------------------------- docker config


def docker_config_path() -> Path:
    """``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (as docker does)."""
    base = os.environ.get("DOCKER_CONFIG")
    return Path(base) / "config.json" if base else Path.home() / ".docker" / "config.json"


def lookup_credentials(registry: str, *, config_path: Path | None = None) -> Credentials | None:
    """Credentials for ``registry`` (``host[:port]``) from a docker config file, if any.

    Reads the ``auths`` section: a base64 ``auth`` of ``user:password``, or explicit
    ``username``/``password``.  Keys may be bare hosts or URLs (``https://host/v1/``).
    Credential helpers (``credsStore``) are not consulted.
    """
    path = config_path or docker_config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PkgtoolError(f"cannot read docker config {path}: {exc.strerror or exc}") from None
    # The message must not echo the file: it holds secrets (load_object never does).
    doc = load_object(raw, what=f"docker config {path}")
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        return None
    wanted = _config_names(registry)
    for key, entry in auths.items():
        if isinstance(key, str) and _normalise_config_key(key) in wanted and isinstance(entry, dict):
            found = _entry_credentials(entry, path=path, key=key)
            if found is not None:
                return found
    return None


def _config_names(registry: str) -> set[str]:
    return set(_HUB_NAMES) if registry in _HUB_NAMES else {registry}


def _normalise_config_key(key: str) -> str:
    host = key.split("://", 1)[1] if "://" in key else key
    return host.split("/", 1)[0]


def _entry_credentials(entry: dict[str, Any], *, path: Path, key: str) -> Credentials | None:
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise PkgtoolError(f"docker config {path}: entry {key!r} has a malformed 'auth' value") from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise PkgtoolError(f"docker config {path}: entry {key!r} 'auth' is not user:password")
        return Credentials(username, password)
    user, secret = entry.get("username"), entry.get("password")
    if isinstance(user, str) and isinstance(secret, str) and user:
        return Credentials(user, secret)
    return None


# --------------------------------------------------------------------------- the flow


class Authenticator:
    """Authorization headers for one registry; safe to use from several threads.

    Basic credentials apply to every request once a registry asked for them; Bearer tokens
    are kept per set of scopes until shortly before they expire.
    """

    def __init__(self, registry: str, transport: Transport, *, credentials: Credentials | None,
                 docker_config: Path | None) -> None:
        self.registry = registry
        self._transport = transport
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._basic: str | None = None
        self._credentials = credentials
        self._credentials_loaded = credentials is not None
        self._docker_config = docker_config

    def header(self, scopes: tuple[str, ...]) -> str | None:
        """The header to send with a request needing ``scopes``, if one is known."""
        with self._lock:
            token = self._tokens.get(tuple(sorted(scopes)))
            if token is not None and token[1] > time.monotonic():
                return token[0]
            return self._basic

    def _load_credentials(self) -> Credentials | None:
        with self._lock:
            if not self._credentials_loaded:
                self._credentials = lookup_credentials(self.registry, config_path=self._docker_config)
                self._credentials_loaded = True
            return self._credentials

    def authenticate(self, challenge_text: str, scopes: tuple[str, ...], operation: str) -> str:
        """Answer a 401's ``WWW-Authenticate`` challenge; returns the header to retry with."""
        challenge = pick_challenge(parse_www_authenticate(challenge_text))
        credentials = self._load_credentials()
        if challenge is None:
            raise RegistryError(
                f"registry {self.registry}: {operation}: unauthorized, and no usable authentication challenge"
            )
        if challenge.is_basic:
            if credentials is None:
                raise RegistryError(
                    f"registry {self.registry}: {operation}: needs credentials "
                    "(none for it in the docker config; run docker login)"
                )
            header = credentials.basic_header()
            with self._lock:
                self._basic = header
            return header
        try:
            realm, query = token_params(challenge, list(scopes))
        except PkgtoolError as exc:
            raise RegistryError(f"registry {self.registry}: {operation}: {exc}") from None
        token, lifetime = self._fetch_token(realm, query, operation, credentials)
        header = f"Bearer {token}"
        with self._lock:
            # Expire a little early: a token that dies mid-request costs a retry.
            self._tokens[tuple(sorted(scopes))] = (header, time.monotonic() + max(1.0, lifetime - 10))
        return header

    def _fetch_token(self, realm: str, query: list[tuple[str, str]], operation: str,
                     credentials: Credentials | None) -> tuple[str, int]:
        token_operation = f"token for {operation}"
        # The token endpoint takes repeated ``scope`` parameters: encode them ourselves.
        url = realm + (("&" if "?" in realm else "?") + urlencode(query) if query else "")
        pair = (credentials.username, credentials.password) if credentials else None
        transport = self._transport

        def attempt(_n: int) -> bytes:
            response = transport.send("GET", url, registry=self.registry, operation=token_operation, auth_pair=pair)
            with response:
                if response.status_code in (401, 403):
                    raise RegistryError(
                        f"registry {self.registry}: {operation}: the token service at "
                        f"{urlsplit(realm).netloc} refused {'the credentials' if credentials else 'anonymous access'}"
                    )
                transport.expect(response, (200,), registry=self.registry, operation=token_operation)
                return transport.read_bounded(response, MAX_TOKEN_RESPONSE_BYTES, registry=self.registry,
                                              operation=token_operation, what="token")

        data = transport.retrying(self.registry, token_operation, attempt)
        try:
            return parse_token_response(data)
        except PkgtoolError as exc:
            raise RegistryError(f"registry {self.registry}: {operation}: {exc}") from None
