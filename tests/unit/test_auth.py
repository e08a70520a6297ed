"""Authentication: WWW-Authenticate parsing, docker config credentials, and the full
Bearer and Basic flows against small loopback servers (a fake registry and token service)."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pkgtool.errors import PkgtoolError, RegistryError
from pkgtool.oci import auth
from pkgtool.oci.auth import Challenge, Credentials, parse_www_authenticate
from pkgtool.oci.registry import RegistryClient, insecure_from_env, is_loopback

# ---------------------------------------------------------------- WWW-Authenticate


def test_bearer_challenge_with_quoted_commas() -> None:
    header = 'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push"'
    assert parse_www_authenticate(header) == [Challenge("Bearer", {
        "realm": "https://auth.example.com/token",
        "service": "registry.example.com",
        "scope": "repository:a/b:pull,push",
    })]


def test_several_challenges_spaces_escapes_and_unquoted_values() -> None:
    header = 'Basic realm="Registry, private" , Bearer  realm = "https://t/x?a=b" , error=insufficient_scope, note="say \\"hi\\""'
    basic, bearer = parse_www_authenticate(header)
    assert basic == Challenge("Basic", {"realm": "Registry, private"})
    assert bearer.params == {"realm": "https://t/x?a=b", "error": "insufficient_scope", "note": 'say "hi"'}
    assert auth.pick_challenge([basic, bearer]) is bearer


@pytest.mark.parametrize("garbage", ["", ",,,", '"', "=", 'Bearer realm="unterminated', "Bearer ="])
def test_garbage_never_crashes(garbage: str) -> None:
    challenges = parse_www_authenticate(garbage)
    assert all(isinstance(c, Challenge) for c in challenges)


def test_parameter_names_are_case_insensitive() -> None:
    (challenge,) = parse_www_authenticate('bearer Realm="https://r", SERVICE=s')
    assert challenge.is_bearer and challenge.params == {"realm": "https://r", "service": "s"}


def test_token_params_merge_scopes_and_require_a_realm() -> None:
    challenge = Challenge("Bearer", {"realm": "https://t/token", "service": "svc", "scope": "repository:x:pull"})
    realm, query = auth.token_params(challenge, ["repository:a:pull,push"])
    assert realm == "https://t/token"
    assert query == [("service", "svc"), ("scope", "repository:a:pull,push"), ("scope", "repository:x:pull")]
    with pytest.raises(PkgtoolError, match="realm"):
        auth.token_params(Challenge("Bearer", {"realm": "file:///etc/passwd"}), [])


def test_token_response_parsing() -> None:
    assert auth.parse_token_response(b'{"token": "abc", "expires_in": 300}') == ("abc", 300)
    assert auth.parse_token_response(b'{"access_token": "xyz"}') == ("xyz", auth.DEFAULT_TOKEN_SECONDS)
    for bad in (b"<html>", b"[]", b'{"token": ""}', b'{"token": 5}'):
        with pytest.raises(PkgtoolError):
            auth.parse_token_response(bad)


# ---------------------------------------------------------------- docker config


def write_config(directory: Path, auths: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(json.dumps({"auths": auths}))
    return path


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_credentials_from_docker_config_via_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path / "dc", {
        "https://index.docker.io/v1/": {"auth": b64("hubuser:hub:pass")},
        "http://reg.example.com:5000/v2/": {"auth": b64("alice:s3cret")},
        "other.example.com": {"username": "bob", "password": "pw"},
    })
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "dc"))
    assert auth.docker_config_path() == tmp_path / "dc" / "config.json"
    assert auth.lookup_credentials("docker.io") == Credentials("hubuser", "hub:pass")
    assert auth.lookup_credentials("reg.example.com:5000") == Credentials("alice", "s3cret")
    assert auth.lookup_credentials("other.example.com") == Credentials("bob", "pw")
    assert auth.lookup_credentials("reg.example.com") is None  # the port is part of the name
    assert auth.lookup_credentials("unknown.example.com") is None


def test_missing_or_broken_config(tmp_path: Path) -> None:
    assert auth.lookup_credentials("x.io", config_path=tmp_path / "nope.json") is None
    broken = tmp_path / "broken.json"
    broken.write_text('{"auths": {"x.io": {"auth": "secret-but-not-base64!"}}}')
    with pytest.raises(PkgtoolError) as caught:
        auth.lookup_credentials("x.io", config_path=broken)
    assert "malformed 'auth'" in str(caught.value) and "secret" not in str(caught.value)
    not_json = tmp_path / "nj.json"
    not_json.write_text("password123 {")
    with pytest.raises(PkgtoolError) as caught:
        auth.lookup_credentials("x.io", config_path=not_json)
    assert "password123" not in str(caught.value)


def test_credentials_never_show_their_password() -> None:
    creds = Credentials("alice", "hunter2")
    assert "hunter2" not in repr(creds)
    assert creds.basic_header() == "Basic " + b64("alice:hunter2")


# ---------------------------------------------------------------- schemes


def test_plain_http_only_for_loopback_and_marked_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("127.0.0.1:5000", "127.3.4.5", "localhost:5000", "[::1]:5000", "localhost"):
        assert is_loopback(name), name
    for name in ("10.0.0.1:5000", "example.com", "128.0.0.1:5000", "localhost.example.com"):
        assert not is_loopback(name), name
    monkeypatch.setenv("PKGTOOL_INSECURE_REGISTRIES", " lab.local:5000 , 10.0.0.7 ")
    assert insecure_from_env() == {"lab.local:5000", "10.0.0.7"}
    assert RegistryClient("127.0.0.1:5000").base_url == "http://127.0.0.1:5000"
    assert RegistryClient("lab.local:5000").base_url == "http://lab.local:5000"
    assert RegistryClient("10.0.0.7:443").base_url == "http://10.0.0.7:443"
    assert RegistryClient("ghcr.io", insecure=["other.io"]).base_url == "https://ghcr.io"
    assert RegistryClient("x.io", insecure=["x.io"]).base_url == "http://x.io"
    assert RegistryClient("docker.io").base_url == "https://registry-1.docker.io"


# ---------------------------------------------------------------- live flows


class _Servers:
    """A fake registry demanding a Bearer token, and the token service issuing it."""

    def __init__(self) -> None:
        self.token_requests: list[dict[str, Any]] = []
        self.registry_auth: list[str] = []
        self.users = {"alice": "s3cret"}
        self.mode = "bearer"


def _start(handler: type[http.server.BaseHTTPRequestHandler]) -> tuple[http.server.ThreadingHTTPServer, str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def servers() -> Iterator[tuple[_Servers, str]]:
    state = _Servers()
    token_addr = ""

    class Token(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            header = self.headers.get("Authorization", "")
            user = None
            if header.startswith("Basic "):
                name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                if state.users.get(name) != password:
                    self._answer(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}')
                    return
                user = name
            state.token_requests.append({"query": query, "user": user})
            self._answer(200, json.dumps({"token": f"tok-{user or 'anon'}", "expires_in": 300}).encode())

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    class Registry(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            header = self.headers.get("Authorization", "")
            state.registry_auth.append(header)
            if state.mode == "bearer" and header not in ("Bearer tok-alice", "Bearer tok-anon"):
                self.send_response(401)
                self.send_header(
                    "WWW-Authenticate",
                    f'Bearer realm="http://{token_addr}/token",service="fake",scope="repository:org/img:pull"',
                )
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if state.mode == "basic" and header != Credentials("alice", "s3cret").basic_header():
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="fake"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = json.dumps({"name": "org/img", "tags": ["v1"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    token_server, token_addr = _start(Token)
    registry_server, registry_addr = _start(Registry)
    try:
        yield state, registry_addr
    finally:
        for server in (token_server, registry_server):
            server.shutdown()
            server.server_close()


def test_anonymous_bearer_flow_then_token_reuse(servers: tuple[_Servers, str], tmp_path: Path) -> None:
    state, addr = servers
    client = RegistryClient(addr, retries=0, docker_config=tmp_path / "none.json")
    assert client.list_tags("org/img") == ["v1"]
    assert client.list_tags("org/img") == ["v1"]
    assert len(state.token_requests) == 1  # the second call reused the cached token
    (request,) = state.token_requests
    assert request["user"] is None
    assert request["query"] == {"service": ["fake"], "scope": ["repository:org/img:pull"]}
    assert state.registry_auth == ["", "Bearer tok-anon", "Bearer tok-anon"]


def test_bearer_flow_with_docker_config_credentials(servers: tuple[_Servers, str], tmp_path: Path) -> None:
    state, addr = servers
    config = write_config(tmp_path, {addr: {"auth": b64("alice:s3cret")}})
    client = RegistryClient(addr, retries=0, docker_config=config)
    assert client.list_tags("org/img") == ["v1"]
    assert state.token_requests[0]["user"] == "alice"


def test_wrong_password_is_a_clear_error_without_the_password(servers: tuple[_Servers, str], tmp_path: Path) -> None:
    _state, addr = servers
    client = RegistryClient(addr, retries=0, credentials=Credentials("alice", "wrong-pw"))
    with pytest.raises(RegistryError) as caught:
        client.list_tags("org/img")
    message = str(caught.value)
    assert "refused the credentials" in message and "wrong-pw" not in message


def test_basic_flow(servers: tuple[_Servers, str], tmp_path: Path) -> None:
    state, addr = servers
    state.mode = "basic"
    anonymous = RegistryClient(addr, retries=0, docker_config=tmp_path / "none.json")
    with pytest.raises(RegistryError, match="needs credentials"):
        anonymous.list_tags("org/img")
    client = RegistryClient(addr, retries=0, credentials=Credentials("alice", "s3cret"))
    assert client.list_tags("org/img") == ["v1"]
    assert client.list_tags("org/img") == ["v1"]
    # After the first challenge, Basic credentials are sent up front.
    assert state.registry_auth[-1] == Credentials("alice", "s3cret").basic_header()
    assert state.registry_auth[-2] == state.registry_auth[-1]
