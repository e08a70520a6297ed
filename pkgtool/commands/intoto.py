"""`pkgtool intoto layout`: write and sign the in-toto root layout (signing/root.layout)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser("intoto", help="in-toto root layouts for the build step")
    parser.set_defaults(func=lambda _args: _usage())
    intoto_sub = parser.add_subparsers(dest="intoto_command", metavar="SUBCOMMAND")
    layout = intoto_sub.add_parser(
        "layout",
        help="write a root layout whose 'build' step the functionary keys may sign",
        description="The layout has one step, 'build' (threshold 1): materials must be "
        "package files (pkg/*, kernel/*), products the image manifests (oci/*).  It is "
        "signed with --key (password from $PKGTOOL_PASSWORD or $COSIGN_PASSWORD, else a "
        "prompt); verifiers need that key's public half (signing/keys/layout.pub).",
    )
    layout.add_argument("--key", required=True, metavar="LAYOUT.key", help="the layout owner's private key")
    layout.add_argument("--functionary", action="append", required=True, metavar="K.pub",
                        help="public key allowed to sign build links (repeatable)")
    layout.add_argument("--expires", required=True, metavar="YYYY-MM-DD", help="expiry date (UTC)")
    layout.add_argument("--output", required=True, metavar="FILE", help="where to write the layout")
    layout.set_defaults(func=cmd_layout)


def _usage() -> int:
    from pkgtool.errors import UsageError

    raise UsageError("pkgtool intoto: missing subcommand (layout)")


def cmd_layout(args: argparse.Namespace) -> int:
    import datetime
    import sys
    from pathlib import Path

    from pkgtool.errors import UsageError
    from pkgtool.sign.intoto import make_layout
    from pkgtool.sign.keys import load_private_key_file, load_public_key_file

    try:
        day = datetime.date.fromisoformat(args.expires)
    except ValueError:
        raise UsageError(f"--expires {args.expires!r}: expected YYYY-MM-DD") from None
    expires = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)
    if expires <= datetime.datetime.now(datetime.UTC):
        raise UsageError(f"--expires {args.expires}: that day has passed")
    layout = make_layout(
        layout_key=load_private_key_file(Path(args.key)),
        functionaries=[load_public_key_file(Path(p)) for p in args.functionary],
        expires=expires,
        readme="pkgtool package builds: one 'build' step per package, signed by a release key.",
    )
    Path(args.output).write_bytes(layout)
    print(f"Layout written to {args.output} (expires {expires:%Y-%m-%d})", file=sys.stderr)
    return 0
