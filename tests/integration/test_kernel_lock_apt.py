"""`pkgtool kernel lock` against the host's real apt, on a temp copy of kernel.yml, and a
stale pin failing `pkgtool kernel build` with the hint to run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pkgtool.kernel.apt import AptCache
from pkgtool.kernel.kernel_yml import load_kernel_spec
from pkgtool.kernel.lock import lock_kernel

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SERIES = REPO / "kernel" / "bookworm-6.1"


def _copy_series(tmp_path: Path) -> Path:
    dest = tmp_path / "bookworm-6.1"
    shutil.copytree(SERIES, dest)
    return dest / "kernel.yml"


def _pkgtool(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pkgtool", *args], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, check=False)


def test_lock_against_real_apt(tmp_path: Path) -> None:
    path = _copy_series(tmp_path)
    original = path.read_text()
    result = lock_kernel(path)
    apt = AptCache()
    spec = load_kernel_spec(path)
    for entry in spec.arches:
        # The pin is what the metapackage depends on now, with apt's own SHA256.
        meta = apt.candidate(f"linux-image-{entry.arch}", entry.arch)
        assert (entry.package, entry.version) in meta.depends_on()
        record = apt.exact(entry.package, entry.arch, entry.version)
        assert record is not None and record.sha256 == entry.sha256
    assert spec.source is not None
    assert apt.candidate(spec.source.package, "all").version == spec.source.version
    # Comments and layout: only changed values moved, every comment line is still there.
    comments = [ln for ln in original.splitlines() if ln.lstrip().startswith("#")]
    assert comments == [ln for ln in path.read_text().splitlines() if ln.lstrip().startswith("#")]
    for change in result.changes:
        assert change.new in path.read_text().splitlines()[change.line - 1] or not change.new
    # A second lock finds nothing to do; --check agrees and exits 0.
    assert lock_kernel(path).changes == []
    check = _pkgtool("kernel", "lock", "--check", str(path.parent))
    assert check.returncode == 0, check.stderr
    assert "up to date" in check.stderr


def test_lock_cli_reports_file_line_changes(tmp_path: Path) -> None:
    path = _copy_series(tmp_path)
    text = path.read_text()
    # Make the amd64 pin certainly stale: an ABI that does not exist.
    stale = text.replace("package: linux-image-6.1.0-", "package: linux-image-6.1.0-0", 1)
    path.write_text(stale)
    check = _pkgtool("kernel", "lock", "--check", str(path.parent))
    assert check.returncode == 1
    assert path.read_text() == stale
    lines = check.stdout.splitlines()
    assert any(f"{path}:" in ln and "arches.amd64.package: linux-image-6.1.0-0" in ln and " -> linux-image-" in ln
               for ln in lines), check.stdout
    done = _pkgtool("kernel", "lock", str(path.parent))
    assert done.returncode == 0, done.stderr
    assert done.stdout == check.stdout
    assert "linux-image-6.1.0-0" not in path.read_text()


def _one_arch_yml(tmp_path: Path, *, image: str, arch: str, package: str, version: str, sha256: str) -> Path:
    """A kernel.yml with one arch (so a failing build does not fetch the others)."""
    directory = tmp_path / "one"
    directory.mkdir()
    path = directory / "kernel.yml"
    path.write_text(f"image: {image}\nversion: {version}\nsource_date_epoch: 1700000000\narches:\n"
                    f"  {arch}:\n    package: {package}\n    sha256: {sha256}\n")
    return path


def test_build_on_a_stale_pin_says_to_run_lock(tmp_path: Path, registry: str, unique_repo: str) -> None:
    spec = load_kernel_spec(SERIES / "kernel.yml")
    entry = spec.arch("amd64")
    # A version the mirror never had, and an empty work cache (so nothing is cached).
    path = _one_arch_yml(tmp_path, image=unique_repo, arch="amd64", package=entry.package,
                         version="6.1.0-0", sha256=entry.sha256)
    proc = _pkgtool("kernel", "build", "--registry", registry, str(path.parent),
                    env={"PKGTOOL_WORK_CACHE": str(tmp_path / "work")})
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert f"{path}:5: arches.amd64: {entry.package}:amd64=6.1.0-0 is no longer on the mirror" in error, proc.stderr
    assert f"run `pkgtool kernel lock {path.parent}` to re-pin" in error


def test_build_refuses_a_pin_whose_sha256_the_mirror_does_not_list(tmp_path: Path, registry: str,
                                                                   unique_repo: str) -> None:
    entry = load_kernel_spec(SERIES / "kernel.yml").arch("arm64")
    path = _one_arch_yml(tmp_path, image=unique_repo, arch="arm64", package=entry.package,
                         version=entry.version, sha256="f" * 64)
    proc = _pkgtool("kernel", "build", "--registry", registry, str(path.parent),
                    env={"PKGTOOL_WORK_CACHE": str(tmp_path / "work")})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "the mirror lists sha256" in proc.stderr and "but the pin says ffff" in proc.stderr
    assert not list((tmp_path / "work").glob("debs/*.deb"))
