"""Download a pinned kernel ``.deb`` and verify its sha256 before anything reads it.

``apt-get download PKG:ARCH=VERSION`` runs in a private temp directory (apt's own cache and
configuration stay untouched apart from reading the host's package lists, which must know
the architecture: ``dpkg --add-architecture arm64 s390x && apt-get update``).  The file is
hashed, compared with the pin, and only then moved into the work cache as
``debs/<sha256>.deb``.  A cached file is re-hashed on every use: the cache is a convenience,
not a trust anchor.

Before a download, apt's lists are asked whether the pinned version still exists (and with
the pinned sha256): a pin the mirror has dropped fails in one line that names the
kernel.yml entry and says to run ``pkgtool kernel lock``, instead of a download error.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from pkgtool.errors import DigestMismatchError, PkgtoolError
from pkgtool.kernel.apt import AptCache
from pkgtool.settings import work_cache_dir

# linux-image debs are 30-70 MB; anything far larger is not the package we pinned.
MAX_DEB_BYTES = 512 * 1024 * 1024
_CHUNK = 1 << 20


def file_sha256(path: Path, *, limit: int = MAX_DEB_BYTES) -> str:
    h = hashlib.sha256()
    seen = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            seen += len(chunk)
            if seen > limit:
                raise PkgtoolError(f"{path.name}: larger than {limit} bytes; refusing it")
            h.update(chunk)
    return h.hexdigest()


def verify_deb(path: Path, *, sha256: str, what: str) -> None:
    """Raise :class:`DigestMismatchError` unless ``path`` hashes to ``sha256``."""
    got = file_sha256(path)
    if got != sha256:
        raise DigestMismatchError(
            f"{what}: downloaded .deb has sha256 {got}, but the pin says {sha256}; refusing it "
            "(the mirror serves different bytes: check the mirror, or re-pin deliberately)"
        )


class StalePinError(PkgtoolError):
    """The pinned version is gone from the mirror (or the mirror lists other bytes for it)."""


def check_on_mirror(*, package: str, arch: str, version: str, sha256: str, apt: AptCache,
                    where: str, lock_hint: str) -> None:
    """Refuse, in one line naming the pin and the fix, a pin the mirror cannot serve.

    Asked only when a download is needed: a .deb already in the cache (re-verified by its
    sha256) still builds after the mirror has moved on.
    """
    what = package if arch in ("", "all") else f"{package}:{arch}"
    record = apt.exact(package, arch, version)
    prefix = f"{where}: " if where else ""
    if record is None:
        others = sorted({r.version for r in apt.show(package, arch, all_versions=True)})
        has = f"it has {', '.join(others)}" if others else f"it has no {what} at all"
        raise StalePinError(f"{prefix}{what}={version} is no longer on the mirror ({has}); "
                            f"the pin is stale: run `{lock_hint}` to re-pin")
    if record.sha256 != sha256:
        raise StalePinError(f"{prefix}the mirror lists sha256 {record.sha256} for {what}={version}, "
                            f"but the pin says {sha256}; refusing it (re-pin deliberately with `{lock_hint}`)")


def fetch_deb(*, package: str, arch: str, version: str, sha256: str, cache: Path | None = None,
              apt: AptCache | None = None, where: str = "", lock_hint: str = "pkgtool kernel lock") -> Path:
    """The verified ``.deb`` for ``package[:arch]=version``, downloaded if not cached.

    ``arch`` "all" (or "") is for architecture-independent packages (``linux-source-*``).
    """
    debs = (cache or work_cache_dir()) / "debs"
    target = debs / f"{sha256}.deb"
    qualified = package if arch in ("", "all") else f"{package}:{arch}"
    what = f"{qualified}={version}"
    if target.is_file():
        try:
            verify_deb(target, sha256=sha256, what=what)
            return target
        except DigestMismatchError:
            target.unlink(missing_ok=True)  # a damaged cache entry: fetch it again
    check_on_mirror(package=package, arch=arch, version=version, sha256=sha256, apt=apt or AptCache(),
                    where=where, lock_hint=lock_hint)
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=debs, prefix=".download-") as tmp:
        # apt drops privileges to _apt for downloads; it needs to write here.
        os.chmod(tmp, 0o755)
        proc = subprocess.run(
            ["apt-get", "download", "-q", what],
            cwd=tmp, capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            detail = " ".join((proc.stderr or proc.stdout).split())[-400:]
            raise PkgtoolError(
                f"cannot download {what}: {detail} (if the version left the mirror, run `{lock_hint}`; "
                f"for a foreign arch run `dpkg --add-architecture {arch} && apt-get update`)"
            )
        files = [p for p in Path(tmp).iterdir() if p.suffix == ".deb"]
        if len(files) != 1:
            raise PkgtoolError(f"apt-get download {what} produced {len(files)} .deb files, expected 1")
        verify_deb(files[0], sha256=sha256, what=what)
        os.replace(files[0], target)
    return target
