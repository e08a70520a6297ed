"""`pkgtool cache ls|rm|clean`: look at and prune the local OCI layout cache."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pkgtool.oci.layout import Layout

# Mirrors pkgtool.oci.layout_gc.DEFAULT_GC_GRACE_SECONDS without importing it at startup.
_DEFAULT_GRACE = 600.0


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "cache",
        help="inspect and prune the local OCI layout cache",
        description="The cache is an OCI image layout; other tools read it too, e.g. "
        "`skopeo inspect oci:DIR:REF` (DIR must not contain ':').",
    )
    parser.set_defaults(func=lambda _args: _usage(parser))
    cache_sub = parser.add_subparsers(dest="cache_command", metavar="SUBCOMMAND")

    ls = cache_sub.add_parser("ls", help="list cached refs with their sizes")
    ls.set_defaults(func=cmd_ls)

    rm = cache_sub.add_parser("rm", help="remove refs, then delete blobs nothing uses any more")
    rm.add_argument("refs", nargs="+", metavar="REF")
    _add_grace(rm)
    rm.set_defaults(func=cmd_rm)

    clean = cache_sub.add_parser("clean", help="empty the cache (or only drop unreferenced blobs)")
    clean.add_argument(
        "--unreferenced", action="store_true",
        help="keep every ref; delete only blobs no ref reaches",
    )
    _add_grace(clean)
    clean.set_defaults(func=cmd_clean)


def _add_grace(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--grace", type=float, default=_DEFAULT_GRACE, metavar="SECONDS",
        help="keep unreferenced blobs younger than this: another pkgtool may be about to "
        f"tag them (default {_DEFAULT_GRACE:.0f})",
    )


def _usage(parser: argparse.ArgumentParser) -> int:
    from pkgtool.errors import UsageError

    raise UsageError(f"{parser.prog}: missing subcommand (ls, rm or clean)")


def _open(args: argparse.Namespace, *, must_exist: bool) -> Layout | None:
    from pkgtool import settings
    from pkgtool.errors import CacheError
    from pkgtool.oci.layout import Layout

    layout = Layout(settings.cache_dir(args.cache_dir))
    if not layout.exists():
        if must_exist:
            raise CacheError(f"no cache at {layout.root} (nothing has been stored there yet)")
        return None
    return layout


def cmd_ls(args: argparse.Namespace) -> int:
    from pkgtool.errors import CacheError
    from pkgtool.oci import layout_gc

    layout = _open(args, must_exist=True)
    assert layout is not None
    rows: list[tuple[str, str, str, str]] = []
    for name, descriptor in layout.list_refs():
        try:
            size = human_size(layout_gc.size_of(layout, descriptor))
        except CacheError:
            size = "corrupt"
        kind = _MEDIA_NAMES.get(descriptor.media_type, descriptor.media_type)
        short = descriptor.digest.removeprefix("sha256:")[:12]
        rows.append((name, short, kind, size))
    if rows:
        header = ("REF", "DIGEST", "TYPE", "SIZE")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
        for row in [header, *rows]:
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
                  + "  " + row[3])
    count = len(rows)
    print(f"total: {count} ref{'' if count == 1 else 's'}, "
          f"{human_size(layout.disk_usage())} on disk in {layout.root}")
    return 0


def cmd_rm(args: argparse.Namespace) -> int:
    from pkgtool.errors import CacheError
    from pkgtool.oci import layout_gc

    layout = _open(args, must_exist=True)
    assert layout is not None
    known = {name for name, _ in layout.list_refs()}
    # All or nothing: a typo in the third ref must not leave the first two removed.
    missing = [ref for ref in args.refs if ref not in known]
    if missing:
        raise CacheError(f"not in the cache at {layout.root}: {', '.join(missing)}")
    for ref in args.refs:
        if layout.untag(ref):
            print(f"untagged {ref}")
    removed, freed = layout_gc.gc(layout, grace_seconds=args.grace)
    print(f"freed {human_size(freed)} ({removed} blob{'' if removed == 1 else 's'})")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from pkgtool.oci import layout_gc

    layout = _open(args, must_exist=False)
    if layout is None:
        from pkgtool import settings

        print(f"no cache at {settings.cache_dir(args.cache_dir)}: nothing to clean")
        return 0
    if args.unreferenced:
        removed, freed = layout_gc.gc(layout, grace_seconds=args.grace)
    else:
        removed, freed = layout_gc.clear(layout)
    print(f"freed {human_size(freed)} ({removed} blob{'' if removed == 1 else 's'})")
    return 0


_MEDIA_NAMES = {
    "application/vnd.oci.image.index.v1+json": "oci-index",
    "application/vnd.oci.image.manifest.v1+json": "oci-manifest",
    "application/vnd.docker.distribution.manifest.list.v2+json": "docker-list",
    "application/vnd.docker.distribution.manifest.v2+json": "docker-manifest",
}


def human_size(n: int) -> str:
    """1536 -> '1.5 KiB'; binary units because disks and tools (du -h) use them."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
