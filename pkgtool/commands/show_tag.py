"""`pkgtool show-tag PKGDIR...`: print each package's ``ORG/IMAGE:<tag>`` without building."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "show-tag",
        help="print the tag a package build would get",
        description="Print ORG/IMAGE:TAG for each package directory.  The tag is the content "
        "hash of the package's sources, effective build.yml, build args, arches and the tags "
        "of the in-repo packages it depends on; '-dirty' is added when git sees uncommitted "
        "changes in its sources.",
    )
    parser.add_argument("packages", nargs="+", metavar="PKGDIR", help="package directory (holds build.yml)")
    parser.add_argument("--canonical", action="store_true", help="prefix the registry (REGISTRY/ORG/IMAGE:TAG)")
    parser.add_argument("--registry", metavar="HOST[:PORT]", default=None,
                        help="registry for --canonical (default: $PKGTOOL_REGISTRY or 127.0.0.1:5000)")
    parser.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="override a build arg (it is part of the hash); repeatable")
    parser.add_argument("--hash", action="store_true", help="print only the content hash of each package")
    parser.set_defaults(func=cmd_show_tag)


def cmd_show_tag(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pkgtool import settings
    from pkgtool.pkggraph import load_graph
    from pkgtool.settings import work_cache_dir
    from pkgtool.spec.package import parse_build_arg_flags

    dirs = [Path(p) for p in args.packages]
    graph = load_graph(
        dirs,
        build_args=parse_build_arg_flags(args.build_arg),
        stat_cache_dir=work_cache_dir() / "contenthash",
    )
    for directory, reason in graph.skipped:
        print(f"pkgtool: warning: {directory}: skipped while looking for dependencies: {reason}", file=sys.stderr)
    prefix = f"{settings.registry(args.registry)}/" if args.canonical else ""
    for directory in dirs:
        package = graph.get(directory)
        print(package.content_hash if args.hash else f"{prefix}{package.ref}")
    return 0
