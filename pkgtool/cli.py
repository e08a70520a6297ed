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


INTERRUPTED = 130  # the shell's code for a command ended by SIGINT


def leave_if_threads_linger(debug: bool) -> None:
    """After Ctrl-C, exit now even if a worker thread has not wound down.

    The interpreter joins every non-daemon thread (thread pools' included) before it exits,
    so one blocked call would hold the user's terminal; by now every build was told to stop
    and nothing more will be pushed, so nothing is lost by not waiting.
    """
    import threading

    lingering = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if not lingering:
        return
    print(f"pkgtool: not waiting for {len(lingering)} thread(s) still winding down: {', '.join(sorted(lingering))}",
          file=sys.stderr)
    if debug:
        import faulthandler

        faulthandler.dump_traceback(sys.stderr, all_threads=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(INTERRUPTED)


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
        if exc.exit_code == INTERRUPTED:
            leave_if_threads_linger(debug)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pkgtool: interrupted", file=sys.stderr)
        leave_if_threads_linger(debug)
        return INTERRUPTED
    except BrokenPipeError:
        # `pkgtool cache ls | head` is not an error.
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
