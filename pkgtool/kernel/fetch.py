"""Download a pinned kernel ``.deb`` and verify its sha256 before anything reads it.

``apt-get download PKG:ARCH=VERSION`` runs in a private temp directory (apt's own cache and
configuration stay untouched apart from reading the host's package lists, which must know
the architecture: ``dpkg --add-architecture arm64 s390x && apt-get update``).  The file is
hashed, compared with the pin, and only then moved into the work cache as
``debs/<sha256>.deb``.  A cached file is re-hashed on every use: the cache is a convenience,
not a trust anchor.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

from pkgtool.base.workcache import work_cache_dir
from pkgtool.errors import DigestMismatchError, PkgtoolError

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


def fetch_deb(*, package: str, arch: str, version: str, sha256: str, cache: Path | None = None) -> Path:
    """The verified ``.deb`` for ``package:arch=version``, downloaded if not cached."""
    debs = (cache or work_cache_dir()) / "debs"
    target = debs / f"{sha256}.deb"
    what = f"{package}:{arch}={version}"
    if target.is_file():
        try:
            verify_deb(target, sha256=sha256, what=what)
            return target
        except DigestMismatchError:
            target.unlink(missing_ok=True)  # a damaged cache entry: fetch it again
    debs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=debs, prefix=".download-") as tmp:
        # apt drops privileges to _apt for downloads; it needs to write here.
        os.chmod(tmp, 0o755)
        proc = subprocess.run(
            ["apt-get", "download", "-q", f"{package}:{arch}={version}"],
            cwd=tmp, capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            detail = " ".join((proc.stderr or proc.stdout).split())[-400:]
            raise PkgtoolError(
                f"cannot download {what}: {detail} (is the version still on the mirror? "
                f"`apt-cache policy {package}:{arch}` lists what is available; "
                f"for a foreign arch run `dpkg --add-architecture {arch} && apt-get update`)"
            )
        files = [p for p in Path(tmp).iterdir() if p.suffix == ".deb"]
        if len(files) != 1:
            raise PkgtoolError(f"apt-get download {what} produced {len(files)} .deb files, expected 1")
        verify_deb(files[0], sha256=sha256, what=what)
        os.replace(files[0], target)
    return target
