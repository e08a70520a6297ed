"""Command-line entry point: arguments, help and exit codes only.

Each command group lives in ``pkgtool/commands/<group>.py`` and exposes
``register(subparsers)``.  Those modules import nothing heavy at module level, so that
``pkgtool --version`` and ``pkgtool --help`` stay fast; the work is imported inside the
handler that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from pkgtool import __version__

# Order here is the order in `pkgtool --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "build",
    "cache",
    "image",
    "run",
    "base",
    "kernel",
    "key",
    "sign", "verify", "intoto",
    "show_tag",
    "pin",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pkgtool",
        description="Build, sign and assemble lean container-based Linux systems.",
    )
    parser.add_argument("--version", action="version", version=f"pkgtool {__version__}")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=None,
        help="local OCI layout cache (default: $PKGTOOL_CACHE or $XDG_CACHE_HOME/pkgtool)",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for every error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"pkgtool.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    debug = bool(args.debug or os.environ.get("PKGTOOL_DEBUG"))
    from pkgtool.errors import PkgtoolError

    try:
        result: int | None = args.func(args)
    except PkgtoolError as exc:
        if debug:
            raise
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"pkgtool: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pkgtool: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `pkgtool cache ls | head` is not an error.
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
