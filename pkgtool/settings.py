"""Where things live by default: the cache, the registry, the docker daemon.

Precedence everywhere: command-line flag > environment variable > default.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_REGISTRY = "127.0.0.1:5000"
# The socket `scripts/stack up` gives the dockerd it starts (when no daemon was running).
STACK_DOCKER_SOCKET = Path(os.environ.get("PKGTOOL_STACK_RUN", "/run/pkgtool-stack")) / "docker.sock"


def cache_dir(flag: str | None = None) -> Path:
    if flag:
        return Path(flag)
    if env := os.environ.get("PKGTOOL_CACHE"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "pkgtool"


def work_cache_dir() -> Path:
    """Where downloads and bootstrap outputs that are not OCI content live.

    The cache directory (:func:`cache_dir`) *is* an OCI image layout and refuses foreign
    files at its root, so verified ``.deb`` downloads, mmdebstrap tarballs and staged build
    contexts live beside it: ``$PKGTOOL_WORK_CACHE``, else ``/var/cache/pkgtool`` when
    running as root (the bootstraps need root anyway), else ``$XDG_CACHE_HOME/pkgtool-work``.
    Everything stored there is named by a content hash and re-verified on use, so a stale
    or tampered entry is re-created, never trusted.
    """
    if env := os.environ.get("PKGTOOL_WORK_CACHE"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/pkgtool")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "pkgtool-work"


def registry(flag: str | None = None) -> str:
    return flag or os.environ.get("PKGTOOL_REGISTRY") or DEFAULT_REGISTRY


def docker_host(flag: str | None = None) -> str:
    """The Docker daemon address: flag, $DOCKER_HOST, the system socket, or the stack's."""
    if flag:
        return flag
    if env := os.environ.get("DOCKER_HOST"):
        return env
    system = Path("/var/run/docker.sock")
    if system.exists():
        return f"unix://{system}"
    return f"unix://{STACK_DOCKER_SOCKET}"
