"""TLS for ``tcp://`` builders, with buildctl's options: a CA to trust, a client certificate
and key for mutual TLS, and a server name to check the certificate against.

A standalone buildkitd gets gRPC channel credentials; a dockerd over TCP (``docker://tcp://``)
gets an :class:`ssl.SSLContext` for the hijacked API connections and the same files for the
Docker SDK.  Files are read when the builder is opened, so a wrong path is an error before
any build starts.  Key material never goes into a message: errors name the file and the
option, nothing read from it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkgtool.errors import UsageError

# Certificates and keys are small; anything larger is not what the option wants.
_MAX_PEM_BYTES = 1 << 20


@dataclass(frozen=True)
class TLSOptions:
    """Where the TLS material for one builder is; all optional (no CA: the system's)."""

    ca_cert: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise UsageError("TLS: a client certificate and its key go together (give both --tlscert and --tlskey)")

    @property
    def empty(self) -> bool:
        return self.ca_cert is None and self.cert is None and self.key is None and self.server_name is None

    def describe(self) -> str:
        """For messages: which options are set, never what the files hold."""
        parts = []
        if self.ca_cert is not None:
            parts.append(f"CA {self.ca_cert}")
        if self.cert is not None:
            parts.append(f"client certificate {self.cert}")
        if self.server_name:
            parts.append(f"server name {self.server_name}")
        return ", ".join(parts) or "system CAs"


def _read(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(_MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read the TLS {what} {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_PEM_BYTES:
        raise UsageError(f"the TLS {what} {path} is over {_MAX_PEM_BYTES} bytes: not a PEM file")
    if b"-----BEGIN " not in data:
        raise UsageError(f"the TLS {what} {path} is not PEM")
    return data


def check_readable(options: TLSOptions) -> None:
    """Fail now, with the file named, if any of the files cannot be used."""
    if options.ca_cert is not None:
        _read(options.ca_cert, "CA certificate")
    if options.cert is not None:
        _read(options.cert, "client certificate")
    if options.key is not None:
        _read(options.key, "client key")


def grpc_credentials(options: TLSOptions) -> Any:
    """Channel credentials for a buildkitd (grpc.ssl_channel_credentials)."""
    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=_read(options.ca_cert, "CA certificate") if options.ca_cert else None,
        private_key=_read(options.key, "client key") if options.key else None,
        certificate_chain=_read(options.cert, "client certificate") if options.cert else None,
    )


def grpc_channel_options(options: TLSOptions) -> list[tuple[str, Any]]:
    """``--tlsservername``: the name the server's certificate must carry."""
    return [("grpc.ssl_target_name_override", options.server_name)] if options.server_name else []


def ssl_context(options: TLSOptions) -> ssl.SSLContext:
    """A client context (certificate checked, hostname checked) for dockerd over TCP."""
    check_readable(options)
    try:
        context = ssl.create_default_context(
            cadata=_read(options.ca_cert, "CA certificate").decode("ascii", "replace") if options.ca_cert else None,
        )
    except ssl.SSLError as exc:
        raise UsageError(f"the TLS CA certificate {options.ca_cert} is not usable: {exc.reason or exc}") from None
    if options.cert is not None and options.key is not None:
        try:
            context.load_cert_chain(options.cert, options.key)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
            raise UsageError(
                f"the TLS client certificate {options.cert} and key {options.key} are not usable: {reason}"
            ) from None
    return context
