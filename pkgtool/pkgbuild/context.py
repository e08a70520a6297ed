"""The build context BuildKit gets: the package directory, plus build.yml's ``extra-sources``.

Without extra sources the package directory is the context as it is.  With them, the
context is staged: a directory in the work cache, one per package path, kept in sync with
the package directory and with each extra source at its ``DST``, exactly the tree the
content hash describes (:mod:`pkgtool.hashing`).  ``.dockerignore`` is staged with the rest
and applied by BuildKit, as for any context.

Syncing, not copying afresh: a file whose size, mode and mtime already match is left
alone, and copies keep their source's mtime.  BuildKit keeps the last transfer per shared
key (the staging path), so an unchanged package sends nothing and a changed one sends only
what changed.  Hard links inside a source stay hard links.  A lock file serialises
processes staging the same package.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat as statmod
from collections.abc import Iterator
from pathlib import Path

from pkgtool.errors import PkgtoolError
from pkgtool.spec.package import PackageSpec

_STAGING = "contexts"


def staging_dir(spec: PackageSpec) -> Path:
    from pkgtool.settings import work_cache_dir

    key = hashlib.sha256(os.fsencode(str(spec.dir.resolve()))).hexdigest()[:32]
    return work_cache_dir() / _STAGING / key


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def build_context(spec: PackageSpec) -> Path:
    """The directory to send as the context for ``spec`` (staged if it has extra sources)."""
    if not spec.extra_sources:
        return spec.dir
    target = staging_dir(spec)
    with _locked(target.with_suffix(".lock")):
        wanted: dict[str, tuple[Path, os.stat_result]] = {}
        _collect(spec.dir, "", wanted)
        for extra in spec.extra_sources:
            _collect(extra.path, extra.dst, wanted)
        try:
            _sync(wanted, target)
        except OSError as exc:
            raise PkgtoolError(f"{spec.source}: cannot stage the build context in {target}: {exc.strerror or exc}") from None
    return target


def _collect(source: Path, dst: str, out: dict[str, tuple[Path, os.stat_result]]) -> None:
    """Every path below ``source`` (or ``source`` itself if it is no directory) at ``dst``."""
    st = os.lstat(source)
    if dst:
        parts = dst.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in out:
                out[parent] = (source, _dir_stat())
        out[dst] = (source, st)
    if not statmod.S_ISDIR(st.st_mode):
        return
    for current, dirs, files in os.walk(source):
        dirs.sort()
        rel = os.path.relpath(current, source)
        for name in [*dirs, *sorted(files)]:
            path = Path(current) / name
            relpath = name if rel == "." else f"{rel}/{name}"
            out[f"{dst}/{relpath}" if dst else relpath] = (path, os.lstat(path))


def _dir_stat() -> os.stat_result:
    return os.stat_result((statmod.S_IFDIR | 0o755, 0, 0, 0, 0, 0, 0, 0, 0, 0))


def _same(src: os.stat_result, dest: Path) -> bool:
    try:
        have = os.lstat(dest)
    except FileNotFoundError:
        return False
    return (statmod.S_IFMT(have.st_mode) == statmod.S_IFMT(src.st_mode) and have.st_mode == src.st_mode
            and have.st_size == src.st_size and have.st_mtime_ns == src.st_mtime_ns)


def _sync(wanted: dict[str, tuple[Path, os.stat_result]], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    # Remove what is no longer wanted (deepest first), or changed its kind.
    for current, dirs, files in os.walk(target, topdown=False):
        for name in [*files, *dirs]:
            path = Path(current) / name
            rel = path.relative_to(target).as_posix()
            entry = wanted.get(rel)
            have = os.lstat(path)
            if entry is None or statmod.S_IFMT(have.st_mode) != statmod.S_IFMT(entry[1].st_mode):
                if statmod.S_ISDIR(have.st_mode):
                    shutil.rmtree(path)
                else:
                    path.unlink()
    links: dict[tuple[int, int], Path] = {}
    for rel in sorted(wanted, key=lambda r: r.count("/")):
        source, st = wanted[rel]
        dest = target / rel
        if statmod.S_ISDIR(st.st_mode):
            dest.mkdir(exist_ok=True)
            os.chmod(dest, statmod.S_IMODE(st.st_mode))
        elif statmod.S_ISLNK(st.st_mode):
            link = os.readlink(source)
            if not (dest.is_symlink() and os.readlink(dest) == link):
                with contextlib.suppress(FileNotFoundError):
                    dest.unlink()
                os.symlink(link, dest)
        elif statmod.S_ISREG(st.st_mode):
            first = links.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
            if first is not None:
                if not (dest.exists() and os.path.samefile(first, dest)):
                    with contextlib.suppress(FileNotFoundError):
                        dest.unlink()
                    os.link(first, dest)
                continue
            if st.st_nlink > 1:
                links[(st.st_dev, st.st_ino)] = dest
            if not _same(st, dest):
                tmp = dest.with_name(f".pkgtool-stage-{dest.name}")
                shutil.copy2(source, tmp, follow_symlinks=False)
                os.replace(tmp, dest)
        else:
            raise PkgtoolError(f"{source}: only files, directories and symlinks can be in a build context")
    # Directory mtimes last: creating entries above changed them.
    for rel in sorted(wanted, key=lambda r: -r.count("/")):
        source, st = wanted[rel]
        if statmod.S_ISDIR(st.st_mode) and st.st_mtime_ns:
            os.utime(target / rel, ns=(st.st_atime_ns, st.st_mtime_ns))
