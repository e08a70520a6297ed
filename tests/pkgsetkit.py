"""The repository's own images, published from a temporary git copy: the Debian base, the
kernels and every package, for the tests of the package set and of the example images.

The copy holds pkg/, kernel/ and examples/.  When the committed base locks or kernel pins no
longer match what the mirror serves, they are refreshed there (`pkgtool base lock`,
`pkgtool kernel lock`) and every reference re-pinned (`pkgtool update-hashes`, which builds
what the new pins need) instead of failing: the mirror moves every week, and CI must still
test the code.  test_base.py and test_kernel_lock_apt.py keep checking that a stale lock on
its own is a clear error.

Builds are cached legitimately: what the registry has at its content-hash tag is not rebuilt.
Measurements (build seconds per package and arch, compressed sizes, boot times) are printed
at the end of the session and written to $PKGTOOL_MEASURE_DIR/packages.json when set.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pkgtool.base.lockfile import lock_differences
from pkgtool.base.recipe import BaseRecipe, load_recipe
from pkgtool.oci.registry import RegistryClient

REPO = Path(__file__).resolve().parents[1]
ARCHES = ("amd64", "arm64", "s390x")
# The VM flavour: what examples/ and the boot tests use.  kernel/bookworm-6.1 (the full
# Debian module tree, for hardware) pins the same .debs and is refreshed alongside.
KERNEL = Path("kernel") / "bookworm-6.1-virt"

MEASURE: dict[str, Any] = {"build_seconds": {}, "compressed_bytes": {}, "boot_seconds": {}}


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)


def pkgtool(*args: str, cwd: Path, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    """Run pkgtool and require success (its output is in the assertion message if not)."""
    proc = subprocess.run([sys.executable, "-m", "pkgtool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PKGTOOL_PROGRESS": "plain"})
    assert proc.returncode == 0, f"pkgtool {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def commit(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "--allow-empty", "-m", message)


def mirror_drift(recipe: BaseRecipe) -> dict[str, list[str]]:
    """Per arch, how the committed lock differs from what the mirror resolves now."""
    from pkgtool.base import bootstrap
    from pkgtool.base.base_build import load_locks

    locks = load_locks(recipe)
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(recipe.arches)) as pool:
        resolved = dict(zip(recipe.arches, pool.map(lambda a: bootstrap.resolve(recipe, a), recipe.arches), strict=True))
    return {arch: diffs for arch in recipe.arches if (diffs := lock_differences(locks[arch], resolved[arch]))}


def refresh_for_moved_mirror(root: Path, registry: str) -> dict[str, list[str]]:
    """If the mirror moved on, rewrite the base locks and the kernel pins in ``root`` and
    re-pin every reference (building what that needs); returns what was found stale
    (empty: nothing to do)."""
    from pkgtool.base.base_build import write_locks

    recipe = load_recipe(root / "pkg" / "base" / "base.yml")
    drift = mirror_drift(recipe)
    if drift:
        write_locks(recipe)
    for kernel in sorted((root / "kernel").glob("*/kernel.yml")):
        check = subprocess.run([sys.executable, "-m", "pkgtool", "kernel", "lock", "--check", str(kernel)], cwd=root,
                               capture_output=True, text=True, timeout=600)
        if check.returncode == 1:
            pkgtool("kernel", "lock", str(kernel), cwd=root, timeout=600)
            drift[f"kernel {kernel.parent.name}"] = check.stdout.splitlines()
        elif check.returncode != 0:
            raise AssertionError(f"pkgtool kernel lock --check failed:\n{check.stdout}\n{check.stderr}")
    if drift:
        commit(root, "refresh the locks for the moved mirror")
        pkgtool("update-hashes", "--registry", registry, str(root), cwd=root)
        commit(root, "re-pin to the refreshed base and kernels")
    return drift


@dataclass
class PackageSet:
    root: Path
    registry: str
    refs: dict[str, str]  # name -> REGISTRY/ORG/IMAGE:TAG
    digests: dict[str, str]  # name -> index digest
    manifests: dict[str, dict[str, str]]  # name -> arch -> manifest digest
    kernel_ref: str  # REGISTRY/pkgtool/kernel-virt:TAG@DIGEST (KERNEL)
    mirror_moved: dict[str, list[str]]
    rootfs_dir: Path
    _extracted: dict[tuple[str, str], Path] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def repository(self, name: str) -> str:
        return self.refs[name].split("/", 1)[1].rsplit(":", 1)[0]

    def pinned(self, name: str) -> str:
        return f"{self.refs[name]}@{self.digests[name]}"

    def rootfs(self, name: str, arch: str) -> Path:
        """The package's image for ``arch``, unpacked (once) from the registry."""
        with self._lock:
            if (name, arch) in self._extracted:
                return self._extracted[(name, arch)]
            dest = self.rootfs_dir / f"{name}-{arch}"
            with RegistryClient(self.registry) as client:
                manifest = client.get_manifest(self.repository(name), self.manifests[name][arch])
                for layer in manifest.layers:
                    data = b"".join(client.iter_blob(self.repository(name), layer.digest, expected_size=layer.size))
                    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tf:
                        tf.extractall(dest, filter="fully_trusted")
            self._extracted[(name, arch)] = dest
            return dest


def _pinned_kernel(root: Path, registry: str) -> str:
    ref = pkgtool("kernel", "build", "--registry", registry, str(root / KERNEL), cwd=root).stdout.split()[-1]
    if "@sha256:" not in ref:  # an older no-op build printed the tag only
        repository, tag = ref.split("/", 1)[1].rsplit(":", 1)
        with RegistryClient(registry) as client:
            found = client.head_manifest(repository, tag)
        assert found is not None, ref
        ref = f"{ref}@{found.digest}"
    return ref


def publish(registry: str, work: Path) -> PackageSet:
    """Copy the repository's images into a git repo under ``work`` and put them all in the registry."""
    from pkgtool.base.base_build import build_base
    from pkgtool.pkgbuild.api import execute, make_plan
    from pkgtool.pkgbuild.plan import BuildOptions
    from pkgtool.progress import Progress
    from pkgtool.spec.package import find_packages

    root = work / "repo"
    for part in ("pkg", "kernel", "examples"):
        shutil.copytree(REPO / part, root / part, symlinks=True)
    git(root, "init", "-q")
    git(root, "config", "user.email", "test@example.org")
    git(root, "config", "user.name", "test")
    commit(root, "the repository's images")
    moved = refresh_for_moved_mirror(root, registry)
    # The base first (a no-op when the registry has it): the packages build FROM it.
    build_base(load_recipe(root / "pkg" / "base" / "base.yml"), registry=registry)
    kernel_ref = _pinned_kernel(root, registry)

    plan = make_plan(find_packages(root / "pkg"), BuildOptions(registry=registry), cache_dir=work / "cache")
    log = io.StringIO()
    start = time.monotonic()
    with Progress("plain", stream=log) as progress:
        results = execute(plan, progress=progress)
    MEASURE["build_seconds"]["total"] = round(time.monotonic() - start, 1)
    refs, digests, manifests = {}, {}, {}
    for result in results:
        name = result.package.dir.name
        refs[name], digests[name] = result.ref, result.digest
        manifests[name] = {arch: d.digest for arch, d in result.manifests.items()}
        for arch, built in result.arch_builds.items():
            MEASURE["build_seconds"][f"{name}/{arch}"] = round(built.seconds, 1)
    return PackageSet(root=root, registry=registry, refs=refs, digests=digests, manifests=manifests,
                      kernel_ref=kernel_ref, mirror_moved=moved, rootfs_dir=work / "rootfs")


def summary() -> str:
    """MEASURE as compact lines: one per kind, `name/arch=value` sorted."""
    return "\n".join(f"{kind}: " + " ".join(f"{k}={v}" for k, v in sorted(values.items()))
                     for kind, values in sorted(MEASURE.items()) if values)


def report() -> None:
    text = json.dumps(MEASURE, indent=2, sort_keys=True)
    if out := os.environ.get("PKGTOOL_MEASURE_DIR"):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "packages.json").write_text(text + "\n")
