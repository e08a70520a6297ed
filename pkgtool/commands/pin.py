"""`pkgtool update-hashes` and `pkgtool lint`: keep every image reference pinned and current."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    update = sub.add_parser(
        "update-hashes",
        help="re-pin FROM lines and image YAMLs to the current tags and digests",
        description="Visit the repository's packages dependencies first and rewrite every reference "
        "to an in-repo image (package, Debian base, kernel) whose tag is stale to TAG@DIGEST, building "
        "what the registry lacks; then do the same for the image YAMLs under examples/. Prints each "
        "change as FILE:LINE: OLD -> NEW.",
    )
    update.add_argument("root", nargs="?", default=".", help="repository root (default: .)")
    update.add_argument("--registry", metavar="HOST[:PORT]", default=None,
                        help="registry to read digests from and push to (default: $PKGTOOL_REGISTRY or 127.0.0.1:5000)")
    update.add_argument("--no-build", dest="build", action="store_false",
                        help="fail instead of building an image the registry lacks")
    update.add_argument("--progress", default="auto", choices=("auto", "tty", "plain", "json"))
    update.set_defaults(func=cmd_update)

    lint = sub.add_parser(
        "lint",
        help="check every FROM and image YAML reference is pinned by digest and current",
        description="Offline: every reference in package Dockerfiles and in examples/*.yml must carry a "
        "digest, and a reference to an image this repository builds must name its current tag.",
    )
    lint.add_argument("root", nargs="?", default=".", help="repository root (default: .)")
    lint.add_argument("--check-registry", action="store_true",
                      help="also check that each pinned tag still resolves to its digest in the registry")
    lint.add_argument("--registry", metavar="HOST[:PORT]", default=None)
    lint.set_defaults(func=cmd_lint)


def _root(text: str) -> Any:
    from pathlib import Path

    from pkgtool.errors import UsageError

    root = Path(text).resolve()
    if not root.is_dir():
        raise UsageError(f"{text}: not a directory")
    return root


def _warn(directory: Any, reason: str) -> None:
    print(f"pkgtool: warning: {directory}: skipped: {reason}", file=sys.stderr)


def cmd_update(args: argparse.Namespace) -> int:
    from pkgtool import settings
    from pkgtool.pin.update import update_hashes
    from pkgtool.progress import Progress

    root = _root(args.root)
    with Progress(args.progress) as progress:
        changes = update_hashes(root, registry=settings.registry(args.registry), build=args.build,
                                progress=progress, log=lambda m: progress.message(m))
    for change in changes:
        print(change.format(root))
    if not changes:
        print("pkgtool: every reference is current", file=sys.stderr)
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    from pkgtool import settings
    from pkgtool.errors import PkgtoolError
    from pkgtool.pin.lint import lint

    root = _root(args.root)
    client = None
    if args.check_registry:
        from pkgtool.oci.registry import RegistryClient

        client = RegistryClient(settings.registry(args.registry))
    findings = lint(root, client=client, on_skip=_warn)
    for finding in findings:
        print(finding.format(root))
    if findings:
        raise PkgtoolError(f"{len(findings)} image reference(s) need attention (listed above)")
    print("pkgtool: every image reference is pinned and current", file=sys.stderr)
    return 0
