"""`pkgtool kernel build|show-tag`: LinuxKit kernel images from pinned Debian kernel .debs."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "kernel",
        help="build kernel images (/kernel, /kernel.tar, /System.map, /config) from Debian .debs",
        description="Reads kernel/<series>/kernel.yml: per arch a linux-image package pinned by "
        "version and sha256.",
    )
    parser.set_defaults(func=lambda _args: _usage())
    kernel_sub = parser.add_subparsers(dest="kernel_command", metavar="SUBCOMMAND")

    build = kernel_sub.add_parser("build", help="fetch, verify, lay out and push every arch plus the index")
    build.add_argument("spec", help="kernel.yml, or the directory holding it")
    build.add_argument("--registry", default=None, help="registry host:port (default: $PKGTOOL_REGISTRY or 127.0.0.1:5000)")
    build.add_argument("--force", action="store_true", help="build and push even if the tag is already in the registry")
    build.set_defaults(func=cmd_build)

    show = kernel_sub.add_parser("show-tag", help="print REGISTRY/IMAGE:TAG for a kernel.yml")
    show.add_argument("spec", help="kernel.yml, or the directory holding it")
    show.add_argument("--registry", default=None)
    show.set_defaults(func=cmd_show_tag)


def _usage() -> int:
    from pkgtool.errors import UsageError

    raise UsageError("pkgtool kernel: missing subcommand (build or show-tag)")


def _spec_path(text: str) -> Any:
    from pathlib import Path

    path = Path(text)
    return path / "kernel.yml" if path.is_dir() else path


def cmd_show_tag(args: argparse.Namespace) -> int:
    from pkgtool import settings
    from pkgtool.kernel.build import kernel_tag
    from pkgtool.kernel.spec import load_kernel_spec

    spec = load_kernel_spec(_spec_path(args.spec))
    print(f"{settings.registry(args.registry)}/{spec.image}:{kernel_tag(spec)}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from pkgtool import settings
    from pkgtool.kernel.build import build_kernel
    from pkgtool.kernel.spec import load_kernel_spec

    spec = load_kernel_spec(_spec_path(args.spec))
    result = build_kernel(spec, registry=settings.registry(args.registry), force=args.force,
                          log=lambda m: print(f"kernel: {m}", file=sys.stderr, flush=True))
    suffix = f"@{result.index_digest}" if result.index_digest else ""
    print(f"{result.ref}{suffix}")
    return 0
