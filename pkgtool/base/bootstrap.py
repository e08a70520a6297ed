"""Run ``mmdebstrap`` for one architecture: a cheap resolve pass, or the real bootstrap.

Command (root mode, so file ownership in the tar is real; non-native arches run their
maintainer scripts under qemu-user via binfmt, which needs the ``arch-test`` package)::

    SOURCE_DATE_EPOCH=<recipe> mmdebstrap --variant=minbase --mode=root --arch=ARCH \
        [--include=a,b (include, then include_for ARCH)] [--dpkgopt=path-exclude=...]... SUITE OUT.tar

With a fixed ``SOURCE_DATE_EPOCH`` and the same mirror content, two runs give the same tar,
byte for byte (mmdebstrap clamps mtimes, sorts the tar and removes logs and caches that
carry timestamps).  The mirrors are mmdebstrap's defaults for a Debian suite: SUITE,
SUITE-updates and SUITE-security on deb.debian.org.

Maintainer scripts that write random bytes (openssh-server's postinst generates host keys)
would make two bootstraps differ: the recipe's ``remove:`` globs are deleted from the chroot
in a customize hook, before the tar is written.

Resolving (``pkgtool base lock``, and the pre-flight of ``build``) uses ``--simulate
--verbose``: apt prints ``Inst NAME (VERSION ...)`` for each package it would install,
without downloading or unpacking anything (about 5 s instead of 1-5 min).  After a real
bootstrap, the installed set is read back from the tar's dpkg database with
``dpkg-query --admindir`` on the host, so no emulation is needed for it either.

Size: the recipe's ``dpkg_options`` (``path-exclude`` for man pages, docs except
copyright files, locales, info) take an amd64 minbase from ~170 MB to ~127 MB, which also
shortens every emulated step that later unpacks or copies the base.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pkgtool.base.lockfile import parse_lock
from pkgtool.base.recipe import BaseRecipe
from pkgtool.errors import PkgtoolError

_INST_RE = re.compile(r"^Inst (\S+) \((\S+) ")
_TAIL = 600


class BootstrapError(PkgtoolError):
    """mmdebstrap failed."""


@dataclass(frozen=True)
class Bootstrap:
    arch: str
    tar: Path
    versions: dict[str, str]
    seconds: float


def mmdebstrap_argv(recipe: BaseRecipe, arch: str, out: Path | str, *, simulate: bool = False,
                    hooks: tuple[str, ...] = ()) -> list[str]:
    argv = ["mmdebstrap", f"--variant={recipe.variant}", "--mode=root", f"--arch={arch}"]
    if simulate:
        argv += ["--simulate", "--verbose"]
    if packages := recipe.includes(arch):
        argv.append("--include=" + ",".join(packages))
    argv += [f"--dpkgopt={opt}" for opt in recipe.dpkg_options]
    argv += [f"--customize-hook={hook}" for hook in hooks]
    argv += [recipe.suite, str(out)]
    return argv


def _env(recipe: BaseRecipe) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
    env["SOURCE_DATE_EPOCH"] = str(recipe.source_date_epoch)
    env["LC_ALL"] = "C.UTF-8"
    return env


def _require_tools(arch: str) -> None:
    if shutil.which("mmdebstrap") is None:
        raise BootstrapError("mmdebstrap is not installed (apt-get install mmdebstrap)")
    if arch != _host_arch() and shutil.which("arch-test") is None:
        raise BootstrapError(f"bootstrapping {arch} needs arch-test and binfmt (apt-get install arch-test qemu-user-static)")


def _host_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True, check=False).stdout.strip()


def _run(argv: list[str], recipe: BaseRecipe, arch: str, what: str) -> str:
    proc = subprocess.run(argv, env=_env(recipe), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.startswith(("E:", "W:"))]
        detail = " | ".join(lines[-4:]) or " ".join(proc.stderr.split())[-_TAIL:]
        raise BootstrapError(f"mmdebstrap {what} for {arch} failed (exit {proc.returncode}): {detail}")
    return proc.stdout + proc.stderr


def parse_simulated(output: str) -> dict[str, str]:
    """``{name: version}`` from apt's ``Inst`` lines (mmdebstrap prints some twice)."""
    versions: dict[str, str] = {}
    for line in output.splitlines():
        match = _INST_RE.match(line)
        if match:
            versions[match.group(1).split(":", 1)[0]] = match.group(2)
    return versions


def resolve(recipe: BaseRecipe, arch: str) -> dict[str, str]:
    """The versions the mirror would install now, without installing anything."""
    _require_tools(arch)
    with tempfile.TemporaryDirectory(prefix="pkgtool-resolve-") as tmp:
        output = _run(mmdebstrap_argv(recipe, arch, Path(tmp) / "out.tar", simulate=True), recipe, arch, "resolve")
    versions = parse_simulated(output)
    if not versions:
        raise BootstrapError(f"mmdebstrap resolve for {arch} listed no packages (apt output format changed?)")
    return versions


def remove_hooks(recipe: BaseRecipe) -> tuple[str, ...]:
    """Customize hooks deleting the recipe's ``remove:`` paths from the chroot.

    The patterns were validated to be absolute and free of shell metacharacters other than
    glob characters, so they are left unquoted on purpose: the shell expands the globs inside
    the chroot ("$1"); ``rm -f`` ignores a pattern that matches nothing.
    """
    return tuple(f'rm -rf -- "$1"{pattern}' for pattern in recipe.remove)


def bootstrap(recipe: BaseRecipe, arch: str, out: Path) -> Bootstrap:
    """Bootstrap ``arch`` into the tar ``out`` (written atomically) and read back its package set."""
    _require_tools(arch)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".bootstrap-{arch}-") as tmp:
        versions_file = Path(tmp) / "versions"
        tmp_tar = Path(tmp) / "rootfs.tar"
        # Run on the host after the last package is configured: "$1" is the chroot.
        hook = ('dpkg-query --admindir="$1/var/lib/dpkg" -W -f=\'${Package} ${Version}\\n\' > '
                + shlex.quote(str(versions_file)))
        hooks = (*remove_hooks(recipe), hook)
        _run(mmdebstrap_argv(recipe, arch, tmp_tar, hooks=hooks), recipe, arch, "bootstrap")
        versions = parse_lock(versions_file.read_text(), source=f"dpkg database of the {arch} bootstrap")
        os.replace(tmp_tar, out)
    return Bootstrap(arch=arch, tar=out, versions=versions, seconds=time.monotonic() - start)
