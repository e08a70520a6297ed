"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dockerdkit
import pkgsetkit
import pytest


@pytest.fixture(scope="session")
def pkgset(registry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[pkgsetkit.PackageSet]:
    """The base, the kernels and every package of this repository in the registry (built once
    per session, from a git copy; see tests/pkgsetkit.py)."""
    yield pkgsetkit.publish(registry, tmp_path_factory.mktemp("pkgset"))
    pkgsetkit.report()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the package-set measurements (build seconds, sizes, boot times) after the run:
    the fixture's own print is captured."""
    if any(pkgsetkit.MEASURE.values()):
        terminalreporter.write_sep("-", "package set measurements")
        terminalreporter.write_line(pkgsetkit.summary())


@pytest.fixture(scope="session")
def second_dockerd() -> Iterator[dockerdkit.Dockerd]:
    """A second dockerd, a second BuildKit builder (FACTS §7): own data root, socket and
    containerd namespaces, also on tcp://127.0.0.1 with mutual TLS.  Started once per
    session (about 6 s) and stopped at its end; its build cache is the tests' to prune."""
    docker0 = Path("/sys/class/net/docker0")
    had_docker0 = docker0.exists()
    with dockerdkit.running(tls=True) as daemon:
        yield daemon
    # The stack's daemon needs its bridge: a second daemon must never take it away.
    assert docker0.exists() or not had_docker0, "the second dockerd removed the host's docker0 bridge"
