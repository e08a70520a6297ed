"""`pkgtool kernel build|lock|show-tag`: LinuxKit kernel images from Debian kernels.

Two ways to the same image layout (/kernel, /kernel.tar, /System.map, /config, and
/vmlinux for amd64), both described by kernel/<series>/kernel.yml:

* from Debian's linux-image-<abi>-<arch> .debs, pinned per arch by version and sha256
  (the default; `pkgtool kernel lock` re-pins them when the mirror moves);
* --from-source: Debian's linux-source-<series> package plus the Kconfig fragments under
  kernel/<series>/config/, cross-compiled with Debian's gcc-<triplet> toolchains.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from pkgtool.console import line_printer

_FROM_SOURCE_HELP = (
    "compile the kernel instead: Debian's linux-source package (kernel.yml `source:`), "
    "allnoconfig plus the per-arch Kconfig fragments, Debian's cross compilers; installs "
    "missing build dependencies with apt-get when run as root; pushes to source.image. "
    "Slow (minutes per arch); run it with `nice` on shared machines"
)


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "kernel",
        help="build kernel images (/kernel, /kernel.tar, /System.map, /config) from Debian .debs or source",
        description="Reads kernel/<series>/kernel.yml: per arch a linux-image package pinned by "
        "version and sha256, and optionally a `source:` section for --from-source builds.",
    )
    parser.set_defaults(func=lambda _args: _usage())
    kernel_sub = parser.add_subparsers(dest="kernel_command", metavar="SUBCOMMAND")

    build = kernel_sub.add_parser(
        "build", help="fetch, verify, lay out and push every arch plus the index",
        description="Default: download each arch's pinned linux-image .deb (sha256-verified before it is "
        "read), lay it out and push REGISTRY/IMAGE:<version>-<hash>. A pin the mirror no longer has "
        "fails with a hint to run `pkgtool kernel lock`. With --from-source: " + _FROM_SOURCE_HELP + ".",
    )
    build.add_argument("spec", help="kernel.yml, or the directory holding it")
    build.add_argument("--registry", default=None, help="registry host:port (default: $PKGTOOL_REGISTRY or 127.0.0.1:5000)")
    build.add_argument("--force", action="store_true", help="build and push even if the tag is already in the registry")
    build.add_argument("--from-source", action="store_true", help=_FROM_SOURCE_HELP)
    build.add_argument("--arch", action="append", default=None, metavar="ARCH",
                       help="--from-source: only this arch (repeatable); the index keeps the other arches already pushed")
    build.add_argument("--jobs", "-j", type=int, default=0, help="--from-source: make -j (default: all CPUs)")
    build.add_argument("--out", default=None, metavar="DIR",
                       help="--from-source: also write each arch's layout files to DIR/<arch>/ (builds even if the tag is pushed)")
    build.add_argument("--no-push", action="store_true", help="--from-source: build (and --out) without pushing")
    build.add_argument("--no-install-deps", action="store_true",
                       help="--from-source: never run apt-get install; fail naming the missing packages")
    build.set_defaults(func=cmd_build)

    lock = kernel_sub.add_parser(
        "lock", help="re-pin kernel.yml to the mirror's current kernel packages",
        description="Per arch, resolve the ABI package the metapackage linux-image-<arch> depends on, its "
        "version and its .deb's SHA256 (apt-cache show), and the source package's current version; "
        "rewrite kernel.yml in place (atomically, comments and layout kept) and print each change as "
        "file:line: old -> new. Uses the host's apt lists (see --update).",
    )
    lock.add_argument("spec", help="kernel.yml, or the directory holding it")
    lock.add_argument("--arch", action="append", default=None, metavar="ARCH",
                      help="only this arch (repeatable); the top-level version then stays")
    lock.add_argument("--check", action="store_true", help="write nothing; exit 1 if the file would change")
    lock.add_argument("--update", action="store_true", help="run `apt-get update` first (needs root)")
    lock.set_defaults(func=cmd_lock)

    show = kernel_sub.add_parser("show-tag", help="print REGISTRY/IMAGE:TAG for a kernel.yml")
    show.add_argument("spec", help="kernel.yml, or the directory holding it")
    show.add_argument("--registry", default=None)
    show.add_argument("--from-source", action="store_true", help="the tag of the from-source image")
    show.set_defaults(func=cmd_show_tag)


def _usage() -> int:
    from pkgtool.errors import UsageError

    raise UsageError("pkgtool kernel: missing subcommand (build, lock or show-tag)")


def _spec_path(text: str) -> Any:
    from pathlib import Path

    path = Path(text)
    return path / "kernel.yml" if path.is_dir() else path


_log = line_printer("kernel")


def cmd_show_tag(args: argparse.Namespace) -> int:
    from pkgtool import settings
    from pkgtool.kernel.kernel_build import kernel_tag
    from pkgtool.kernel.kernel_yml import load_kernel_spec

    spec = load_kernel_spec(_spec_path(args.spec))
    if args.from_source:
        from pkgtool.kernel.source import require_source, source_tag

        print(f"{settings.registry(args.registry)}/{require_source(spec).image}:{source_tag(spec)}")
    else:
        print(f"{settings.registry(args.registry)}/{spec.image}:{kernel_tag(spec)}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from pkgtool import settings
    from pkgtool.errors import UsageError
    from pkgtool.kernel.kernel_yml import load_kernel_spec

    spec = load_kernel_spec(_spec_path(args.spec))
    registry = settings.registry(args.registry)
    if args.from_source:
        from pathlib import Path

        from pkgtool.kernel.source import build_kernel_from_source

        if args.jobs < 0:
            raise UsageError("--jobs must be positive")
        result = build_kernel_from_source(
            spec, registry=registry, arches=args.arch or (), jobs=args.jobs, force=args.force,
            install_deps=not args.no_install_deps, out_dir=Path(args.out) if args.out else None,
            push=not args.no_push, log=_log,
        )
        if args.no_push:
            print(f"{result.out_dir}" if result.out_dir else result.ref)
            return 0
        suffix = f"@{result.index_digest}" if result.index_digest else ""
        print(f"{result.ref}{suffix}")
        return 0
    source_only = [flag for flag, given in (("--arch", args.arch), ("--jobs", args.jobs), ("--out", args.out),
                                            ("--no-push", args.no_push), ("--no-install-deps", args.no_install_deps))
                   if given]
    if source_only:
        raise UsageError(f"{', '.join(source_only)}: only with --from-source")
    from pkgtool.kernel.kernel_build import build_kernel

    deb_result = build_kernel(spec, registry=registry, force=args.force, log=_log)
    suffix = f"@{deb_result.index_digest}" if deb_result.index_digest else ""
    print(f"{deb_result.ref}{suffix}")
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    from pkgtool.kernel.lock import lock_kernel

    path = _spec_path(args.spec)
    result = lock_kernel(path, arches=args.arch or (), check=args.check, update=args.update)
    for change in result.changes:
        print(change.format(str(path)))
    if not result.changes:
        print(f"{path}: up to date", file=sys.stderr)
        return 0
    if args.check:
        print(f"{path}: {len(result.changes)} pin(s) out of date; run `pkgtool kernel lock {args.spec}`", file=sys.stderr)
        return 1
    return 0
