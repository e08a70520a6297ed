"""The BuildKit builders of one build run: one per platform, opened once, only when needed.

Each arch goes to the builder :mod:`~pkgtool.pkgbuild.builders_config` assigned to it, or to
the default builder (``--builder``, ``$BUILDKIT_HOST``, else dockerd).  Two arches that name
the same builder share one connection.  Every error says which platform and which builder
it is about, so an unreachable arm64 host is reported as that, not as a bare socket error.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING

from pkgtool.buildkit.connect import BuilderAddress, resolve_address
from pkgtool.errors import PkgtoolError

if TYPE_CHECKING:
    from pkgtool.buildkit import Builder
    from pkgtool.buildkit.tls import TLSOptions
    from pkgtool.pkgbuild.builders_config import BuilderChoice


class BuilderUnavailable(PkgtoolError):
    """A platform's builder cannot be reached (or cannot build that platform)."""


def builder_label(address: BuilderAddress, *, default: bool) -> str:
    """How progress lines name a builder: the default dockerd is just ``dockerd``."""
    if address.kind == "dockerd":
        return "dockerd" if default else f"dockerd {address.url}"
    return address.url


class BuilderPool:
    """Arch -> :class:`~pkgtool.buildkit.Builder`, thread-safe, lazily connected."""

    def __init__(self, assignments: Mapping[str, BuilderChoice], *, default: str | None = None,
                 default_tls: TLSOptions | None = None,
                 opener: Callable[[BuilderAddress], Builder] | None = None) -> None:
        self._default = resolve_address(default, tls=default_tls)
        self._addresses: dict[str, BuilderAddress] = {
            arch: resolve_address(choice.address, tls=choice.tls) for arch, choice in assignments.items()
        }
        self._sources = {arch: choice.source for arch, choice in assignments.items()}
        self._opener = opener
        self._open: dict[BuilderAddress, Builder] = {}
        self._failed: dict[BuilderAddress, BuilderUnavailable] = {}
        self._lock = threading.Lock()

    def address(self, arch: str) -> BuilderAddress:
        return self._addresses.get(arch, self._default)

    def label(self, arch: str) -> str:
        return builder_label(self.address(arch), default=arch not in self._addresses)

    def _describe(self, arch: str) -> str:
        source = self._sources.get(arch)
        where = f", from {source}" if source else ""
        return f"linux/{arch}: builder {self.label(arch)}{where}"

    def get(self, arch: str) -> Builder:
        """The open builder for ``arch`` (connecting on first use)."""
        address = self.address(arch)
        with self._lock:
            if address in self._open:
                return self._open[address]
            if address in self._failed:
                raise self._failed[address]
            try:
                builder = self._connect(address)
            except PkgtoolError as exc:
                error = BuilderUnavailable(f"{self._describe(arch)}: {exc}")
                error.exit_code = exc.exit_code  # a usage error stays one
                self._failed[address] = error
                raise error from None
            self._open[address] = builder
            return builder

    def _connect(self, address: BuilderAddress) -> Builder:
        if self._opener is not None:
            return self._opener(address)
        from pkgtool.buildkit import open_builder

        return open_builder(address)

    def check_platforms(self, arches: Iterable[str]) -> None:
        """Connect to the builder of every arch and check it offers that platform."""
        offered: dict[BuilderAddress, set[str]] = {}
        for arch in dict.fromkeys(arches):
            builder = self.get(arch)
            address = self.address(arch)
            if address not in offered:
                try:
                    offered[address] = set(builder.platforms())
                except PkgtoolError as exc:
                    raise BuilderUnavailable(f"{self._describe(arch)}: {exc}") from None
            have = offered[address]
            if f"linux/{arch}" not in have:
                hint = "; register qemu binfmt handlers with `scripts/stack up`" if arch not in self._addresses else ""
                raise BuilderUnavailable(
                    f"{self._describe(arch)} cannot build linux/{arch} (it offers "
                    f"{', '.join(sorted(have)) or 'nothing'}){hint}"
                )

    def close(self) -> None:
        with self._lock:
            for builder in self._open.values():
                builder.close()
            self._open.clear()
