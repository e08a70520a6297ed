"""What git says about a package's sources: uncommitted changes, origin URL and revision.

The content hash never depends on git (:mod:`pkgtool.hashing`); git only decides the
``-dirty`` tag suffix (a tag built from uncommitted sources must not be mistaken for one
anybody can rebuild from the repository) and the provenance labels.  Outside a git work
tree, or without a ``git`` binary, there is simply no git state.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pkgtool.errors import PkgtoolError

DIRTY_SUFFIX = "-dirty"
_NOT_A_REPO = "not a git repository"
# scheme://user:password@host/... -> scheme://host/...
_URL_CREDENTIALS = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")


@dataclass(frozen=True)
class GitState:
    toplevel: Path
    revision: str | None  # None in a repository without commits
    source_url: str | None
    dirty: bool


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, LC_ALL="C", GIT_OPTIONAL_LOCKS="0")
    try:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PkgtoolError(f"git {' '.join(args)} in {cwd}: {exc}") from None


def toplevel(path: Path) -> Path | None:
    """The work tree ``path`` is in, or None outside git (or without git installed)."""
    if shutil.which("git") is None:
        return None
    directory = path if path.is_dir() else path.parent
    result = _git(directory, "rev-parse", "--show-toplevel")
    if result.returncode != 0:
        if _NOT_A_REPO in result.stderr:
            return None
        message = result.stderr.strip().splitlines()
        raise PkgtoolError(f"git in {directory}: {message[-1] if message else 'failed'}")
    return Path(result.stdout.strip())


def is_dirty(top: Path, paths: Sequence[Path]) -> bool:
    """Whether anything under ``paths`` differs from HEAD: modified or staged files,
    deletions, or untracked files git does not ignore."""
    specs: list[str] = []
    for p in paths:
        resolved = p.resolve()
        try:
            rel = resolved.relative_to(top.resolve())
        except ValueError:
            continue  # outside this work tree: git cannot tell
        specs.append(f":(literal){rel.as_posix() or '.'}")
    if not specs:
        return False
    result = _git(top, "status", "--porcelain", "--untracked-files=all", "--", *specs)
    if result.returncode != 0:
        raise PkgtoolError(f"git status in {top}: {result.stderr.strip() or 'failed'}")
    return bool(result.stdout.strip())


def strip_credentials(url: str) -> str:
    """A remote URL without user/password (``https://tok@host/x`` -> ``https://host/x``)."""
    return _URL_CREDENTIALS.sub(r"\g<scheme>", url)


def git_state(paths: Sequence[Path]) -> GitState | None:
    """Git state for a package given its source paths (dir + extra sources), or None."""
    if not paths:
        return None
    top = toplevel(paths[0])
    if top is None:
        return None
    head = _git(top, "rev-parse", "--verify", "-q", "HEAD")
    revision = head.stdout.strip() if head.returncode == 0 else None
    origin = _git(top, "config", "--get", "remote.origin.url")
    url = strip_credentials(origin.stdout.strip()) if origin.returncode == 0 and origin.stdout.strip() else None
    return GitState(toplevel=top, revision=revision, source_url=url, dirty=is_dirty(top, paths))
