"""`pkgtool key generate`: a cosign-compatible signing key pair."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "key",
        help="manage cosign-compatible signing keys",
        description="Signing keys in cosign's formats: PREFIX.key is an ECDSA P-256 private "
        "key sealed with scrypt + nacl/secretbox (PEM 'ENCRYPTED SIGSTORE PRIVATE KEY'), "
        "PREFIX.pub the PEM public key.  cosign reads both, and pkgtool reads cosign's.",
    )
    parser.set_defaults(func=lambda _args: _usage(parser))
    key_sub = parser.add_subparsers(dest="key_command", metavar="SUBCOMMAND")

    generate = key_sub.add_parser(
        "generate",
        help="write PREFIX.key (encrypted, mode 0600) and PREFIX.pub",
        description="The password comes from $PKGTOOL_PASSWORD, else $COSIGN_PASSWORD "
        "(set but empty means an empty password), else a prompt (asked twice).",
    )
    generate.add_argument(
        "--output-prefix", default="cosign", metavar="PREFIX",
        help="path prefix of the two files (default: cosign)",
    )
    generate.add_argument(
        "--force", action="store_true", help="overwrite existing PREFIX.key / PREFIX.pub"
    )
    generate.set_defaults(func=cmd_generate)


def _usage(parser: argparse.ArgumentParser) -> int:
    from pkgtool.errors import UsageError

    raise UsageError(f"{parser.prog}: missing subcommand (generate)")


def cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pkgtool.errors import UsageError
    from pkgtool.sign import keys

    prefix = Path(args.output_prefix)
    if not prefix.name or prefix.name in (".", ".."):
        raise UsageError(f"--output-prefix {args.output_prefix!r} does not name a file")
    if not prefix.parent.is_dir():
        raise UsageError(f"--output-prefix: directory {prefix.parent} does not exist")
    password = keys.read_password(confirm=True, purpose="new private key")
    key_path, pub_path = keys.write_keypair(
        prefix, keys.generate_keypair(), password, force=args.force
    )
    print(f"Private key written to {key_path}", file=sys.stderr)
    print(f"Public key written to {pub_path}", file=sys.stderr)
    return 0
