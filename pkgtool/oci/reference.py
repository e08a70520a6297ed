"""Image references: ``[registry/]repository[:tag][@digest]``, with Docker's defaults.

The grammar follows the distribution project's reference grammar, which every Docker and
OCI tool shares, so a name that works with ``docker pull`` parses the same way here:

* The first ``/``-separated component is a registry host only if it contains ``.`` or
  ``:`` or is ``localhost`` (otherwise ``org/image`` would be read as host ``org``).
* Without a registry, ``docker.io`` is implied, and a one-component Docker Hub repository
  lives under ``library/`` (``alpine`` is ``docker.io/library/alpine``).
* Without a tag or digest, ``latest`` is implied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from pkgtool.errors import PkgtoolError
from pkgtool.oci.descriptor import check_digest

DOCKER_HUB = "docker.io"
DEFAULT_TAG = "latest"
# Docker's own limit on the length of registry/repository.
MAX_NAME_LENGTH = 255

# A host name label, an IPv4 address, or a bracketed IPv6 address, with an optional port.
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST_RE = re.compile(
    rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])(?::[0-9]{{1,5}})?$"
)
# Repository path components: lowercase alphanumerics joined by single separators.
_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# Docker Hub answers to several names; they all mean the same registry.
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


@dataclass(frozen=True)
class Reference:
    """A fully qualified reference.  ``tag`` and ``digest`` may both be set
    (``repo:tag@digest``); then the digest is what is fetched."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        return parse_reference(text)

    @property
    def name(self) -> str:
        """``registry/repository``, the part before any tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def locator(self) -> str:
        """What goes after ``/manifests/`` in the API: the digest if known, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        """The same repository at ``tag`` (any digest is dropped: it named other content)."""
        _check_tag(tag, context=f"{self.name}:{tag}")
        return replace(self, tag=tag, digest=None)

    def with_digest(self, digest: str) -> Reference:
        """The same repository pinned to ``digest`` (the tag is kept, for display)."""
        _check_digest(digest, context=f"{self.name}@{digest}")
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str, *, default_registry: str = DOCKER_HUB) -> Reference:
    """Parse ``[registry/]repository[:tag][@digest]``; malformed input raises a one-line
    :class:`PkgtoolError` that quotes the input and says what is wrong with it.

    ``default_registry`` is used when the text names no registry (Docker Hub by default,
    as in Docker; the ``library/`` prefix only applies on Docker Hub).
    """
    if not isinstance(text, str) or not text:
        raise PkgtoolError("invalid image reference '': it is empty")
    if len(text) > 4096 or any(c.isspace() or ord(c) < 32 for c in text):
        raise PkgtoolError(f"invalid image reference {text[:80]!r}: contains whitespace or control characters")

    rest, at, digest = text.partition("@")
    if "@" in digest:
        raise PkgtoolError(f"invalid image reference {text!r}: more than one '@'")
    if at and not digest:
        raise PkgtoolError(f"invalid image reference {text!r}: empty digest after '@'")

    # A tag is a ':' after the last '/', so "host:5000/repo" keeps its port.
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not tag:
            raise PkgtoolError(f"invalid image reference {text!r}: empty tag after ':'")

    registry, repository = _split_registry(rest, default_registry)
    if not repository:
        raise PkgtoolError(f"invalid image reference {text!r}: no repository name")
    if registry in _HUB_ALIASES:
        registry = DOCKER_HUB
    if not _HOST_RE.match(registry):
        raise PkgtoolError(f"invalid image reference {text!r}: bad registry host {registry!r}")
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    for component in repository.split("/"):
        if not component:
            raise PkgtoolError(f"invalid image reference {text!r}: empty path component")
        if not _COMPONENT_RE.match(component):
            hint = " (must be lowercase)" if component.lower() != component else ""
            raise PkgtoolError(
                f"invalid image reference {text!r}: bad repository component {component!r}{hint}"
            )
    if len(f"{registry}/{repository}") > MAX_NAME_LENGTH:
        raise PkgtoolError(f"invalid image reference {text[:80]!r}...: name longer than {MAX_NAME_LENGTH} characters")
    if tag is not None:
        _check_tag(tag, context=text)
    if digest:
        _check_digest(digest, context=text)
    return Reference(registry=registry, repository=repository, tag=tag, digest=digest or None)


def _split_registry(name: str, default_registry: str) -> tuple[str, str]:
    first, sep, remainder = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        return first, remainder
    return default_registry, name


def _check_tag(tag: str, *, context: str) -> None:
    if not _TAG_RE.match(tag):
        raise PkgtoolError(
            f"invalid image reference {context!r}: bad tag {tag!r} "
            "(letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')"
        )


def _check_digest(digest: str, *, context: str) -> None:
    try:
        check_digest(digest)
    except PkgtoolError:
        raise PkgtoolError(
            f"invalid image reference {context!r}: bad digest {digest!r} (expected sha256:<64 hex digits>)"
        ) from None
