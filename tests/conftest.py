"""Shared fixtures.

Integration tests run against the real local stack (`scripts/stack up`): a Distribution
registry on loopback and dockerd with its BuildKit.  They fail, not skip, when the stack is
down, so a broken CI environment can never pass silently.
"""

from __future__ import annotations

import os
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pkgtool import settings

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def registry() -> str:
    """host:port of the stack's registry, checked to answer."""
    addr = settings.registry()
    try:
        with urllib.request.urlopen(f"http://{addr}/v2/", timeout=5) as resp:
            assert resp.status == 200
    except OSError as exc:
        pytest.fail(f"registry {addr} does not answer ({exc}); run: scripts/stack up")
    return addr


@pytest.fixture(scope="session")
def docker_host() -> str:
    """The Docker daemon address, checked to answer."""
    import docker

    host = settings.docker_host()
    try:
        docker.DockerClient(base_url=host, timeout=10).ping()
    except Exception as exc:
        pytest.fail(f"dockerd at {host} does not answer ({exc}); run: scripts/stack up")
    return host


@pytest.fixture
def unique_repo() -> str:
    """A repository name no other test (or earlier run) uses."""
    return f"pkgtool-test/{secrets.token_hex(6)}"


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private, empty pkgtool cache for one test."""
    path = tmp_path / "cache"
    monkeypatch.setenv("PKGTOOL_CACHE", str(path))
    yield path


@pytest.fixture(scope="session")
def registry_storage() -> Path:
    """Where the stack's registry keeps blobs (for tamper tests)."""
    state = Path(os.environ.get("PKGTOOL_STACK_STATE", "/var/lib/pkgtool-stack"))
    return state / "registry" / "docker" / "registry" / "v2"
