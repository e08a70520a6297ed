"""`pkgtool build PKGDIR...` and `pkgtool manifest PKGDIR...`: package builds through BuildKit."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "build",
        help="build packages for every arch, push per-arch images and a multi-arch index",
        description="Build each package (a directory with build.yml and a Dockerfile) through BuildKit "
        "for every arch in its build.yml, re-pack each arch reproducibly, push ORG/IMAGE:TAG-ARCH and "
        "then the index ORG/IMAGE:TAG (TAG is the content hash: `pkgtool show-tag`). Packages are built "
        "in dependency order, independent ones in parallel. A package already in the registry is "
        "skipped after one registry request.",
    )
    parser.add_argument("packages", nargs="*", metavar="PKGDIR", help="package directory (holds build.yml)")
    parser.add_argument("--all", metavar="DIR", dest="all_under", default=None,
                        help="also build every package below DIR (e.g. --all pkg/)")
    parser.add_argument("--platforms", metavar="P1,P2", default=None,
                        help="only these platforms (linux/amd64,linux/arm64,...); default: each package's arches")
    parser.add_argument("--force", action="store_true", help="build and push even if the registry has the tag")
    parser.add_argument("--no-push", dest="push", action="store_false",
                        help="keep the result in the local cache instead of pushing it")
    parser.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="set a build arg for every package (part of the content hash); repeatable")
    parser.add_argument("--progress", default="auto", choices=("auto", "tty", "plain", "json"),
                        help="progress output (default auto: live on a terminal, plain lines otherwise)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be built and why, then stop")
    parser.add_argument("--builder", metavar="ADDR", default=None,
                        help="BuildKit to use: unix://PATH or tcp://HOST:PORT for a standalone buildkitd, "
                        "docker://unix://PATH or docker://tcp://HOST:PORT for a dockerd "
                        "(default: $BUILDKIT_HOST, else the Docker daemon's built-in BuildKit)")
    parser.add_argument("--builders", metavar="P=ADDR,...", default=None,
                        help="a builder per platform, e.g. linux/arm64=tcp://arm-host:1234,"
                        "linux/s390x=unix:///run/buildkit-s390x.sock; other platforms use --builder "
                        "(default: $PKGTOOL_BUILDERS, else the [builders] of $PKGTOOL_BUILDERS_CONFIG or "
                        "~/.config/pkgtool/builders.toml)")
    parser.add_argument("--tlscacert", metavar="FILE", default=None,
                        help="CA certificate to trust for tcp:// builders (default: the system's)")
    parser.add_argument("--tlscert", metavar="FILE", default=None,
                        help="client certificate for tcp:// builders (mutual TLS; with --tlskey)")
    parser.add_argument("--tlskey", metavar="FILE", default=None, help="client key for --tlscert")
    parser.add_argument("--tlsservername", metavar="NAME", default=None,
                        help="server name the builders' certificates must carry (default: the address's host)")
    parser.add_argument("--cache-from", metavar="REF", action="append", default=[],
                        help="import BuildKit's build cache from REF/<org>/<image>:cache-<arch> (REF: HOST/PATH, or "
                        "type=registry,ref=HOST/PATH); repeatable; digests never depend on it")
    parser.add_argument("--cache-to", metavar="REF", default=None,
                        help="export the build cache to REF/<org>/<image>:cache-<arch> (buildkitd: type=registry, "
                        "mode=max unless ref=...,mode=min; dockerd 20.10: inline cache, mode=min, pushed by pkgtool)")
    parser.add_argument("--no-index", dest="push_index", action="store_false",
                        help="push only ORG/IMAGE:TAG-ARCH (and sign those), not the index: for sharded publishing, "
                        "where `pkgtool manifest --complete` writes the index once every arch is in")
    parser.add_argument("--registry", metavar="HOST[:PORT]", default=None,
                        help="registry to push to and pull bases from (default: $PKGTOOL_REGISTRY or 127.0.0.1:5000)")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="push even if git sees uncommitted changes (the tag gets a -dirty suffix)")
    parser.add_argument("--sign", action="store_true",
                        help="sign what is pushed and attach SLSA provenance, SBOMs and an in-toto link: "
                        "with --key K, else keyless (Sigstore, from an ambient OIDC token, e.g. GitHub Actions)")
    parser.add_argument("--key", metavar="K.key", default=None,
                        help="cosign-compatible private key for --sign (password: $PKGTOOL_PASSWORD or "
                        "$COSIGN_PASSWORD, else a prompt)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="packages built at once (default: a small number for this machine)")
    parser.set_defaults(func=cmd_build)

    manifest = sub.add_parser(
        "manifest",
        help="rebuild a package's multi-arch index from the per-arch tags in the registry",
        description="For each package, find ORG/IMAGE:TAG-ARCH for its arches in the registry and "
        "write (merge) the index ORG/IMAGE:TAG from them, keeping arches the index already lists. "
        "The last step of sharded publishing: `pkgtool build --no-index` on each machine, then this.",
    )
    manifest.add_argument("packages", nargs="*", metavar="PKGDIR")
    manifest.add_argument("--all", metavar="DIR", dest="all_under", default=None,
                          help="also every package below DIR (e.g. --all pkg/)")
    manifest.add_argument("--platforms", metavar="P1,P2", default=None,
                          help="only these platforms (default: each package's arches)")
    manifest.add_argument("--complete", action="store_true",
                          help="write no index at all unless every package has all its arches pushed")
    manifest.add_argument("--sign", action="store_true",
                          help="sign each index this run changed, with SLSA provenance for all its platforms "
                          "(with --key K, else keyless)")
    manifest.add_argument("--key", metavar="K.key", default=None, help="cosign-compatible private key for --sign")
    manifest.add_argument("--registry", metavar="HOST[:PORT]", default=None)
    manifest.add_argument("--progress", default="auto", choices=("auto", "tty", "plain", "json"),
                          help="progress output for --sign")
    manifest.set_defaults(func=cmd_manifest)


def _options(args: argparse.Namespace) -> Any:
    from pkgtool import settings
    from pkgtool.errors import UsageError
    from pkgtool.pkgbuild.builders_config import (
        builder_assignments,
        check_address,
        check_tls_files,
        tls_from_flags,
    )
    from pkgtool.pkgbuild.cache import parse_cache_location
    from pkgtool.pkgbuild.plan import BuildOptions, cpu_jobs, parse_platforms
    from pkgtool.spec.package import parse_build_arg_flags

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    if args.key and not args.sign:
        raise UsageError("--key is for --sign")
    if args.sign and not args.push:
        raise UsageError("--sign signs what is pushed: it cannot be combined with --no-push")
    if not args.push_index and not args.push:
        raise UsageError("--no-index is about what is pushed: it cannot be combined with --no-push")
    registry = settings.registry(args.registry)
    tls = tls_from_flags(ca_cert=args.tlscacert, cert=args.tlscert, key=args.tlskey, server_name=args.tlsservername)
    if args.builder is not None:
        check_address(args.builder, where="--builder")
    builders = builder_assignments(args.builders, tls=tls)
    check_tls_files(builders, tls)
    cache_from = tuple(parse_cache_location(v, flag="--cache-from", default_registry=registry) for v in args.cache_from)
    cache_to = parse_cache_location(args.cache_to, flag="--cache-to", default_registry=registry) if args.cache_to else None
    return BuildOptions(
        registry=registry,
        platforms=parse_platforms(args.platforms),
        force=args.force,
        push=args.push,
        build_args=parse_build_arg_flags(args.build_arg),
        allow_dirty=args.allow_dirty,
        builder=args.builder,
        jobs=args.jobs or cpu_jobs(),
        sign=args.sign,
        builders=builders,
        builder_tls=tls,
        cache_from=cache_from,
        cache_to=cache_to,
        push_index=args.push_index,
    )


def cmd_build(args: argparse.Namespace) -> int:
    import json

    from pkgtool import settings
    from pkgtool.pkgbuild.api import execute, make_plan, package_dirs
    from pkgtool.pkgbuild.run import describe, json_ready
    from pkgtool.progress import Progress

    options = _options(args)
    plan = make_plan(package_dirs(args.packages, all_under=args.all_under), options,
                     cache_dir=settings.cache_dir(args.cache_dir))
    for directory, reason in plan.graph.skipped:
        print(f"pkgtool: warning: {directory}: skipped while looking for dependencies: {reason}", file=sys.stderr)
    if args.dry_run:
        for line in describe(plan.targets, plan.graph):
            print(line)
        return 0
    signer = None
    if options.sign:
        from pathlib import Path

        from pkgtool.sign.publish import signer_for

        # Before building: a wrong password or a missing identity token fails now, not
        # after the builds.
        signer = signer_for(Path(args.key) if args.key else None)
    with Progress(args.progress) as progress:
        results = execute(plan, progress=progress, signer=signer)
    requested = set(plan.graph.requested)
    # stdout: one pinned reference per package asked for (dependencies are on stderr).
    for result in results:
        if not (result.digest or result.arch_refs) or result.package.dir not in requested:
            continue
        if args.progress == "json":
            print(json.dumps(json_ready(result), sort_keys=True))
        elif result.digest:
            print(result.pinned)
        else:  # --no-index: the per-arch images this run pushed
            for ref in result.arch_refs.values():
                print(ref)
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pkgtool import settings
    from pkgtool.errors import UsageError
    from pkgtool.oci.registry import RegistryClient
    from pkgtool.pkgbuild.api import package_dirs
    from pkgtool.pkgbuild.merge import merge_indexes, sign_merged
    from pkgtool.pkgbuild.plan import BuildOptions, parse_platforms
    from pkgtool.pkggraph import load_graph
    from pkgtool.progress import Progress

    if args.key and not args.sign:
        raise UsageError("--key is for --sign")
    registry = settings.registry(args.registry)
    platforms = parse_platforms(args.platforms)
    dirs = package_dirs(args.packages, all_under=args.all_under)
    signer = None
    if args.sign:
        from pkgtool.sign.publish import signer_for

        signer = signer_for(Path(args.key) if args.key else None)
    graph = load_graph(dirs)
    wanted = [graph.get(d) for d in dirs]
    client = RegistryClient(registry)
    merged = merge_indexes(graph, wanted, client, platforms=platforms, complete=args.complete)
    with Progress(args.progress) as progress:
        for item in merged:
            print(f"{registry}/{item.package.ref}@{item.index.digest}")
            state = "written" if item.changed else "unchanged"
            print(f"pkgtool: {item.package.ref}: index {state}, merged from {', '.join(item.arches)}", file=sys.stderr)
            if signer is None:
                continue
            if not item.changed:
                progress.message(f"{item.package.ref}: index unchanged; not re-signed (sign it with `pkgtool sign`)")
                continue
            sign_merged(graph, item, client, options=BuildOptions(registry=registry), signer=signer,
                        progress=progress)
    return 0
