"""--builders, $PKGTOOL_BUILDERS and builders.toml: parsing, precedence and one-line errors;
the builder pool's per-platform routing and its error messages (with a fake opener)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pkgtool.buildkit.connect import BuilderAddress
from pkgtool.buildkit.tls import TLSOptions, check_readable, ssl_context
from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.pkgbuild.builder_pool import BuilderPool, BuilderUnavailable
from pkgtool.pkgbuild.builders_config import (
    BuilderChoice,
    builder_assignments,
    load_config,
    parse_builders,
    tls_from_flags,
)


def test_parse_builders_assigns_each_platform() -> None:
    found = parse_builders("linux/arm64=tcp://arm-host:1234, s390x=unix:///run/buildkit-s390x.sock,"
                           "linux/amd64=docker://unix:///run/d.sock", source="--builders")
    assert {a: c.address for a, c in found.items()} == {
        "arm64": "tcp://arm-host:1234",
        "s390x": "unix:///run/buildkit-s390x.sock",
        "amd64": "docker://unix:///run/d.sock",
    }
    assert all(c.source == "--builders" and c.tls is None for c in found.values())


@pytest.mark.parametrize(("value", "message"), [
    ("linux/arm64", "'linux/arm64' is not PLATFORM=ADDRESS"),
    ("linux/arm64=", "is not PLATFORM=ADDRESS"),
    ("linux/arm64=tcp://a:1,", "empty entry"),
    ("linux/mips=tcp://a:1", "unknown platform 'linux/mips'"),
    ("windows/amd64/x=tcp://a:1", "unknown platform"),
    ("linux/arm64=tcp://a:1,arm64=tcp://b:2", "linux/arm64 is given two builders"),
    ("linux/arm64=ftp://a:1", "'ftp://a:1' is not a builder address"),
    ("linux/arm64=tcp://arm-host", "'tcp://arm-host' is not a builder address"),
    ("linux/arm64=tcp://arm-host:port", "is not a builder address"),
    ("linux/arm64=unix://", "is not a builder address"),
    ("linux/arm64=docker://ssh://h", "is not a builder address"),
])
def test_parse_builders_rejects_bad_values_in_one_line(value: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_builders(value, source="--builders")
    text = str(caught.value)
    assert text.startswith("--builders: ") and message in text and "\n" not in text


def test_precedence_flag_then_env_then_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "builders.toml"
    config.write_text('[builders]\n"linux/s390x" = "tcp://from-file:1"\n')
    monkeypatch.setenv("PKGTOOL_BUILDERS_CONFIG", str(config))
    env = {"PKGTOOL_BUILDERS": "linux/arm64=tcp://from-env:1"}
    assert builder_assignments("linux/amd64=tcp://from-flag:1", environ=env)["amd64"].address == "tcp://from-flag:1"
    from_env = builder_assignments(None, environ=env)
    assert list(from_env) == ["arm64"] and from_env["arm64"].source == "$PKGTOOL_BUILDERS"
    from_file = builder_assignments(None, environ={})
    assert from_file["s390x"].address == "tcp://from-file:1"
    assert from_file["s390x"].source == f"{config}:2"
    monkeypatch.setenv("PKGTOOL_BUILDERS_CONFIG", str(tmp_path / "absent.toml"))
    assert builder_assignments(None, environ={}) == {}


def test_default_config_location_is_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PKGTOOL_BUILDERS_CONFIG", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "pkgtool").mkdir()
    (tmp_path / "pkgtool" / "builders.toml").write_text('[builders]\narm64 = "unix:///run/bk.sock"\n')
    assert builder_assignments(None, environ={})["arm64"].address == "unix:///run/bk.sock"


def test_config_file_tables_with_tls_relative_to_the_file(tmp_path: Path) -> None:
    config = tmp_path / "conf" / "builders.toml"
    config.parent.mkdir()
    config.write_text(
        "# builders\n"
        "[builders]\n"
        '"linux/arm64" = "tcp://arm:1234"\n'
        "\n"
        '[builders."linux/s390x"]\n'
        'address = "tcp://s390x:1234"\n'
        'tlscacert = "certs/ca.pem"\n'
        'tlscert = "/abs/client.pem"\n'
        'tlskey = "/abs/client-key.pem"\n'
        'tlsservername = "buildkitd"\n'
    )
    found = load_config(config)
    assert found["arm64"] == BuilderChoice("tcp://arm:1234", None, f"{config}:3")
    tls = found["s390x"].tls
    assert tls == TLSOptions(ca_cert=config.parent / "certs/ca.pem", cert=Path("/abs/client.pem"),
                             key=Path("/abs/client-key.pem"), server_name="buildkitd")
    # Flag TLS applies only where the file gave none.
    flag_tls = TLSOptions(ca_cert=Path("/flag/ca.pem"))
    assert found["arm64"].with_default_tls(flag_tls).tls == flag_tls
    assert found["s390x"].with_default_tls(flag_tls).tls == tls


@pytest.mark.parametrize(("text", "message"), [
    ('[builders]\n"linux/arm64" = \n', ":2: not valid TOML"),
    ('[builder]\narm64 = "tcp://a:1"\n', ":1: unknown key 'builder'"),
    ('[builders]\n\n"linux/mips" = "tcp://a:1"\n', ":3: unknown platform 'linux/mips'"),
    ('[builders]\narm64 = "tcp://a"\n', ":2: 'tcp://a' is not a builder address"),
    ('[builders."linux/arm64"]\naddress = "tcp://a:1"\ntlscert = "c.pem"\n', ":1: TLS: a client certificate and its key go together"),
    ('[builders."linux/arm64"]\naddress = "tcp://a:1"\ntls-cert = "c.pem"\n', ":3: unknown key 'tls-cert'"),
    ('[builders."linux/arm64"]\ntlskey = "k.pem"\n', ":1: linux/arm64 needs address"),
    ('[builders."linux/arm64"]\naddress = "tcp://a:1"\ntlscacert = 3\n', ":3: tlscacert must be a file path"),
    ("builders = 3\n", ":1: builders must be a table"),
])
def test_config_file_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "builders.toml"
    config.write_text(text)
    with pytest.raises(UsageError) as caught:
        load_config(config)
    assert str(caught.value).startswith(str(config)) and message in str(caught.value), str(caught.value)


def test_tls_flags_and_unreadable_files_never_show_content(tmp_path: Path) -> None:
    assert tls_from_flags(ca_cert=None, cert=None, key=None, server_name=None) is None
    with pytest.raises(UsageError, match="go together"):
        tls_from_flags(ca_cert=None, cert="c.pem", key=None, server_name=None)
    missing = TLSOptions(ca_cert=tmp_path / "nope.pem")
    with pytest.raises(UsageError, match=r"cannot read the TLS CA certificate .*nope\.pem: No such file"):
        check_readable(missing)
    secret = tmp_path / "key.pem"
    secret.write_text("TOP-SECRET-KEY-MATERIAL\n")
    (tmp_path / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(UsageError) as caught:
        check_readable(TLSOptions(cert=tmp_path / "cert.pem", key=secret))
    assert "is not PEM" in str(caught.value) and "TOP-SECRET" not in str(caught.value)
    (tmp_path / "bad-ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 SECRETBITS\n-----END CERTIFICATE-----\n")
    with pytest.raises(UsageError) as caught:
        ssl_context(TLSOptions(ca_cert=tmp_path / "bad-ca.pem"))
    assert "is not usable" in str(caught.value) and "SECRETBITS" not in str(caught.value)


# --------------------------------------------------------------------------- the pool


class FakeBuilder:
    def __init__(self, address: BuilderAddress, platforms: list[str]) -> None:
        self.address = address
        self._platforms = platforms
        self.closed = False

    def platforms(self) -> list[str]:
        return self._platforms

    def close(self) -> None:
        self.closed = True


def test_pool_routes_each_arch_to_its_builder_and_shares_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BUILDKIT_HOST", raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///stack/docker.sock")
    opened: list[BuilderAddress] = []

    def opener(address: BuilderAddress) -> Any:
        opened.append(address)
        return FakeBuilder(address, ["linux/amd64", "linux/arm64", "linux/s390x"])

    assignments = parse_builders("linux/arm64=tcp://arm:1234,linux/s390x=tcp://arm:1234", source="--builders")
    pool = BuilderPool(assignments, opener=opener)
    assert pool.address("amd64") == BuilderAddress("dockerd", "unix:///stack/docker.sock")
    assert pool.label("amd64") == "dockerd" and pool.label("arm64") == "tcp://arm:1234"
    pool.check_platforms(["amd64", "arm64", "s390x"])
    assert pool.get("arm64") is pool.get("s390x")
    assert [a.url for a in opened] == ["unix:///stack/docker.sock", "tcp://arm:1234"]
    builders = [pool.get("amd64"), pool.get("arm64")]
    pool.close()
    assert all(b.closed for b in builders)


def test_pool_errors_name_platform_builder_and_source() -> None:
    def opener(address: BuilderAddress) -> Any:
        if address.url == "tcp://down:1":
            raise PkgtoolError("cannot reach BuildKit at tcp://down:1: Connection refused")
        return FakeBuilder(address, ["linux/amd64"])

    pool = BuilderPool(parse_builders("linux/arm64=tcp://down:1,linux/s390x=tcp://amd-only:1", source="--builders"),
                       default="tcp://default:1", opener=opener)
    with pytest.raises(BuilderUnavailable) as caught:
        pool.get("arm64")
    assert str(caught.value) == ("linux/arm64: builder tcp://down:1, from --builders: "
                                 "cannot reach BuildKit at tcp://down:1: Connection refused")
    with pytest.raises(BuilderUnavailable, match="linux/arm64: builder tcp://down:1"):
        pool.get("arm64")  # remembered, not retried per arch
    with pytest.raises(BuilderUnavailable, match=r"linux/s390x: builder tcp://amd-only:1, from --builders cannot "
                                                 r"build linux/s390x \(it offers linux/amd64\)$"):
        pool.check_platforms(["s390x"])
    pool.check_platforms(["amd64"])  # the default builder
