"""`pkgtool verify REF`: check an image's signatures, attestations and policy (auditors)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pkgtool.sign.policy import Policy
    from pkgtool.sign.verifiers import Verifier


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "verify",
        help="verify an image's signatures, SLSA provenance, SBOMs and in-toto layout",
        description="Deny by default: the index and every per-arch manifest must carry "
        "signatures by the trusted signer (a Sigstore bundle referrer and a cosign .sig), "
        "the attestations the policy requires (SBOM per arch; provenance), provenance that "
        "satisfies the policy, and, when the policy asks, an in-toto link that passes the "
        "root layout.  Exits 1 naming the failed check and digest.",
    )
    parser.add_argument("reference", metavar="REF", help="image reference (tag or digest)")
    add_trust_arguments(parser)
    parser.add_argument("--registry", default=None,
                        help="registry for references without one (default $PKGTOOL_REGISTRY or 127.0.0.1:5000)")
    parser.add_argument("--output", choices=("text", "json"), default="text", help="report format")
    parser.add_argument("--rebuild", action="store_true",
                        help="also rebuild the package from the source revision its provenance records "
                        "(git archive of that commit, --force --no-push) and require identical digests")
    parser.set_defaults(func=cmd_verify)


def add_trust_arguments(parser: argparse.ArgumentParser) -> None:
    """--key / --identity / --issuer / --policy, shared with `pkgtool image`."""
    parser.add_argument("--key", action="append", default=None, metavar="K.pub",
                        help="trusted public key (PEM; repeatable)")
    parser.add_argument("--identity", default=None, metavar="I",
                        help="trusted keyless signer identity (certificate SAN, e.g. a workflow URI)")
    parser.add_argument("--issuer", default=None, metavar="U",
                        help="OIDC issuer of --identity (e.g. https://token.actions.githubusercontent.com)")
    parser.add_argument("--policy", default=None, metavar="POLICY.yml",
                        help="verification policy (e.g. signing/policy.yml); without one: signatures and "
                        "an SBOM per arch are required")


def trust_from_args(args: argparse.Namespace) -> tuple[Verifier, Policy]:
    """The verifier and policy the flags (and the policy's own trusted signers) describe."""
    from pathlib import Path

    from pkgtool.errors import UsageError
    from pkgtool.sign.keyless import KeylessVerifier
    from pkgtool.sign.keys import load_public_key_file
    from pkgtool.sign.policy import DEFAULT_POLICY, load_policy
    from pkgtool.sign.verifiers import AnyVerifier, KeyVerifier

    policy = load_policy(Path(args.policy)) if args.policy else DEFAULT_POLICY
    if (args.identity is None) != (args.issuer is None):
        raise UsageError("--identity and --issuer go together")
    if args.key and args.identity:
        raise UsageError("give either --key or --identity/--issuer, not both")
    if args.key:
        return KeyVerifier([load_public_key_file(Path(k)) for k in args.key]), policy
    if args.identity:
        return KeylessVerifier(args.identity, args.issuer), policy
    verifiers: list[Verifier] = []
    if policy.keys:
        verifiers.append(KeyVerifier([load_public_key_file(k) for k in policy.keys]))
    verifiers.extend(KeylessVerifier(i.identity, i.issuer) for i in policy.identities)
    if not verifiers:
        raise UsageError("no trusted signer: pass --key K.pub or --identity I --issuer U (or a policy that lists keys)")
    return (verifiers[0] if len(verifiers) == 1 else AnyVerifier(verifiers)), policy


def cmd_verify(args: argparse.Namespace) -> int:
    import json

    from pkgtool import settings
    from pkgtool.errors import PkgtoolError
    from pkgtool.oci.registry import RegistryClient
    from pkgtool.sign.verify import verify_reference

    verifier, policy = trust_from_args(args)
    try:
        with RegistryClient(settings.registry(args.registry)) as client:
            report = verify_reference(client, args.reference, verifier=verifier, policy=policy,
                                      default_registry=client.registry)
    except PkgtoolError as exc:
        if args.output == "json":
            # A machine reader gets a verdict on stdout too; the CLI prints the error line.
            message = " ".join(str(exc).split())
            print(json.dumps({"verified": False, "reference": args.reference, "error": message}))
        raise
    document = report.to_json()
    if args.rebuild:
        document["rebuild"] = _rebuild(report, registry=settings.registry(args.registry))
    if args.output == "json":
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print(report.human())
        for item in document.get("rebuild", []):
            print(f"  rebuilt {item['platform']}: {item['rebuilt']} (identical to the signed image)")
    return 0


def _rebuild(report: Any, *, registry: str) -> list[dict[str, str]]:
    import sys

    from pkgtool.errors import PkgtoolError
    from pkgtool.pkgbuild.rebuild import rebuild_from_provenance
    from pkgtool.progress import Progress

    if report.provenance is None:
        raise PkgtoolError(f"{report.reference}@{report.root}: --rebuild needs SLSA provenance, and none verified")
    with Progress("plain", stream=sys.stderr) as progress:
        results = rebuild_from_provenance(report.provenance, signed=report.manifests, registry=registry,
                                          progress=progress)
    differ = [r for r in results if not r.matches]
    if differ:
        detail = "; ".join(f"{r.platform} signed {r.signed}, rebuilt {r.rebuilt}" for r in differ)
        raise PkgtoolError(f"{report.reference}@{report.root}: rebuild check failed: not reproducible: {detail}")
    return [{"platform": r.platform, "signed": r.signed, "rebuilt": r.rebuilt} for r in results]
