"""Fixtures shared by the integration tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
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


@pytest.fixture
def buildkitd(registry: str) -> Iterator[str]:
    """A standalone buildkitd's address: $BUILDKIT_HOST when set, else one started here from
    $PKGTOOL_BUILDKITD or a `buildkitd` on PATH.  Debian bookworm packages none, so CI skips
    this; moby/buildkit v0.11.6 (vendored) builds with bookworm's golang-go:
    `go build -mod=vendor -o /usr/local/bin/buildkitd ./cmd/buildkitd`."""
    if host := os.environ.get("BUILDKIT_HOST"):
        yield host
        return
    binary = os.environ.get("PKGTOOL_BUILDKITD") or shutil.which("buildkitd")
    if not binary:
        pytest.skip("no standalone buildkitd (set PKGTOOL_BUILDKITD or BUILDKIT_HOST to test that builder)")
    state = Path(tempfile.mkdtemp(prefix="pkgtool-bk-", dir="/tmp"))  # short: a unix socket path
    (state / "buildkitd.toml").write_text(f'[registry."{registry}"]\n  http = true\n')
    address = f"unix://{state}/buildkitd.sock"
    with open(state / "log", "wb") as log:
        proc = subprocess.Popen([binary, "--config", str(state / "buildkitd.toml"), "--root", str(state / "root"),
                                 "--addr", address], stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            if (state / "buildkitd.sock").exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert proc.poll() is None, (state / "log").read_text()[-2000:]
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        subprocess.run(["umount", "-R", str(state / "root")], capture_output=True)
        shutil.rmtree(state, ignore_errors=True)
