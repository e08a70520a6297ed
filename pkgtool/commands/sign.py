"""`pkgtool sign REF`: sign an image already in a registry (and attach its SBOMs)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "sign",
        help="sign an image in a registry: index and every per-arch manifest, plus SBOMs",
        description="Attaches to the index and to each per-arch manifest a Sigstore bundle "
        "(OCI referrer, or the sha256-<hex> fallback tag) and a cosign signature "
        "(sha256-<hex>.sig), and an SPDX SBOM per arch (referrer and .att).  Signing again "
        "adds nothing.  With --key the signing is offline (password from $PKGTOOL_PASSWORD "
        "or $COSIGN_PASSWORD, else a prompt); without it, keyless with the ambient OIDC "
        "identity (GitHub Actions with id-token: write).  SLSA provenance and in-toto links "
        "come from `pkgtool build --sign`, which knows how the image was built.",
    )
    parser.add_argument("reference", metavar="REF", help="image reference (tag or digest)")
    parser.add_argument("--key", default=None, metavar="K",
                        help="cosign private key file (default: keyless signing)")
    parser.add_argument("--registry", default=None,
                        help="registry for references without one (default $PKGTOOL_REGISTRY or 127.0.0.1:5000)")
    parser.add_argument("--no-sbom", action="store_true", help="do not attach SBOMs")
    parser.add_argument("--output", choices=("text", "json"), default="text", help="report format")
    parser.set_defaults(func=cmd_sign)


def cmd_sign(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from pkgtool import settings
    from pkgtool.console import line_printer
    from pkgtool.oci.layout import Layout
    from pkgtool.oci.registry import RegistryClient
    from pkgtool.sign.publish import sign_reference, signer_for

    signer = signer_for(Path(args.key) if args.key else None)
    cache = Layout(settings.cache_dir(args.cache_dir))
    with RegistryClient(settings.registry(args.registry)) as client:
        report = sign_reference(
            client, args.reference, signer=signer, layout_cache=cache if cache.exists() else None,
            sbom=not args.no_sbom, progress=line_printer("pkgtool"),
        )
    if args.output == "json":
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
        return 0
    print(f"Signed {report.repository}@{report.index} with {report.signer}")
    for platform, digest in report.manifests.items():
        print(f"  {platform}: {digest}")
    print(f"  {report.added} item(s) attached, {len(report.attached) - report.added} already present")
    for note in report.skipped:
        print(f"  not attached: {note}")
    return 0
