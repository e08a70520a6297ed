"""Which BuildKit builds which platform: ``--builders``, ``$PKGTOOL_BUILDERS`` or builders.toml.

``--builders linux/arm64=tcp://arm-host:1234,linux/s390x=unix:///run/buildkit-s390x.sock``
assigns a builder to each platform named; the other platforms go to ``--builder`` (else
``$BUILDKIT_HOST``, else dockerd's BuildKit, emulating foreign arches with binfmt).  The
first of these that is set is used whole (they are not merged, so what runs where is always
one place to read):

1. ``--builders`` on the command line;
2. ``$PKGTOOL_BUILDERS``, same syntax;
3. the config file ``$PKGTOOL_BUILDERS_CONFIG``, else ``$XDG_CONFIG_HOME/pkgtool/builders.toml``
   (``~/.config/pkgtool/builders.toml``), if it exists::

       [builders]
       "linux/arm64" = "tcp://arm-host:1234"

       [builders."linux/s390x"]
       address = "tcp://s390x-host:1234"
       tlscacert = "certs/ca.pem"          # relative to this file
       tlscert = "certs/client.pem"
       tlskey = "certs/client-key.pem"
       tlsservername = "buildkitd.internal"

An address is ``unix://PATH`` or ``tcp://HOST:PORT`` (a standalone buildkitd), or
``docker``, ``docker://unix://PATH``, ``docker://tcp://HOST:PORT`` (a dockerd).  TLS
options set in the file belong to that builder; ``--tlscacert``/``--tlscert``/``--tlskey``/
``--tlsservername`` apply to every other ``tcp://`` builder, ``--builder``'s included.

This module only parses and checks; it imports nothing heavy, so a no-op build that never
connects still rejects a malformed value.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pkgtool.arches import ARCHES
from pkgtool.buildkit.tls import TLSOptions
from pkgtool.errors import UsageError
from pkgtool.spec.package import normalize_arch

ENV_BUILDERS = "PKGTOOL_BUILDERS"
ENV_BUILDERS_CONFIG = "PKGTOOL_BUILDERS_CONFIG"
CONFIG_NAME = "builders.toml"
_TLS_KEYS = {"tlscacert": "ca_cert", "tlscert": "cert", "tlskey": "key", "tlsservername": "server_name"}
_ENTRY_KEYS = {"address", *_TLS_KEYS}


@dataclass(frozen=True)
class BuilderChoice:
    """One builder as configured: its address, its TLS options, and where it was set."""

    address: str
    tls: TLSOptions | None
    source: str  # "--builders", "$PKGTOOL_BUILDERS", "FILE:LINE", "--builder", ...

    def with_default_tls(self, tls: TLSOptions | None) -> BuilderChoice:
        return self if self.tls is not None or tls is None else replace(self, tls=tls)


def config_path() -> Path:
    """Where builders.toml is looked for."""
    if env := os.environ.get(ENV_BUILDERS_CONFIG):
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(xdg) / "pkgtool" / CONFIG_NAME


def check_address(address: str, *, where: str) -> str:
    """``address`` if it is a builder address pkgtool can dial, else a UsageError."""
    rest = address.removeprefix("docker://") if address.startswith("docker://") else address
    if address == "docker":
        return address
    parts = urlsplit(rest)
    if parts.scheme == "unix" and parts.path and not parts.netloc:
        return address
    if parts.scheme == "tcp" and parts.hostname and not parts.path.strip("/"):
        try:
            port = parts.port
        except ValueError:
            port = None
        if port:
            return address
    raise UsageError(
        f"{where}: {address!r} is not a builder address (use unix://PATH, tcp://HOST:PORT, docker, "
        "docker://unix://PATH or docker://tcp://HOST:PORT)"
    )


def _arch(platform: str, *, where: str) -> str:
    arch = normalize_arch(platform.strip())
    if arch is None or platform.count("/") > 1:
        valid = ", ".join(f"linux/{a}" for a in ARCHES)
        raise UsageError(f"{where}: unknown platform {platform.strip()!r} (valid: {valid})")
    return arch


def parse_builders(value: str, *, source: str) -> dict[str, BuilderChoice]:
    """``linux/arm64=ADDR,linux/s390x=ADDR`` -> arch -> choice (``source`` names the origin)."""
    out: dict[str, BuilderChoice] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            raise UsageError(f"{source}: empty entry in {value!r} (expected PLATFORM=ADDRESS,...)")
        platform, sep, address = item.partition("=")
        if not sep or not platform.strip() or not address.strip():
            raise UsageError(f"{source}: {item!r} is not PLATFORM=ADDRESS (e.g. linux/arm64=tcp://arm-host:1234)")
        arch = _arch(platform, where=source)
        if arch in out:
            raise UsageError(f"{source}: linux/{arch} is given two builders")
        out[arch] = BuilderChoice(check_address(address.strip(), where=source), None, source)
    return out


def _line_of(lines: list[str], token: str, start: int = 0) -> int:
    """1-based number of the first line at or after ``start`` that mentions ``token``."""
    for number in range(start, len(lines)):
        if token in lines[number]:
            return number + 1
    return start + 1


def _path(value: Any, base: Path, *, where: str, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise UsageError(f"{where}: {key} must be a file path (a string)")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def load_config(path: Path) -> dict[str, BuilderChoice]:
    """The builders in a builders.toml; errors are ``FILE:LINE: what``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the builders config: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: the builders config is not UTF-8 text") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        line = getattr(exc, "lineno", None)
        if line is None and "(at line " in message:
            # Python 3.11/3.12 put the position only into the message: "... (at line 3, column 9)".
            head, _, position = message.rpartition(" (at line ")
            number = position.split(",", 1)[0]
            line, message = (int(number), head) if number.isdigit() else (None, message)
        raise UsageError(f"{path}:{line or 1}: not valid TOML: {message}") from None
    lines = text.splitlines()
    for key in document:
        if key != "builders":
            raise UsageError(f"{path}:{_line_of(lines, key)}: unknown key {key!r} (expected a [builders] table)")
    table = document.get("builders", {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}:{_line_of(lines, 'builders')}: builders must be a table of PLATFORM = ADDRESS")
    out: dict[str, BuilderChoice] = {}
    for platform, entry in table.items():
        line = _line_of(lines, f'"{platform}"') if f'"{platform}"' in text else _line_of(lines, platform)
        where = f"{path}:{line}"
        arch = _arch(platform, where=where)
        if arch in out:
            raise UsageError(f"{where}: linux/{arch} is given two builders")
        if isinstance(entry, str):
            out[arch] = BuilderChoice(check_address(entry, where=where), None, where)
            continue
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: {platform} must be an address or a table with address = ...")
        for key in entry:
            if key not in _ENTRY_KEYS:
                raise UsageError(f"{path}:{_line_of(lines, key, line - 1)}: unknown key {key!r} for {platform} "
                                 f"(known: {', '.join(sorted(_ENTRY_KEYS))})")
        address = entry.get("address")
        if not isinstance(address, str):
            raise UsageError(f"{where}: {platform} needs address = \"unix://...\" or \"tcp://HOST:PORT\"")
        tls_values: dict[str, Any] = {}
        for key, field_name in _TLS_KEYS.items():
            if key not in entry:
                continue
            key_where = f"{path}:{_line_of(lines, key, line - 1)}"
            if field_name == "server_name":
                if not isinstance(entry[key], str) or not entry[key]:
                    raise UsageError(f"{key_where}: {key} must be a host name (a string)")
                tls_values[field_name] = entry[key]
            else:
                tls_values[field_name] = _path(entry[key], path.parent, where=key_where, key=key)
        try:
            tls = TLSOptions(**tls_values) if tls_values else None
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None
        out[arch] = BuilderChoice(check_address(address, where=where), tls, where)
    return out


def builder_assignments(flag: str | None, *, tls: TLSOptions | None = None,
                        environ: Mapping[str, str] | None = None) -> dict[str, BuilderChoice]:
    """arch -> builder from the first source that is set (see the module docstring); every
    ``tcp://`` builder without TLS options of its own gets ``tls``."""
    env = os.environ if environ is None else environ
    if flag is not None:
        found = parse_builders(flag, source="--builders")
    elif env.get(ENV_BUILDERS):
        found = parse_builders(env[ENV_BUILDERS], source=f"${ENV_BUILDERS}")
    else:
        path = config_path()
        found = load_config(path) if path.exists() else {}
    return {arch: choice.with_default_tls(tls) for arch, choice in found.items()}


def check_tls_files(assignments: Mapping[str, BuilderChoice], default_tls: TLSOptions | None) -> None:
    """Every TLS file named for a builder is readable PEM: a usage error before any build."""
    from pkgtool.buildkit.tls import check_readable

    for options in [default_tls, *(c.tls for c in assignments.values())]:
        if options is not None:
            check_readable(options)


def tls_from_flags(*, ca_cert: str | None, cert: str | None, key: str | None,
                   server_name: str | None) -> TLSOptions | None:
    """``--tlscacert``/``--tlscert``/``--tlskey``/``--tlsservername`` (None: none given)."""
    if not (ca_cert or cert or key or server_name):
        return None
    return TLSOptions(
        ca_cert=Path(ca_cert) if ca_cert else None,
        cert=Path(cert) if cert else None,
        key=Path(key) if key else None,
        server_name=server_name or None,
    )
