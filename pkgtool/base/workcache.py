"""Where pkgtool keeps downloads and bootstrap outputs that are not OCI content.

The pkgtool cache directory (``settings.cache_dir()``) *is* an OCI image layout and refuses
foreign files at its root, so verified ``.deb`` downloads and mmdebstrap tarballs live
beside it in a work cache: ``$PKGTOOL_WORK_CACHE``, else ``/var/cache/pkgtool`` when running
as root (the bootstraps need root anyway), else ``$XDG_CACHE_HOME/pkgtool-work``.

Everything stored here is named by a content hash (a .deb by its pinned sha256, a bootstrap
tar by the recipe+lock hash) and re-verified on use, so a stale or tampered entry is
re-created, never trusted.
"""

from __future__ import annotations

import os
from pathlib import Path


def work_cache_dir() -> Path:
    if env := os.environ.get("PKGTOOL_WORK_CACHE"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/pkgtool")
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "pkgtool-work"
