"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

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
