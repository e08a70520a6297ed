"""Per-arch lock files ``pkg/base/versions.<arch>``: the exact package set of a bootstrap.

Format (like LinuxKit's ``tools/alpine/versions.<arch>``), one package per line, sorted::

    # pkgtool base lock: bookworm minbase amd64. Do not edit; run `pkgtool base lock`.
    adduser 3.134
    apt 2.6.2

Blank lines and ``#`` comments are ignored.  The lock is part of the base tag, so a new
package version on the mirror means a new lock, a new tag and a deliberate rebuild.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from pkgtool.errors import PkgtoolError, UsageError

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_VERSION_RE = re.compile(r"^[A-Za-z0-9.+~:-]+$")
# How many differences a mismatch error lists before summarising.
_SHOW = 5


class LockMismatchError(PkgtoolError):
    """What the mirror resolves differs from the lock file."""


def parse_lock(text: str, *, source: str) -> dict[str, str]:
    versions: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split()
        if len(parts) != 2:
            raise UsageError(f"{source}:{number}: expected 'name version', got {stripped!r}")
        name, version = parts
        if not _NAME_RE.match(name):
            raise UsageError(f"{source}:{number}: invalid package name {name!r}")
        if not _VERSION_RE.match(version):
            raise UsageError(f"{source}:{number}: invalid version {version!r} for {name}")
        if name in versions:
            raise UsageError(f"{source}:{number}: {name} is listed twice")
        versions[name] = version
    return versions


def load_lock(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path}: lock file missing; create it with `pkgtool base lock`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read lock file: {exc}") from None
    versions = parse_lock(text, source=str(path))
    if not versions:
        raise UsageError(f"{path}: lock file lists no packages; run `pkgtool base lock`")
    return versions


def format_lock(versions: Mapping[str, str], *, header: str) -> str:
    lines = [f"# {header}"] + [f"{name} {versions[name]}" for name in sorted(versions)]
    return "\n".join(lines) + "\n"


def lock_differences(locked: Mapping[str, str], resolved: Mapping[str, str]) -> list[str]:
    """Human-readable differences, sorted by package name."""
    out: list[str] = []
    for name in sorted(set(locked) | set(resolved)):
        old, new = locked.get(name), resolved.get(name)
        if old == new:
            continue
        if old is None:
            out.append(f"{name} {new} is new (not in the lock)")
        elif new is None:
            out.append(f"{name} {old} is locked but no longer installed")
        else:
            out.append(f"{name} locked at {old}, mirror has {new}")
    return out


def check_lock(locked: Mapping[str, str], resolved: Mapping[str, str], *, lock_path: Path, stage: str) -> None:
    """Raise a :class:`LockMismatchError` that says what differs and how to refresh."""
    diffs = lock_differences(locked, resolved)
    if not diffs:
        return
    shown = "; ".join(diffs[:_SHOW])
    more = f"; and {len(diffs) - _SHOW} more" if len(diffs) > _SHOW else ""
    missing = [n for n in sorted(locked) if n not in resolved]
    if stage == "installed packages" and len(missing) == len(diffs):
        # The resolve pass installs into an empty chroot; the real bootstrap installs the
        # essential set first, whose Provides can satisfy a dependency on its own.
        raise LockMismatchError(
            f"{lock_path} lists packages the bootstrap did not install: {shown}{more}. The "
            "resolve pass (`pkgtool base lock`) picked them for a dependency that an essential "
            "package also Provides; add them to the recipe's include: list, then run "
            "`pkgtool base lock` again"
        )
    raise LockMismatchError(
        f"{lock_path} does not match the mirror ({stage}): {shown}{more}. A locked version is "
        "no longer available or the package set changed; run `pkgtool base lock` to refresh "
        "the lock files, review and commit them (the base tag changes with them)"
    )
