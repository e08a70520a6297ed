"""``pkgtool verify --rebuild``: build a package again from the source revision its signed
provenance records, and compare the digests with the ones that were signed.

This is what reproducible builds are for: an auditor does not have to trust the builder,
only the sources.  The steps:

1. read ``externalParameters`` (package path, source repository and revision, platforms,
   build args) from the provenance that ``pkgtool verify`` has just checked;
2. export that revision's tree with ``git archive`` (from the git repository around the
   current directory when it has the commit, else from a clone of the recorded repository)
   into a private directory: no checkout, work tree or index of the user's is touched;
3. build the package there with ``--force --no-push`` (the FROM images come from the
   registry, by the digests pinned in that revision's Dockerfile) into a throw-away cache;
4. compare every rebuilt arch's manifest digest with the signed index's entry.
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pkgtool.errors import PkgtoolError, UsageError
from pkgtool.progress import Progress

REDACTED = "[redacted]"


@dataclass(frozen=True)
class RebuildResult:
    platform: str
    signed: str
    rebuilt: str

    @property
    def matches(self) -> bool:
        return self.signed == self.rebuilt


def _git(cwd: Path, *args: str, binary: bool = False) -> subprocess.CompletedProcess[Any]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=not binary, check=False, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PkgtoolError(f"git {' '.join(args)}: {exc}") from None


def _source_repository_with(revision: str, recorded: str | None, work: Path) -> Path:
    """A git repository that has ``revision``: the one around the current directory, or a
    fresh clone of the recorded source repository."""
    top = _git(Path.cwd(), "rev-parse", "--show-toplevel")
    if top.returncode == 0:
        here = Path(top.stdout.strip())
        if _git(here, "cat-file", "-e", f"{revision}^{{commit}}").returncode == 0:
            return here
    if not recorded:
        raise PkgtoolError(f"--rebuild: revision {revision} is not in this repository and the provenance names no source repository")
    clone = work / "clone"
    cloned = _git(work, "clone", "--quiet", "--no-checkout", recorded, str(clone))
    if cloned.returncode != 0:
        detail = " ".join(cloned.stderr.split())[-300:]
        raise PkgtoolError(f"--rebuild: cannot clone {recorded}: {detail}")
    if _git(clone, "cat-file", "-e", f"{revision}^{{commit}}").returncode != 0:
        raise PkgtoolError(f"--rebuild: {recorded} has no commit {revision}")
    return clone


def _export(repository: Path, revision: str, dest: Path) -> None:
    archive = dest.parent / "source.tar"
    made = _git(repository, "archive", "--format=tar", f"--output={archive}", revision, binary=True)
    if made.returncode != 0:
        raise PkgtoolError(f"--rebuild: git archive {revision} failed: {made.stderr.decode(errors='replace').strip()}")
    dest.mkdir()
    with tarfile.open(archive) as tf:
        # git's own archive of a commit: still, never let a member leave the directory.
        tf.extractall(dest, filter="tar")
    archive.unlink()


def rebuild_from_provenance(provenance: Mapping[str, Any], *, signed: Mapping[str, str], registry: str,
                            progress: Progress) -> list[RebuildResult]:
    """Rebuild what ``provenance`` describes; ``signed`` maps ``linux/ARCH`` to the signed
    manifest digests.  Returns one result per rebuilt platform."""
    from pkgtool.pkgbuild.api import execute, make_plan
    from pkgtool.pkgbuild.plan import BuildOptions, cpu_jobs

    definition = provenance.get("buildDefinition") or {}
    external = definition.get("externalParameters") or {}
    package = external.get("package")
    source = external.get("source") or {}
    revision = source.get("revision")
    platforms = external.get("platforms") or []
    build_args = external.get("buildArgs") or {}
    if not isinstance(package, str) or not package or package.startswith("/") or ".." in package.split("/"):
        raise PkgtoolError("--rebuild: the provenance names no package path inside the repository")
    if not isinstance(revision, str) or not revision:
        raise PkgtoolError("--rebuild: the provenance records no source revision to rebuild from")
    if any(value == REDACTED for value in build_args.values()):
        raise UsageError("--rebuild: a build argument was redacted in the provenance; it cannot be reproduced")
    arches = tuple(p.removeprefix("linux/") for p in platforms if isinstance(p, str))
    if not arches:
        raise PkgtoolError("--rebuild: the provenance lists no platforms")

    with tempfile.TemporaryDirectory(prefix="pkgtool-rebuild-") as tmp:
        work = Path(tmp)
        repository = _source_repository_with(revision, source.get("repository"), work)
        tree = work / "tree"
        progress.message(f"rebuilding {package} at {revision[:12]} for {', '.join(arches)}")
        _export(repository, revision, tree)
        directory = tree / package
        if not (directory / "build.yml").is_file():
            raise PkgtoolError(f"--rebuild: revision {revision[:12]} has no {package}/build.yml")
        options = BuildOptions(registry=registry, platforms=arches, force=True, push=False,
                               build_args={str(k): str(v) for k, v in build_args.items()}, jobs=cpu_jobs())
        plan = make_plan([directory], options, cache_dir=work / "cache")
        results = execute(plan, progress=progress)
    built = next(r for r in results if r.package.dir == plan.graph.requested[0])
    out = []
    for arch in arches:
        platform = f"linux/{arch}"
        if platform not in signed:
            raise PkgtoolError(f"--rebuild: the signed index has no {platform} image to compare with")
        out.append(RebuildResult(platform, signed[platform], built.manifests[arch].digest))
    return out
