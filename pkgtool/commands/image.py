"""`pkgtool image build|lock`: assemble bootable images from image YAML files."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pkgtool.arches import ARCHES
from pkgtool.assemble.formats.catalog import FORMAT_NAMES
from pkgtool.commands.verify import add_trust_arguments

if TYPE_CHECKING:
    from pkgtool.oci.registry import RegistryClient


def register(sub: Any) -> None:
    parser = sub.add_parser("image", help="assemble OS images from image YAML (LinuxKit's schema)")
    parser.set_defaults(func=lambda _args: _usage())
    image_sub = parser.add_subparsers(dest="image_command", metavar="SUBCOMMAND")

    build = image_sub.add_parser(
        "build", help="build the outputs of one or more image YAML files (merged in order)",
        description="Every output is reproducible: timestamps come from SOURCE_DATE_EPOCH (default 0).",
    )
    build.add_argument("files", nargs="*", metavar="FILE.yml")
    build.add_argument("--format", default="kernel+initrd", metavar="F1,F2",
                       help=f"comma-separated output formats (default kernel+initrd; `--format help` describes "
                       f"each): {', '.join(FORMAT_NAMES)}")
    build.add_argument("--arch", default="amd64", choices=ARCHES)
    build.add_argument("--dir", default=".", metavar="OUT", help="output directory (default: .)")
    build.add_argument("--name", default=None, help="output name prefix (default: first YAML's name)")
    build.add_argument("--registry", default=None, help="registry for pulls (default $PKGTOOL_REGISTRY or 127.0.0.1:5000)")
    build.add_argument("--allow-unpinned", action="store_true",
                       help="accept image references without a digest (not reproducible)")
    build.add_argument("--initrd-compression", default="auto", choices=("auto", "gzip", "zstd"),
                       help="auto (default): zstd when the kernel image's /config has CONFIG_RD_ZSTD=y, "
                       "else gzip; zstd is refused for a kernel whose /config lacks it")
    build.add_argument("--verify", action="store_true",
                       help="refuse to build unless every pinned image verifies (see `pkgtool verify`; "
                       "takes --key or --identity/--issuer and --policy)")
    add_trust_arguments(build)
    build.set_defaults(func=cmd_build)

    verify = image_sub.add_parser(
        "verify", help="verify every image a YAML pins (signatures, attestations, policy)",
        description="Runs `pkgtool verify` on each unique image reference of the merged YAML "
        "files; every reference must be pinned by digest.",
    )
    verify.add_argument("files", nargs="+", metavar="FILE.yml")
    add_trust_arguments(verify)
    verify.add_argument("--registry", default=None)
    verify.add_argument("--output", choices=("text", "json"), default="text")
    verify.set_defaults(func=cmd_verify)

    lock = image_sub.add_parser("lock", help="pin every image reference of a YAML to its digest (in place)")
    lock.add_argument("files", nargs="+", metavar="FILE.yml")
    lock.add_argument("--strict", action="store_true", help="change nothing; fail if any reference is unpinned")
    lock.add_argument("--registry", default=None)
    lock.set_defaults(func=cmd_lock)


def _usage() -> int:
    from pkgtool.errors import UsageError

    raise UsageError("pkgtool image: missing subcommand (build, lock or verify)")


def _client_factory(registry: str | None) -> Callable[[], RegistryClient]:
    """A factory for registry clients (imported lazily: HTTP libraries are heavy)."""

    def make() -> RegistryClient:
        from pkgtool import settings
        from pkgtool.oci.registry import RegistryClient

        return RegistryClient(settings.registry(registry))

    return make


def cmd_build(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pkgtool import settings
    from pkgtool.assemble.image_build import build_image
    from pkgtool.console import line_printer

    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    if "help" in formats:
        from pkgtool.assemble.formats.catalog import help_text

        print(help_text())
        return 0
    if not args.files:
        from pkgtool.errors import UsageError

        raise UsageError("image build: give one or more image YAML files (or --format help)")

    progress = line_printer("pkgtool")

    if args.verify:
        _verify_images(args, progress=progress)
    elif args.key or args.identity or args.policy:
        from pkgtool.errors import UsageError

        raise UsageError("--key, --identity and --policy only apply with --verify")

    outputs = build_image(
        [Path(f) for f in args.files], formats=formats, arch=args.arch, out_dir=Path(args.dir),
        name=args.name, cache=settings.cache_dir(args.cache_dir),
        registry_client_factory=_client_factory(args.registry), progress=progress,
        allow_unpinned=args.allow_unpinned, compression=args.initrd_compression,
    )
    for path in outputs:
        print(path)
    return 0


def _verify_images(args: argparse.Namespace, *, progress: Any = None) -> list[Any]:
    """Verify every image the YAML files pin; raises on the first that fails."""
    from pathlib import Path

    from pkgtool import settings
    from pkgtool.commands.verify import trust_from_args
    from pkgtool.oci.registry import RegistryClient
    from pkgtool.sign.verify import verify_pinned_images
    from pkgtool.spec.image import image_references, load_image_spec

    verifier, policy = trust_from_args(args)
    spec = load_image_spec([Path(f) for f in args.files])
    refs = [ref for _path, ref in image_references(spec)]
    with RegistryClient(settings.registry(args.registry)) as client:
        reports: list[Any] = verify_pinned_images(client, refs, verifier=verifier, policy=policy, progress=progress)
    return reports


def cmd_verify(args: argparse.Namespace) -> int:
    import json

    reports = _verify_images(args)
    if args.output == "json":
        print(json.dumps([r.to_json() for r in reports], indent=2, sort_keys=True))
    else:
        print("\n".join(r.human() for r in reports))
        print(f"All {len(reports)} image(s) verified.")
    return 0


def cmd_lock(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pkgtool.assemble.lock import lock_file, unpinned
    from pkgtool.errors import UsageError

    paths = [Path(f) for f in args.files]
    if args.strict:
        loose = [(p, r) for p in paths for r in unpinned(p)]
        if loose:
            where = ", ".join(f"{p}:{r.line}: {r.ref}" for p, r in loose)
            raise UsageError(f"{len(loose)} unpinned image reference(s): {where}")
        return 0
    resolve = _resolver(args)
    for path in paths:
        for old, new in lock_file(path, resolve):
            print(f"{path}: {old} -> {new}")
    return 0


def _resolver(args: argparse.Namespace) -> Any:
    """ref -> digest by pulling it into the cache (so the build that follows is warm)."""
    from pkgtool import settings
    from pkgtool.oci.layout import Layout
    from pkgtool.oci.transfer import pull

    layout = Layout(settings.cache_dir(args.cache_dir))
    layout.ensure()
    client = _client_factory(args.registry)()

    def resolve(ref: str) -> str:
        digest: str = pull(client, ref, layout).digest
        return digest

    return resolve
