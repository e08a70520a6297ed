"""`pkgtool base build|lock|show-tag`: the Debian base image (mmdebstrap, per-arch locks)."""

from __future__ import annotations

import argparse
from typing import Any

from pkgtool.console import line_printer

_DEFAULT_RECIPE = "pkg/base/base.yml"


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "base",
        help="bootstrap the Debian base image and import it into the registry",
        description="The base is bootstrapped with mmdebstrap from the recipe (pkg/base/base.yml) "
        "and checked against the per-arch lock files (pkg/base/versions.<arch>).",
    )
    parser.set_defaults(func=lambda _args: _usage())
    base_sub = parser.add_subparsers(dest="base_command", metavar="SUBCOMMAND")

    build = base_sub.add_parser("build", help="bootstrap every arch and push the multi-arch index")
    _recipe_arg(build)
    build.add_argument("--registry", default=None, help="registry host:port (default: $PKGTOOL_REGISTRY or 127.0.0.1:5000)")
    build.add_argument("--force", action="store_true", help="build and push even if the tag is already in the registry")
    build.add_argument("--no-cache", action="store_true", help="bootstrap again even if a verified bootstrap tar is cached")
    build.set_defaults(func=cmd_build)

    lock = base_sub.add_parser("lock", help="resolve against the mirror and rewrite the lock files")
    _recipe_arg(lock)
    lock.add_argument("--arch", action="append", default=None, help="only this arch (repeatable)")
    lock.set_defaults(func=cmd_lock)

    show = base_sub.add_parser("show-tag", help="print REGISTRY/IMAGE:TAG of the base for the current recipe and locks")
    _recipe_arg(show)
    show.add_argument("--registry", default=None)
    show.set_defaults(func=cmd_show_tag)


def _recipe_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", default=_DEFAULT_RECIPE, help=f"recipe file (default {_DEFAULT_RECIPE})")


def _usage() -> int:
    from pkgtool.errors import UsageError

    raise UsageError("pkgtool base: missing subcommand (build, lock or show-tag)")


_log = line_printer("base")


def cmd_show_tag(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pkgtool import settings
    from pkgtool.base.base_build import base_tag, load_locks
    from pkgtool.base.recipe import load_recipe

    recipe = load_recipe(Path(args.recipe))
    print(f"{settings.registry(args.registry)}/{recipe.image}:{base_tag(recipe, load_locks(recipe))}")
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pkgtool.base.base_build import write_locks
    from pkgtool.base.recipe import load_recipe
    from pkgtool.errors import UsageError

    recipe = load_recipe(Path(args.recipe))
    arches = tuple(args.arch) if args.arch else None
    for arch in arches or ():
        if arch not in recipe.arches:
            raise UsageError(f"{args.recipe}: {arch} is not one of the recipe's arches ({', '.join(recipe.arches)})")
    write_locks(recipe, arches=arches, log=_log)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pkgtool import settings
    from pkgtool.base.base_build import build_base
    from pkgtool.base.recipe import load_recipe

    recipe = load_recipe(Path(args.recipe))
    result = build_base(recipe, registry=settings.registry(args.registry), force=args.force,
                        use_cache=not args.no_cache, log=_log)
    suffix = f"@{result.index_digest}" if result.index_digest else ""
    print(f"{result.ref}{suffix}")
    return 0
